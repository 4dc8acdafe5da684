"""One root exception; each subclass says whether a retry can help and what the user should do.

    FineTuningSourceError              one line, safe to print; `exit_code` is what the CLI returns
    +-- ConfigurationError (2)         a setting is missing or wrong; fix it, retrying does not help
    |   +-- StateError (2)             the incremental state has the wrong shape or a newer version
    +-- PipelineLockedError (1)        another run of the pipeline holds the lock
    +-- APIConnectionError (1)         DNS, refused connection, timeout, reset (retryable after the first request)
    +-- APIStatusError (1)             an HTTP error status (408/409/429/5xx retryable)
    |   +-- AuthenticationError (2)    401/403
    |   +-- NotFoundError (1)          404
    |   |   +-- InvalidURLError (2)    404 "Invalid URL" before any request succeeded: base_url lacks /v1
    |   +-- QuotaExceededError (2)     429 insufficient_quota / daily limit: money, not time, fixes it
    +-- InvalidResponseError (1)       2xx whose body is not JSON (retryable) or of the wrong shape
    +-- PaginationLoopError (1)        the `after` cursor repeated
    +-- PageLimitError (1)             a list went on past `max_pages`
    +-- RequestCancelled (1)           the run is shutting down (a signal)

`RunInterrupted` (SIGINT 130, SIGTERM 143) is a KeyboardInterrupt, so `except Exception` never swallows it.
Exit codes of a run with several outcomes: the worst wins, ranked 130/143 > 2 > 1 > 3 > 0.
"""

from __future__ import annotations

import signal
from typing import Iterable, Iterator, Optional

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2
EXIT_PARTIAL = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
_SEVERITY = {EXIT_OK: 0, EXIT_PARTIAL: 1, EXIT_FAILURE: 2, EXIT_CONFIGURATION: 3, EXIT_SIGINT: 4, EXIT_SIGTERM: 4}


def worst_exit_code(codes: Iterable[int]) -> int:
    """The exit code of a run with several outcomes (projects, steps): 130/143 > 2 > 1 > 3 > 0."""
    return max(codes, key=lambda code: _SEVERITY.get(code, 2), default=EXIT_OK)


class FineTuningSourceError(Exception):
    """Root of every error this package raises on purpose. Its message is one line, safe to print."""

    retryable = False
    exit_code = EXIT_FAILURE


class ConfigurationError(FineTuningSourceError):
    """A setting is missing or has a bad value."""

    exit_code = EXIT_CONFIGURATION


class StateError(ConfigurationError):
    """The incremental state does not have the expected shape, or was written by a newer release."""

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer


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
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url
        self.error_type = error_type
        self.error_code = error_code
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked to wait (retry-after-ms / retry-after)


class AuthenticationError(APIStatusError):
    """401/403: wrong key, or no access to the organization or project."""

    exit_code = EXIT_CONFIGURATION


class NotFoundError(APIStatusError):
    """404: the job (or endpoint) does not exist."""


class InvalidURLError(NotFoundError):
    """404 "Invalid URL" before any request succeeded: base_url is not the API root (often: no /v1)."""

    exit_code = EXIT_CONFIGURATION


class QuotaExceededError(APIStatusError):
    """429 whose error code says the quota or a daily limit is exhausted: waiting does not help."""

    exit_code = EXIT_CONFIGURATION


class InvalidResponseError(FineTuningSourceError):
    """A 2xx response whose body is not usable JSON (retryable) or JSON of the wrong shape (not)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class PaginationLoopError(FineTuningSourceError):
    """The `after` cursor repeated: the API would serve the same page forever."""


class PageLimitError(FineTuningSourceError):
    """A list went on for more than `max_pages` pages (`has_more: true` with new ids, forever)."""


class RequestCancelled(FineTuningSourceError):
    """The run is shutting down (a signal arrived): requests in flight stop, none is retried."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised in the main thread by the handler `load` installs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT


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
