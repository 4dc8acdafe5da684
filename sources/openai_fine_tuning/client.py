"""HTTP access to the fine-tuning list endpoints: one pooled client, retries with tenacity, clear errors.

Layers: `FineTuningClient.get` retries one `_get_once` attempt; `error_from_response` maps an error
response to an exception (a pure function); `retry_after_seconds` reads the wait the server asked for.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

import httpx
import tenacity

from . import settings
from .decoding import decode_json
from .exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    InvalidResponseError,
    InvalidURLError,
    NotFoundError,
    QuotaExceededError,
    RequestCancelled,
)
from .paginator import CursorPaginator
from .redaction import redact_text, redact_url
from .stats import RunStats
from .transport import Cancelled, DeadlineExceeded, DirectClient, Response, deadline

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
QUOTA_CODES = frozenset({"insufficient_quota", "daily_limit_exceeded", "billing_hard_limit_reached"})
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@dataclass(frozen=True)
class ClientSettings:
    """Everything the client needs; built and validated by `config.resolve_settings`."""

    api_key: str = field(repr=False)
    base_url: str = settings.DEFAULT_BASE_URL
    provider: str = "openai"  # "openai" or "azure"
    organization: Optional[str] = None
    project: Optional[str] = None
    api_version: Optional[str] = None
    page_size: int = settings.DEFAULT_PAGE_SIZE
    concurrency: int = settings.DEFAULT_CONCURRENCY
    connect_timeout: float = settings.DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = settings.DEFAULT_READ_TIMEOUT
    max_attempts: int = settings.DEFAULT_MAX_ATTEMPTS
    max_retry_wait: float = settings.DEFAULT_MAX_RETRY_WAIT
    backoff_initial: float = settings.DEFAULT_BACKOFF_INITIAL
    max_pages: int = settings.DEFAULT_MAX_PAGES
    reconcile_interval_hours: float = settings.DEFAULT_RECONCILE_INTERVAL_HOURS
    # an admin key (`sk-admin-...`) reads checkpoint permissions; nothing else uses it
    admin_api_key: Optional[str] = field(default=None, repr=False)
    permissions_interval_hours: float = settings.DEFAULT_PERMISSIONS_INTERVAL_HOURS
    # `load` commits every slice_rows rows of checkpoints, events and step metrics (state saved with each)
    slice_rows: int = settings.DEFAULT_SLICE_ROWS

    @property
    def api_root(self) -> str:
        root = self.base_url.rstrip("/")
        if self.provider == "azure" and not root.endswith("/openai"):
            root += "/openai"
        return root


class FineTuningClient:
    """Reads the fine-tuning list endpoints. Thread safe: share one instance across worker threads.

    `stats` counts requests and retries (a fresh `RunStats` when not given). `sleep` and `clock` are
    injected for tests; by default every wait ends early when `cancel()` is called.
    """

    def __init__(
        self,
        config: ClientSettings,
        *,
        transport: Optional[httpx.BaseTransport] = None,
        stats: Optional[RunStats] = None,
        sleep: Optional[Callable[[float], None]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = stats if stats is not None else RunStats()
        headers = {"Accept": "application/json", "User-Agent": "openai-fine-tuning-dlt"}
        params: Dict[str, str] = {}
        if config.provider == "azure":
            headers["api-key"] = config.api_key
            params["api-version"] = config.api_version or settings.DEFAULT_AZURE_API_VERSION
        else:
            headers["Authorization"] = f"Bearer {config.api_key}"
            if config.organization:
                headers["OpenAI-Organization"] = config.organization
            if config.project:
                headers["OpenAI-Project"] = config.project
        pool = max(config.concurrency, 1) + 4
        self._cancelled = threading.Event()
        # a transport passed in is its owner's to close: the clients of one load (each slice's, the read ahead's)
        # share it, and closing it under the others would break their requests in flight
        self._owns_transport = transport is None
        self._http: Any
        if transport is None and not any(os.environ.get(name) for name in _PROXY_VARIABLES):
            self._http = DirectClient(
                base_url=config.api_root, headers=headers, params=params, connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout, max_connections=pool, cancelled=self._cancelled,
            )
        else:  # tests' in-process transports, and proxies from the environment: httpx (see `transport.py`)
            limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
            self._http = httpx.Client(
                base_url=config.api_root,
                headers=headers,
                params=params,
                timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
                limits=limits,
                transport=transport,
            )
        self._lock = threading.Lock()
        self._reached = False  # a response came back (any status)
        self._succeeded = False  # a 2xx came back
        self._pause_until = 0.0
        self._clock = clock
        self._sleep = sleep or self._interruptible_sleep

    # -- public API -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._owns_transport:
            self._http.close()

    def cancel(self) -> None:
        """Stop the requests in flight and every wait (shutdown on a signal); later requests fail at once."""
        self._cancelled.set()

    def __enter__(self) -> "FineTuningClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def list_jobs(
        self, *, metadata: Optional[Mapping[str, str]] = None, after: Optional[str] = None, pages_before: int = 0,
    ) -> CursorPaginator:
        """Every job, newest first; `metadata` keeps only the jobs whose metadata has these values. `after`
        and `pages_before`: go on with a listing paused after that job and that many pages."""
        params = {f"metadata[{key}]": value for key, value in (metadata or {}).items()}
        return self.paginate(settings.JOBS_PATH, params=params, after=after, pages_before=pages_before)

    def get_file_content(self, file_id: str) -> bytes:
        """The raw content of a file (a job's result file is a CSV, sometimes served base64-encoded)."""
        return self.get(f"{settings.FILES_PATH}/{quote(file_id, safe='')}/content", raw=True)

    def list_permissions(self, model: str) -> CursorPaginator:
        """The permissions of one checkpoint model (needs an admin key as `api_key`)."""
        return self.paginate(settings.PERMISSIONS_PATH.format(model=quote(model, safe="")))

    def list_checkpoints(self, job_id: str) -> CursorPaginator:
        return self.paginate(f"{settings.JOBS_PATH}/{quote(job_id, safe='')}/checkpoints")

    def list_events(self, job_id: str, *, stop_at_id: Optional[str] = None, after: Optional[str] = None) -> CursorPaginator:
        """A job's events, newest first, down to `stop_at_id`; `after`: from the event after that id on."""
        return self.paginate(f"{settings.JOBS_PATH}/{quote(job_id, safe='')}/events", stop_at_id=stop_at_id, after=after)

    def get_job(self, job_id: str) -> Dict[str, Any]:
        path = f"{settings.JOBS_PATH}/{quote(job_id, safe='')}"
        body = self.get(path)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise InvalidResponseError(f"GET {self._display(path)} returned JSON that is not a job object (no 'id')")
        return body

    def paginate(
        self, path: str, *, stop_at_id: Optional[str] = None, params: Optional[Mapping[str, Any]] = None,
        after: Optional[str] = None, pages_before: int = 0,
    ) -> CursorPaginator:
        fixed = dict(params or {})
        return CursorPaginator(
            lambda page: self.get(path, params={**fixed, **page}),
            endpoint=f"GET {self._display(path)}",
            page_size=self.config.page_size,
            stop_at_id=stop_at_id,
            max_pages=self.config.max_pages,
            start_after=after,
            pages_before=pages_before,
        )

    def get(self, path: str, *, params: Optional[Mapping[str, Any]] = None, raw: bool = False) -> Any:
        """GET a JSON document (`raw`: the body's bytes), retrying transient faults with exponential backoff
        and jitter."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(self.config.max_attempts, 1)),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._get_once(path, params, raw)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt ------------------------------------------------------------------------------
    def _get_once(self, path: str, params: Optional[Mapping[str, Any]], raw: bool = False) -> Any:
        self._wait_for_pause()
        if self._cancelled.is_set():
            raise RequestCancelled(f"GET {self._display(path)} was not sent: the run is shutting down")
        self.stats.count_request()
        try:
            with deadline(self.config.read_timeout):
                response = self._http.get(path, params=dict(params or {}))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # not reached yet: a wrong base URL or no network, which retrying does not mend
            what = "could not connect (timed out)" if isinstance(exc, httpx.ConnectTimeout) else "could not connect"
            raise APIConnectionError(self._connection_message(path, exc, what), first_request=not self._reached) from None
        except httpx.TimeoutException as exc:
            if isinstance(exc.__cause__, DeadlineExceeded):
                raise APIConnectionError(
                    f"GET {self._display(path)} timed out: the server stopped sending (no complete response within"
                    f" read_timeout={self.config.read_timeout:g} s)"
                ) from None
            raise APIConnectionError(self._connection_message(path, exc, "timed out")) from None
        except httpx.TransportError as exc:
            if isinstance(exc.__cause__, Cancelled):
                raise RequestCancelled(f"GET {self._display(path)} was stopped: the run is shutting down") from None
            # a port that answers without HTTP fails fast on the first request, like a refused connection
            not_http = isinstance(exc, httpx.RemoteProtocolError) and not self._reached
            raise APIConnectionError(
                self._connection_message(path, exc, "got no HTTP answer" if not_http else "connection failed"),
                first_request=not_http,
            ) from None
        self._reached = True
        if response.status_code >= 400:
            raise error_from_response(
                response, url=self._display(path), secrets=[k for k in (self.config.api_key, self.config.admin_api_key) if k], first=not self._succeeded
            )
        self._succeeded = True
        if response.is_redirect:
            location = redact_url(response.headers.get("location", "") or "nowhere")
            raise InvalidResponseError(
                f"GET {self._display(path)} answered a redirect (HTTP {response.status_code}) to {location}: set"
                " base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) to the API's own address"
            )
        if raw:
            return response.content
        try:
            return decode_json(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise InvalidResponseError(
                f"GET {self._display(path)} returned {response.status_code} with a body that is not JSON"
                f"{_request_id_suffix(response)}",
                retryable=True,
            ) from None

    # -- retry plumbing ---------------------------------------------------------------------------
    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        if hinted is None:
            backoff = tenacity.wait_random_exponential(multiplier=self.config.backoff_initial, max=self.config.max_retry_wait)
            return backoff(retry_state)
        return min(hinted, self.config.max_retry_wait)

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self.stats.count_retry()
        if isinstance(exc, APIStatusError) and exc.status_code == 429:
            with self._lock:  # rate limits apply to the whole key: every worker waits, not just this one
                self._pause_until = max(self._pause_until, self._clock() + wait)
        logger.warning("retrying in %.2fs after: %s", wait, exc)

    def _wait_for_pause(self) -> None:
        with self._lock:
            delay = self._pause_until - self._clock()
        if delay > 0:
            self._sleep(delay)

    def _interruptible_sleep(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            raise RequestCancelled("a wait before a retry was stopped: the run is shutting down")

    # -- messages ---------------------------------------------------------------------------------
    def _display(self, path: str) -> str:
        return redact_url(self.config.api_root.rstrip("/") + path)

    def _connection_message(self, path: str, exc: Exception, what: str) -> str:
        detail = redact_text(str(exc) or type(exc).__name__, [self.config.api_key]).rstrip(".")
        return (
            f"GET {self._display(path)} {what}: {detail}. Check base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT)"
            " and the network."
        )


def _request_id(response: Response) -> Optional[str]:
    return response.headers.get("x-request-id") or response.headers.get("apim-request-id")


def _request_id_suffix(response: Response) -> str:
    request_id = _request_id(response)
    return f" (request id {request_id})" if request_id else ""


def error_from_response(response: Response, *, url: str, secrets: Sequence[str] = (), first: bool = False) -> APIStatusError:
    """The exception for an HTTP error status: its class, whether a retry can help, the wait the server
    asked for, and a one-line message with a hint and the request id. `first`: no request succeeded yet."""
    status = response.status_code
    message, error_type, error_code = _parse_error_body(response)
    should_retry = response.headers.get("x-should-retry", "").lower()
    retryable = status in RETRYABLE_STATUS or status >= 500
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    cls = APIStatusError
    hint = ""
    daily = "per day" in message.lower() or "daily" in message.lower()
    if status == 429 and (error_code in QUOTA_CODES or error_type in QUOTA_CODES or daily):
        cls, retryable = QuotaExceededError, False
        hint = " Waiting does not help: add credit or raise the limit, then run again."
    elif status in (401, 403):
        cls, retryable = AuthenticationError, False
        hint = (
            " Check the API key (api_key / OPENAI_API_KEY or AZURE_OPENAI_API_KEY) and that it has access"
            " to the organization and project."
        )
    elif status == 404 and first and message.lower().startswith("invalid url"):
        cls, retryable = InvalidURLError, False
        hint = " This address is not the API root: check that base_url (OPENAI_BASE_URL) ends with /v1."
    elif status == 404:
        cls, retryable = NotFoundError, False
    text = (
        f"GET {url} failed with HTTP {status}"
        f"{f' ({error_code})' if error_code else ''}: {message}.{hint}{_request_id_suffix(response)}"
    )
    return cls(
        redact_text(text, secrets),
        status_code=status,
        url=url,
        error_type=error_type,
        error_code=error_code,
        request_id=_request_id(response),
        retryable=retryable,
        retry_after=retry_after_seconds(response.headers),
    )


def retry_after_seconds(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> Optional[float]:
    """`retry-after-ms`, then `retry-after` as seconds or an HTTP date (seconds from `now()`, the wall clock
    by default); None when absent or unparseable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - now(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def _parse_error_body(response: Response) -> Tuple[str, Optional[str], Optional[str]]:
    """OpenAI: {"error": {"message","type","param","code"}}; Azure: {"error": {"code","message"}} or
    {"statusCode", "message"}; proxies: HTML. Returns (message, type, code)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        content_type = response.headers.get("content-type", "unknown").split(";")[0]
        return f"the response body is not JSON ({content_type})", None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = body if isinstance(body, dict) else {}
    message = error.get("message") or response.reason_phrase or "no message"
    code = error.get("code")
    if str(code) == str(response.status_code):  # Azure repeats the status as the code
        code = None
    error_type = error.get("type")
    one_line = " ".join(str(message).split()).rstrip(".")
    return one_line, (str(error_type) if error_type else None), (str(code) if code else None)
