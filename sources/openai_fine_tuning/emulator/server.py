"""The loopback HTTP server and `Emulator`, which puts the store, the router and the faults together."""

from __future__ import annotations

import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

import httpx

from .faults import FaultPlan, Faults, Scripted
from .router import TRUNCATED_BODY, Answer, RequestRecord, Router, encode_body
from .store import Store
from .synthetic import advance, populate

DEFAULT_API_KEY = "sk-emulator-0000000000000000"
DEFAULT_ADMIN_KEY = "sk-admin-emulator-000000000000"
IN_PROCESS_HOST = "http://emulator.invalid"  # what clients address when they use `transport()`


class Emulator(Store):
    """The data (a `Store`, with its hooks) served by a `Router`. On loopback as a context manager
    (`with Emulator.synthetic(5) as emu: emu.base_url`), or in-process: `emu.transport()` with
    `emu.in_process_url` as the base URL."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        admin_key: str = DEFAULT_ADMIN_KEY,
        flavour: str = "openai",
        latency: float = 0.0,
        faults: Optional[Faults] = None,
    ) -> None:
        super().__init__()
        self.plan = FaultPlan(faults)
        self.router = Router(self, self.plan, api_key=api_key, admin_key=admin_key, flavour=flavour,
                             latency=latency, advance=self.advance)
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._ticks = 0

    @classmethod
    def synthetic(cls, n_jobs: int = 12, *, checkpoints_per_job: int = 3, events_per_job: int = 0,
                  seed: int = 7, open_jobs: Optional[int] = None, **kwargs: Any) -> "Emulator":
        """An emulator holding `synthetic.populate`'s deterministic account."""
        emulator = cls(**kwargs)
        populate(emulator, n_jobs, checkpoints_per_job=checkpoints_per_job, events_per_job=events_per_job,
                 seed=seed, open_jobs=open_jobs)
        return emulator

    def advance(self) -> Dict[str, int]:
        """One tick of a living account (see `synthetic.advance`)."""
        with self.lock:
            self._ticks += 1
            return advance(self, self._ticks)

    # -- what the router holds --------------------------------------------------------------------
    @property
    def api_key(self) -> str:
        return self.router.api_key

    @property
    def admin_key(self) -> str:
        return self.router.admin_key

    @property
    def flavour(self) -> str:
        return self.router.flavour

    @property
    def latency(self) -> float:
        return self.router.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.router.latency = seconds

    @property
    def faults(self) -> Faults:
        return self.plan.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.plan.set(faults)

    @property
    def fault_log(self) -> List[str]:
        return self.plan.log

    @property
    def requests(self) -> List[RequestRecord]:
        return self.router.requests

    @property
    def on_request(self) -> Optional[Callable[[RequestRecord], None]]:
        return self.router.on_request

    @on_request.setter
    def on_request(self, hook: Optional[Callable[[RequestRecord], None]]) -> None:
        self.router.on_request = hook

    @property
    def max_in_flight(self) -> int:
        return self.router.max_in_flight

    def count(self, endpoint: Optional[str] = None) -> int:
        return self.router.count(endpoint)

    def reset_counts(self) -> None:
        self.router.reset_counts()

    def stats(self) -> Dict[str, Any]:
        return self.router.stats()

    def script(self, match: str, *, status: int = 200, body: Any = None, headers: Optional[Dict[str, str]] = None,
               action: Optional[str] = None, times: int = 1) -> None:
        self.plan.script(Scripted(match, status, body, dict(headers or {}), action, times))

    def handle(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes = b"") -> Answer:
        return self.router.handle(method, raw_path, headers, body)

    # -- in-process -------------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return self.router.transport()

    @property
    def in_process_url(self) -> str:
        """The base URL to use with `transport()`."""
        return IN_PROCESS_HOST if self.flavour == "azure" else f"{IN_PROCESS_HOST}/v1"

    # -- server life ------------------------------------------------------------------------------
    def start(self) -> "Emulator":
        handler = type("Handler", (_Handler,), {"router": self.router})
        self._server = LoopbackServer(("127.0.0.1", 0), handler)
        self._server.request_queue_size = 128
        self._thread = threading.Thread(target=self._server.serve_forever, name="fine-tuning-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What a client sets as base_url (OpenAI) or endpoint (Azure)."""
        root = f"http://127.0.0.1:{self.port}"
        return root if self.flavour == "azure" else f"{root}/v1"


class LoopbackServer(ThreadingHTTPServer):
    """A threaded server whose clients may drop a connection at any time (a read timeout, a closed pool):
    a reset or broken pipe ends that connection quietly instead of printing a traceback on stderr."""

    daemon_threads = True
    # how often the serving loop looks for a shutdown: `stop()` returns within this (socketserver's 0.5 s
    # default made every test that stops a server wait half a second)
    poll_interval = 0.02

    def serve_forever(self, poll_interval: float = poll_interval) -> None:
        super().serve_forever(poll_interval)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    router: Router
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stalls

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        request_body = self.rfile.read(length) if length else b""
        status, extra_headers, body, action = self.router.handle(method, self.path, headers, request_body)
        if action == "reset":
            # RST instead of FIN: the client sees a connection reset.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        payload, content_type = encode_body(body, extra_headers)
        if action == "truncate":
            payload = TRUNCATED_BODY
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            for key, value in extra_headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a read timeout): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr logging
        return


def main(argv: Optional[List[str]] = None) -> None:
    """`python -m openai_fine_tuning.emulator`: serve synthetic data until Ctrl-C, e.g. to point
    `openai-fine-tuning load` (OPENAI_BASE_URL, OPENAI_API_KEY) or your own code at it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m openai_fine_tuning.emulator", description=main.__doc__)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--checkpoints", type=int, default=3, help="checkpoints per job")
    parser.add_argument("--events", type=int, default=20, help="metric events per job")
    parser.add_argument("--flavour", choices=["openai", "azure"], default="openai")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--advance-every", type=float, default=0.0, metavar="SECONDS",
                        help="let the account live: every SECONDS add checkpoints, finish and start jobs, prune retention")
    args = parser.parse_args(argv)
    emulator = Emulator.synthetic(args.jobs, checkpoints_per_job=args.checkpoints, events_per_job=args.events,
                                  flavour=args.flavour, api_key=args.api_key, latency=args.latency)
    with emulator:
        variable = "AZURE_OPENAI_ENDPOINT" if args.flavour == "azure" else "OPENAI_BASE_URL"
        key_variable = "AZURE_OPENAI_API_KEY" if args.flavour == "azure" else "OPENAI_API_KEY"
        sys.stdout.write(f"export {variable}={emulator.base_url} {key_variable}={emulator.api_key}\n")
        sys.stdout.flush()
        try:
            stop = threading.Event()
            while not stop.wait(args.advance_every or None):
                emulator.advance()
        except KeyboardInterrupt:
            pass
