"""The loader's HTTP: urllib3's connection pool, with a deadline for each whole response and a cancel.

Why urllib3 under the client and not `httpx.Client`: a backfill sends thousands of small GETs from 16
threads that share one GIL, so the CPU each request costs in Python slows every other request down.
Measured against the emulator at concurrency 16 (2026-12-06, x86_64, 2 cores): `httpx.Client.get` 1,600
µs of CPU a request, httpx's transport alone 1,040 µs, urllib3 460 µs; the events backfill of 200 x 2,000
events took 19.4 to 21.7 s against 22.4 to 24.3 s, with 13.5 to 16.8 s of CPU against 18.0 to 20.1 s.

`DirectClient.get` keeps the part of `httpx.Client.get`'s contract `FineTuningClient` uses, so that both
are handled the same way: the response has `status_code`, `headers`, `content`, `reason_phrase`,
`is_redirect` and `json()` (`Reply`), and a failure raises httpx's exception classes (`ConnectError`,
`ConnectTimeout`, `ReadTimeout`, `ReadError`, `RemoteProtocolError`), with `DeadlineExceeded` or
`Cancelled` as the cause where those ended it. An httpx transport passed in (tests: the in-process emulator,
`httpx.MockTransport`) or a proxy from the environment (HTTPS_PROXY ...) goes through `httpx.Client`,
where `read_timeout` bounds each read and not the whole response.

Deadline and cancel: httpx's and urllib3's read timeouts restart on every read, so a server that trickles
one byte a second holds a request for as long as it likes. Here every socket read of a request gets the
time left until that request's deadline (set with `deadline()` around the request, in the thread that
sends it), so a trickling or stalled server costs at most `read_timeout` per attempt. Reads wait in slices
of `SLICE_SECONDS` and stop early once `cancelled` is set, so a SIGTERM does not wait for requests in flight.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import json
import logging
import os
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, List, Mapping, Optional, Protocol, Tuple
from urllib.parse import quote, urlencode

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

logger = logging.getLogger(__name__)

SLICE_SECONDS = 0.25  # how long one socket read waits before looking at the deadline and the cancel flag
# A response is read through a buffer this large: one read takes the status line, the headers and a body
# of up to this size when they have arrived, where io's default 8 KB took 2.8 reads a page of 100 events
# (29 KB). Each read gives up the GIL and must win it back, which the other 15 threads delay.
READ_BUFFER_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"  # what a path keeps as is (httpx keeps the same, and valid %XX escapes)

_DEADLINE: contextvars.ContextVar[Optional[float]] = contextvars.ContextVar("fine_tuning_deadline", default=None)


class DeadlineExceeded(Exception):
    """The whole response did not arrive before the request's deadline."""


class Cancelled(Exception):
    """The client was closed for shutdown while this request was in flight."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket read of requests sent in this block ends `seconds` from now at the latest."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per trust store: building one loads the CA bundle (about 15 ms), and a
    context is safe to share between connections and threads. The trust store is certifi's, or the one
    `SSL_CERT_FILE` / `SSL_CERT_DIR` name (as httpx reads them; a corporate proxy's CA, say)."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@lru_cache(maxsize=4)
def _ssl_context(cafile: Optional[str], capath: Optional[str]) -> ssl.SSLContext:
    return httpx.create_ssl_context()


# -- sockets whose reads obey the deadline and the cancel flag -------------------------------------------
class _BoundedReader(io.RawIOBase):
    """The response side of one connection (what `http.client` reads through `makefile("rb")`)."""

    def __init__(self, owner: "_BoundedSocket") -> None:
        self._owner = owner

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._owner.reader_closed()
        super().close()

    def readinto(self, buffer: Any) -> int:
        sock, cancelled = self._owner.sock, self._owner.cancelled
        per_read = self._owner.read_timeout
        end = None if per_read is None else time.monotonic() + per_read
        until = _DEADLINE.get()
        if until is not None:
            end = until if end is None else min(end, until)
        while True:
            if cancelled.is_set():
                raise Cancelled("the run is shutting down")
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                if until is not None and end == until:
                    raise DeadlineExceeded("the whole response did not arrive within read_timeout")
                raise socket.timeout("timed out")
            sock.settimeout(SLICE_SECONDS if left is None else min(left, SLICE_SECONDS))
            try:
                return sock.recv_into(buffer)
            except socket.timeout:
                continue  # one slice passed without data: look at the deadline and the cancel flag again


class _BoundedSocket:
    """A connected socket (plain or TLS) whose responses are read through `_BoundedReader`; the rest is the
    socket's own. `settimeout` (urllib3 sets the read timeout before each response) is each read's bound."""

    def __init__(self, sock: socket.socket, cancelled: threading.Event) -> None:
        self.sock = sock
        self.cancelled = cancelled
        self.read_timeout: Optional[float] = sock.gettimeout()
        self._readers = 0
        self._close_when_read = False

    def makefile(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode != "rb":
            return self.sock.makefile(mode, *args, **kwargs)
        self._readers += 1
        return io.BufferedReader(_BoundedReader(self), buffer_size=READ_BUFFER_BYTES)

    def close(self) -> None:
        """As a socket with a file open on it: the socket closes once its readers are closed too (a response
        that ends the connection, `Connection: close`, is read after `http.client` closed the connection)."""
        self._close_when_read = True
        if self._readers == 0:
            self.sock.close()

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._close_when_read and self._readers == 0:
            self.sock.close()

    def settimeout(self, value: Optional[float]) -> None:
        self.read_timeout = value
        self.sock.settimeout(value)

    def gettimeout(self) -> Optional[float]:
        return self.read_timeout

    def sendall(self, data: Any, *args: Any) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the run is shutting down")
        self.sock.settimeout(self.read_timeout)  # a read may have left a slice's timeout on the socket
        self.sock.sendall(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _Bounded:
    """Mixed into urllib3's connection classes: once connected (TLS included), the socket is bounded."""

    sock: Any

    def __init__(self, *args: Any, cancelled: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._cancelled = cancelled

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock = _BoundedSocket(self.sock, self._cancelled)


class _Connection(_Bounded, urllib3.connection.HTTPConnection):
    pass


class _TLSConnection(_Bounded, urllib3.connection.HTTPSConnection):
    pass


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TLSConnection  # type: ignore[assignment]


# -- the client --------------------------------------------------------------------------------------------
class Response(Protocol):
    """A response as the client reads it: the part of `httpx.Response` it uses (`Reply` has the same)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    reason_phrase: str

    @property
    def is_redirect(self) -> bool: ...

    def json(self) -> Any: ...


class Reply:
    """`DirectClient`'s response."""

    __slots__ = ("status_code", "headers", "content", "reason_phrase")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes, reason_phrase: str) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.reason_phrase = reason_phrase

    @property
    def is_redirect(self) -> bool:
        return self.status_code in REDIRECT_STATUSES and "location" in self.headers

    def json(self) -> Any:
        return json.loads(self.content)


