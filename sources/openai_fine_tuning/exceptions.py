"""One root exception; each subclass says whether a retry can help and what the user should do."""

from __future__ import annotations

from typing import Iterator, Optional


class FineTuningSourceError(Exception):
    """Root of every error this package raises on purpose. Its message is one line, safe to print."""

    retryable = False


class ConfigurationError(FineTuningSourceError):
    """A setting is missing or has a bad value."""


class PipelineLockedError(FineTuningSourceError):
    """Another run of the same pipeline holds the lock."""


class APIConnectionError(FineTuningSourceError):
    """The API could not be reached (DNS, refused connection, timeout, reset)."""

    def __init__(self, message: str, *, first_request: bool = False) -> None:
        super().__init__(message)
        # A failure on the very first request points at a wrong base URL or no network: fail fast.
        self.retryable = not first_request


class APIStatusError(FineTuningSourceError):
    """The API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        url: str,
        error_type: Optional[str] = None,
        error_code: Optional[str] = None,
        request_id: Optional[str] = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url
        self.error_type = error_type
        self.error_code = error_code
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after: Optional[float] = None


class AuthenticationError(APIStatusError):
    """401/403: wrong key, or no access to the organization or project."""


class NotFoundError(APIStatusError):
    """404: the job (or endpoint) does not exist."""


class QuotaExceededError(APIStatusError):
    """429 whose error code says the quota or a daily limit is exhausted: waiting does not help."""


class InvalidResponseError(FineTuningSourceError):
    """A 2xx response whose body is not usable JSON (retryable) or JSON of the wrong shape (not)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class PaginationLoopError(FineTuningSourceError):
    """The `after` cursor repeated: the API would serve the same page forever."""


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it, and so on (dlt wraps errors raised in resources and steps)."""
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def find_source_error(exc: BaseException) -> Optional[FineTuningSourceError]:
    """Our own error anywhere in the chain of `exc`."""
    return next((e for e in exception_chain(exc) if isinstance(e, FineTuningSourceError)), None)
