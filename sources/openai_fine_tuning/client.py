"""HTTP access to the fine-tuning list endpoints: one httpx.Client, retries with tenacity, clear errors."""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

import httpx
import tenacity

from . import settings
from .exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    InvalidResponseError,
    NotFoundError,
    QuotaExceededError,
)
from .paginator import CursorPaginator
from .redaction import redact_text, redact_url

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429})
QUOTA_CODES = frozenset({"insufficient_quota", "daily_limit_exceeded", "billing_hard_limit_reached"})


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

    @property
    def api_root(self) -> str:
        root = self.base_url.rstrip("/")
        if self.provider == "azure" and not root.endswith("/openai"):
            root += "/openai"
        return root


class FineTuningClient:
    """Reads the fine-tuning list endpoints. Thread safe: share one instance across worker threads."""

    def __init__(self, config: ClientSettings, *, transport: Optional[httpx.BaseTransport] = None) -> None:
        self.config = config
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
        self._http = httpx.Client(
            base_url=config.api_root,
            headers=headers,
            params=params,
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            transport=transport,
        )
        self._lock = threading.Lock()
        self._reached = False
        self._pause_until = 0.0
        self.request_count = 0
        self.retry_count = 0
        self.sleep = time.sleep  # every wait (backoff and the shared 429 pause) goes through here

    # -- public API -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "FineTuningClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def list_jobs(self) -> CursorPaginator:
        return self.paginate(settings.JOBS_PATH)

    def list_checkpoints(self, job_id: str) -> CursorPaginator:
        return self.paginate(f"{settings.JOBS_PATH}/{quote(job_id, safe='')}/checkpoints")

    def list_events(self, job_id: str, *, stop_at_id: Optional[str] = None) -> CursorPaginator:
        return self.paginate(f"{settings.JOBS_PATH}/{quote(job_id, safe='')}/events", stop_at_id=stop_at_id)

    def get_job(self, job_id: str) -> Dict[str, Any]:
        path = f"{settings.JOBS_PATH}/{quote(job_id, safe='')}"
        body = self.get(path)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise InvalidResponseError(f"GET {self._display(path)} returned JSON that is not a job object (no 'id')")
        return body

    def paginate(self, path: str, *, stop_at_id: Optional[str] = None) -> CursorPaginator:
        return CursorPaginator(
            lambda params: self.get(path, params=params),
            endpoint=f"GET {self._display(path)}",
            page_size=self.config.page_size,
            stop_at_id=stop_at_id,
        )

    def get(self, path: str, *, params: Optional[Mapping[str, Any]] = None) -> Any:
        """GET a JSON document, retrying transient faults with exponential backoff and jitter."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(self.config.max_attempts, 1)),
            wait=self._wait,
            retry=tenacity.retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            before_sleep=self._before_sleep,
            sleep=lambda seconds: self.sleep(seconds),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._get_once(path, params)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt ------------------------------------------------------------------------------
    def _get_once(self, path: str, params: Optional[Mapping[str, Any]]) -> Any:
        self._wait_for_pause()
        with self._lock:
            self.request_count += 1
        try:
            response = self._http.get(path, params=dict(params or {}))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # not reached yet: a wrong base URL or no network, which retrying does not mend
            what = "could not connect (timed out)" if isinstance(exc, httpx.ConnectTimeout) else "could not connect"
            raise APIConnectionError(self._connection_message(path, exc, what), first_request=not self._reached) from None
        except httpx.TimeoutException as exc:
            raise APIConnectionError(self._connection_message(path, exc, "timed out"), first_request=False) from None
        except httpx.TransportError as exc:
            raise APIConnectionError(self._connection_message(path, exc, "connection failed"), first_request=False) from None
        self._reached = True
        if response.status_code >= 400:
            raise self._status_error(path, response)
        if response.is_redirect:
            location = redact_url(response.headers.get("location", "") or "nowhere")
            raise InvalidResponseError(
                f"GET {self._display(path)} answered a redirect (HTTP {response.status_code}) to {location}: set"
                " base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT) to the API's own address"
            )
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise InvalidResponseError(
                f"GET {self._display(path)} returned {response.status_code} with a body that is not JSON"
                f"{self._request_id_suffix(response)}",
                retryable=True,
            ) from None

    def _status_error(self, path: str, response: httpx.Response) -> APIStatusError:
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
        elif status == 404:
            cls, retryable = NotFoundError, False
        text = (
            f"GET {self._display(path)} failed with HTTP {status}"
            f"{f' ({error_code})' if error_code else ''}: {message}.{hint}{self._request_id_suffix(response)}"
        )
        error = cls(
            redact_text(text, [self.config.api_key]),
            status_code=status,
            url=self._display(path),
            error_type=error_type,
            error_code=error_code,
            request_id=response.headers.get("x-request-id") or response.headers.get("apim-request-id"),
            retryable=retryable,
        )
        error.retry_after = retry_after_seconds(response.headers)
        return error

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
        with self._lock:
            self.retry_count += 1
            if isinstance(exc, APIStatusError) and exc.status_code == 429:
                # Rate limits apply to the whole key: every worker waits, not just this one.
                self._pause_until = max(self._pause_until, time.monotonic() + wait)
        logger.warning("retrying in %.2fs after: %s", wait, exc)

    def _wait_for_pause(self) -> None:
        delay = self._pause_until - time.monotonic()
        if delay > 0:
            self.sleep(delay)

    # -- messages ---------------------------------------------------------------------------------
    def _display(self, path: str) -> str:
        return redact_url(self.config.api_root.rstrip("/") + path)

    def _connection_message(self, path: str, exc: Exception, what: str) -> str:
        detail = redact_text(str(exc) or type(exc).__name__, [self.config.api_key]).rstrip(".")
        return (
            f"GET {self._display(path)} {what}: {detail}. Check base_url (OPENAI_BASE_URL / AZURE_OPENAI_ENDPOINT)"
            " and the network."
        )

    @staticmethod
    def _request_id_suffix(response: httpx.Response) -> str:
        request_id = response.headers.get("x-request-id") or response.headers.get("apim-request-id")
        return f" (request id {request_id})" if request_id else ""


def retry_after_seconds(headers: Mapping[str, str]) -> Optional[float]:
    """`retry-after-ms`, then `retry-after` as seconds or an HTTP date; None when absent or unparseable."""
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
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def _parse_error_body(response: httpx.Response) -> Tuple[str, Optional[str], Optional[str]]:
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
