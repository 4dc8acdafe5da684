"""Keep secrets out of messages, logs, traces and state."""

from __future__ import annotations

import re
from typing import Iterable, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_QUERY_KEYS = {"api-key", "api_key", "key", "token", "access_token", "sig"}
# OpenAI keys look like sk-..., sk-proj-..., sk-svcacct-... (the API echoes them half-masked, sk-abc***xyz);
# Azure keys are 32 hex characters.
_KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*]{3,}|\b[0-9a-f]{32}\b")
REDACTED = "***"


def redact_url(url: str) -> str:
    """Drop user info and secret query values from a URL."""
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = urlencode(
        [(k, REDACTED if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[Optional[str]] = ()) -> str:
    """Replace known secret values and anything shaped like an API key."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _KEY_PATTERN.sub(REDACTED, text)
