"""An httpx transport whose `read_timeout` bounds a whole response, and that a shutdown can interrupt.

httpx's read timeout restarts on every read: a server that trickles one byte a second holds a request for
as long as it likes. Here every socket read of a request gets the time left until that request's deadline
(set with `deadline()` around the request, in the thread that sends it), so a trickling or stalled server
costs at most `read_timeout` per attempt. Reads wait in short slices and stop early once `cancelled` is set,
so a SIGTERM does not wait for requests in flight.

Direct connections only: with a proxy from the environment (HTTPS_PROXY ...) httpx's own transport is used,
where `read_timeout` applies to each read.
"""

from __future__ import annotations

import contextvars
import ssl
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator, Optional

import httpcore
import httpx

SLICE_SECONDS = 0.25  # how long one socket read waits before looking at the deadline and the cancel flag

_DEADLINE: contextvars.ContextVar[Optional[float]] = contextvars.ContextVar("fine_tuning_deadline", default=None)


class DeadlineExceeded(httpcore.ReadTimeout):
    """The whole response did not arrive before the request's deadline."""


class Cancelled(httpcore.ReadError):
    """The client was closed for shutdown while this request was in flight."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket read of requests sent in this block ends `seconds` from now at the latest."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, cancelled: threading.Event) -> None:
        self._inner = inner
        self._cancelled = cancelled

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        now = time.monotonic()
        end = now + timeout if timeout is not None else None
        until = _DEADLINE.get()
        if until is not None:
            end = until if end is None else min(end, until)
        while True:
            if self._cancelled.is_set():
                raise Cancelled("the run is shutting down")
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                if until is not None and end == until:
                    raise DeadlineExceeded("the whole response did not arrive within read_timeout")
                raise httpcore.ReadTimeout("timed out")
            try:
                return self._inner.read(max_bytes, timeout=SLICE_SECONDS if left is None else min(left, SLICE_SECONDS))
            except httpcore.ReadTimeout:
                continue  # one slice passed without data: look at the deadline and the cancel flag again

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the run is shutting down")
        self._inner.write(buffer, timeout=timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: Optional[str] = None, timeout: Optional[float] = None) -> "_BoundedStream":
        return _BoundedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._cancelled)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, cancelled: threading.Event) -> None:
        self._inner = httpcore.SyncBackend()
        self._cancelled = cancelled

    def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None, local_address: Optional[str] = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout=timeout, local_address=local_address, socket_options=socket_options)
        return _BoundedStream(stream, self._cancelled)

    def connect_unix_socket(self, path: str, timeout: Optional[float] = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _BoundedStream(self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options), self._cancelled)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (about 15 ms), and a context
    is safe to share between connections and threads."""
    return httpx.create_ssl_context()


class BoundedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose sockets obey `deadline()` and `cancelled`."""

    def __init__(self, *, limits: httpx.Limits, cancelled: threading.Event) -> None:
        super().__init__(limits=limits, verify=shared_ssl_context())
        self._pool = httpcore.ConnectionPool(
            ssl_context=shared_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_BoundedBackend(cancelled),
        )