class DirectClient:
    """GETs to one origin (the API root) over a pool of at most `max_connections` kept-alive connections.

    Keyword-only: `headers` and `params` go with every request (params first, as httpx merges them);
    `connect_timeout`; `read_timeout` bounds each read and is also how long a request waits for a free
    connection; `cancelled` stops every read within `SLICE_SECONDS` (see the module's docstring)."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        cancelled: threading.Event,
    ) -> None:
        url = urllib3.util.parse_url(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url {base_url!r} is not an http(s) address")
        options: dict = {"ssl_context": shared_ssl_context()} if url.scheme == "https" else {}
        pool_class = _TLSPool if url.scheme == "https" else _Pool
        self._pool = pool_class(
            url.host, url.port, maxsize=max_connections, block=True, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout), cancelled=cancelled, **options,
        )
        self._read_timeout = read_timeout
        self._origin = f"{url.scheme}://{url.netloc}"
        self._prefix = (url.path or "").rstrip("/") + "/"
        self._headers = {"Accept-Encoding": "gzip, deflate", **headers}
        self._params: List[Tuple[str, Any]] = list(params.items())

    def target(self, path: str, params: Optional[Mapping[str, Any]] = None) -> str:
        """The request target: the API root's path, `path` (percent-encoded where it must be), the query."""
        query = urlencode(self._params + list((params or {}).items()))
        return self._prefix + quote(path.lstrip("/"), safe=_PATH_SAFE) + (f"?{query}" if query else "")

    def get(self, path: str, *, params: Optional[Mapping[str, Any]] = None) -> Reply:
        target = self.target(path, params)
        try:
            response = self._pool.urlopen(
                "GET", target, headers=self._headers, redirect=False, retries=False,
                preload_content=True, pool_timeout=self._read_timeout,
            )
        except DeadlineExceeded as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except Cancelled as exc:
            raise httpx.ReadError(str(exc)) from exc
        except HTTPError as exc:
            raise _as_httpx_error(exc) from None
        if logger.isEnabledFor(logging.INFO):  # each request, as httpx logged it (`--verbose` shows them)
            logger.info('HTTP Request: GET %s%s "HTTP/1.1 %d %s"', self._origin, target, response.status, response.reason or "")
        return Reply(response.status, response.headers, response.data, response.reason or "")

    def close(self) -> None:
        self._pool.close()


def _as_httpx_error(exc: HTTPError) -> httpx.TransportError:
    """urllib3's failure as the httpx exception the client handles, with the underlying reason as its text."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, NewConnectionError):  # (a subclass of ConnectTimeoutError: before it)
        return httpx.ConnectError(str(cause or exc))
    if isinstance(exc, ConnectTimeoutError):
        return httpx.ConnectTimeout("timed out")
    if isinstance(exc, ReadTimeoutError):
        return httpx.ReadTimeout("timed out")
    if isinstance(exc, SSLError):
        return httpx.ConnectError(str(exc.args[0] if exc.args else exc))
    if isinstance(exc, ProtocolError):
        reason = exc.args[1] if len(exc.args) > 1 else cause
        if isinstance(reason, http.client.HTTPException):  # not HTTP, cut short, or a malformed response
            return httpx.RemoteProtocolError(str(reason) or type(reason).__name__)
        return httpx.ReadError(str(reason or exc))
    return httpx.ReadError(str(exc))
