"""A hostile fine-tuning API for fault tests, written from the API reference (not from the emulator).

It serves `GET /v1/fine_tuning/jobs`, `/jobs/{id}`, `/jobs/{id}/checkpoints` and `/jobs/{id}/events` as the
reference documents them (newest first, `after` + `limit`, `has_more`, the `{"error": {...}}` body), and
misbehaves on command. Its control API is `rule(...)`: per endpoint (and optionally per job), answer with a
status and body, trickle, split or stall the body, end a list too early, serve an empty page after a cursor, serve
duplicates, or page forever. Every request is recorded. A test tool, not part of the package.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from openai_fine_tuning.emulator import LoopbackServer

KEY = "sk-hostile-0000000000000000"
MAX_STALL_SECONDS = 20.0  # a stalled answer gives up after this, so the server always stops


@dataclass
class Rule:
    """What to do with matching requests. `endpoint`: jobs | job | checkpoints | events."""

    endpoint: str
    job_id: Optional[str] = None
    status: Optional[int] = None  # answer this status with `body` (JSON) instead of the data
    body: Any = None
    raw: Optional[bytes] = None  # answer these bytes as the body (status 200 unless `status`)
    headers: Dict[str, str] = field(default_factory=dict)
    times: Optional[int] = None  # None: forever
    trickle: Optional[float] = None  # seconds between the bytes of the body
    stall: bool = False  # send the headers and half the body, then nothing
    pieces: Optional[int] = None  # send the body in writes of this many bytes, each flushed after a pause
    end_after_page: Optional[int] = None  # page N (1-based) says has_more: false, whatever follows
    empty_after_cursor: bool = False  # a request with `after` gets an empty page, has_more: false
    endless: bool = False  # has_more: true forever, with new ids on every page
    duplicate: bool = False  # every page after the first starts with the previous page's last item again


@dataclass
class Request:
    endpoint: str
    job_id: Optional[str]
    params: Dict[str, str]


class HostileAPI:
    """`tls`: serve HTTPS with this server context (`base_url` then starts with https)."""

    def __init__(self, *, tls: Optional[ssl.SSLContext] = None) -> None:
        self._tls = tls
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.checkpoints: Dict[str, List[Dict[str, Any]]] = {}
        self.events: Dict[str, List[Dict[str, Any]]] = {}
        self.rules: List[Rule] = []
        self.requests: List[Request] = []
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._pages: Dict[Tuple[str, Optional[str]], int] = {}
        self._serial = 0

    # -- server ---------------------------------------------------------------------------------
    def __enter__(self) -> "HostileAPI":
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = LoopbackServer(("127.0.0.1", 0), handler)
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- data, as the reference shows it ---------------------------------------------------------
    def add_job(self, job_id: str, created_at: Any, *, status: str = "succeeded", **extra: Any) -> Dict[str, Any]:
        job = {
            "object": "fine_tuning.job", "id": job_id, "model": "gpt-4o-mini-2024-07-18", "created_at": created_at,
            "finished_at": None, "fine_tuned_model": None, "organization_id": "org-123", "result_files": [],
            "status": status, "validation_file": None, "training_file": "file-abc123",
            "hyperparameters": {"n_epochs": 4, "batch_size": 1, "learning_rate_multiplier": 1.0},
            "trained_tokens": None, "error": {}, "seed": 7, "estimated_finish": None, "integrations": [],
            "metadata": None, "method": {"type": "supervised"}, **extra,
        }
        with self._lock:
            self.jobs[job_id] = job
            self.checkpoints.setdefault(job_id, [])
            self.events.setdefault(job_id, [])
        return job

    def add_checkpoint(self, job_id: str, step: Any, *, metrics: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
        with self._lock:
            self._serial += 1
            checkpoint = {
                "object": "fine_tuning.job.checkpoint", "id": f"ftckpt_{job_id[-6:]}_{self._serial:04d}",
                "created_at": 1_721_764_800 + self._serial, "fine_tuned_model_checkpoint":
                f"ft:gpt-4o-mini-2024-07-18:org:custom:{job_id[-6:]}:ckpt-step-{step}",
                "fine_tuning_job_id": job_id, "step_number": step,
                "metrics": metrics if metrics is not None else {"step": step, "train_loss": 0.5, "valid_loss": 0.6},
                **extra,
            }
            self.checkpoints[job_id].insert(0, checkpoint)  # newest first
        return checkpoint

    def rule(self, endpoint: str, **kwargs: Any) -> Rule:
        rule = Rule(endpoint, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self._pages.clear()

    def count(self, endpoint: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if endpoint is None or r.endpoint == endpoint)

    # -- answering -------------------------------------------------------------------------------
    def answer(self, path: str, headers: Dict[str, str]) -> Tuple[int, Dict[str, str], bytes, Optional[Rule]]:
        parts = urlsplit(path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = unquote(parts.path).strip("/").split("/")
        if segments[:3] != ["v1", "fine_tuning", "jobs"]:
            return self._error(404, f"Invalid URL (GET {parts.path})", None)
        rest = segments[3:]
        endpoint, job_id = ("jobs", None) if not rest else ("job", rest[0]) if len(rest) == 1 else (rest[1], rest[0])
        with self._lock:
            self.requests.append(Request(endpoint, job_id, params))
            rule = next((r for r in self.rules if r.endpoint == endpoint and r.job_id in (None, job_id)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self.rules.remove(rule)
        if headers.get("authorization") != f"Bearer {KEY}":
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        if rule is not None and rule.status is not None:
            body = json.dumps(rule.body).encode() if rule.raw is None else rule.raw
            return rule.status, dict(rule.headers), body, rule
        if rule is not None and rule.raw is not None:
            return 200, dict(rule.headers), rule.raw, rule
        with self._lock:
            status, body = self._data(endpoint, job_id, params, rule)
        return status, dict(rule.headers if rule else {}), json.dumps(body).encode(), rule

    def _data(self, endpoint: str, job_id: Optional[str], params: Dict[str, str], rule: Optional[Rule]) -> Tuple[int, Any]:
        if endpoint == "jobs":
            items = sorted(self.jobs.values(), key=lambda j: _sort_key(j["created_at"]), reverse=True)
        elif job_id not in self.jobs:
            return 404, {"error": {"message": f"Fine-tuning job {job_id} not found", "type": "invalid_request_error",
                                   "param": None, "code": "fine_tune_not_found"}}
        elif endpoint == "job":
            return 200, self.jobs[job_id]
        elif endpoint == "checkpoints":
            items = list(self.checkpoints[job_id])
        else:
            items = list(self.events[job_id])
        limit = int(params.get("limit", 20 if endpoint != "checkpoints" else 10))
        after = params.get("after")
        key = (endpoint, job_id)
        if after is None:
            self._pages[key] = 0
        self._pages[key] = self._pages.get(key, 0) + 1
        page_number = self._pages[key]
        if rule is not None and rule.endless:
            start = page_number * limit
            prefix = "ftjob-endless-" if endpoint == "jobs" else "ftckpt_endless_"
            data = [{"id": f"{prefix}{start + n}", "created_at": 1_700_000_000 - start - n, "status": "succeeded",
                     "object": "fine_tuning.job"} for n in range(limit)]
            return 200, {"object": "list", "data": data, "has_more": True}
        if rule is not None and rule.empty_after_cursor and after is not None:
            return 200, {"object": "list", "data": [], "has_more": False}
        start = 0
        if after is not None:
            position = next((n for n, item in enumerate(items) if item["id"] == after), None)
            start = len(items) if position is None else position + 1
        page = items[start:start + limit]
        has_more = start + limit < len(items)
        if rule is not None and rule.duplicate and start > 0:
            page = [items[start - 1]] + page
        if rule is not None and rule.end_after_page is not None and page_number >= rule.end_after_page:
            has_more = False
        return 200, {"object": "list", "data": page, "has_more": has_more}

    @staticmethod
    def _error(status: int, message: str, code: Optional[str]) -> Tuple[int, Dict[str, str], bytes, None]:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        return status, {}, json.dumps(body).encode(), None


def _sort_key(created_at: Any) -> float:
    return float(created_at) if isinstance(created_at, (int, float)) else 0.0


class _Handler(BaseHTTPRequestHandler):
    api: HostileAPI
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        status, headers, body, rule = self.api.answer(self.path, {k.lower(): v for k, v in self.headers.items()})
        try:
            self.send_response(status)
            self.send_header("content-type", headers.pop("content-type", "application/json"))
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if rule is not None and rule.trickle:
                deadline = time.monotonic() + MAX_STALL_SECONDS
                for byte in body:
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(rule.trickle)
            elif rule is not None and rule.pieces:
                for start in range(0, len(body), rule.pieces):
                    self.wfile.write(body[start:start + rule.pieces])
                    self.wfile.flush()
                    time.sleep(0.002)
            elif rule is not None and rule.stall:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                time.sleep(MAX_STALL_SECONDS)
                self.close_connection = True
            else:
                self.wfile.write(body)
        except OSError:  # the client went away (a broken pipe, a reset, or TLS's own error for either)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        return
