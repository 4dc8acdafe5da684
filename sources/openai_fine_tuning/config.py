"""Settings resolution: explicit arguments > dlt config/secrets > the SDK environment variables.

The provider (OpenAI or Azure OpenAI) is explicit when both kinds of settings are present; when it cannot
be decided the run stops with an error that says which setting to add.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

import dlt

from . import settings
from .client import ClientSettings
from .exceptions import ConfigurationError

SECTION = "sources.openai_fine_tuning"
SETTING_NAMES = (
    "api_key", "base_url", "organization", "project", "provider", "azure_endpoint", "api_version",
    "page_size", "concurrency", "max_attempts", "max_retry_wait", "backoff_initial", "connect_timeout", "read_timeout",
    "max_pages", "reconcile_interval_hours", "admin_api_key", "permissions_interval_hours", "slice_rows",
)
SECRET_NAMES = frozenset({"api_key", "admin_api_key"})


def _where(name: str, section: str = SECTION) -> str:
    table = "[" + section + "]"
    env = "__".join(part.upper() for part in section.split(".")) + "__" + name.upper()
    return f"{name} in {table} of .dlt/config.toml (or {env})"


def read_dlt_settings(section: str = SECTION) -> Dict[str, Any]:
    """The settings dlt's providers (env, .dlt/secrets.toml, .dlt/config.toml) hold for `section`."""
    values: Dict[str, Any] = {}
    for name in SETTING_NAMES:
        accessor = dlt.secrets if name in SECRET_NAMES else dlt.config
        value = accessor.get(f"{section}.{name}")
        if value is None and name in SECRET_NAMES:
            value = dlt.config.get(f"{section}.{name}")
        if value is not None:
            values[name] = value
    return values


def _number(values: Mapping[str, Any], name: str, cast: Callable[[Any], Any], low: float, high: float,
            default: Any, section: str) -> Any:
    raw = values.get(name)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(raw, bool):
            raise ValueError
        number = cast(raw)
        if cast is int and float(raw) != number:
            raise ValueError
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        kind = "a whole number" if cast is int else "a number"
        raise ConfigurationError(f"{name} must be {kind} from {low:g} to {high:g}, got {raw!r}: fix {_where(name, section)}")
    return number


def _url(value: str, name: str, section: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be an http(s) URL such as https://api.openai.com/v1, got {value!r}: fix {_where(name, section)}"
        )
    return value.rstrip("/")


def resolve_settings(
    explicit: Optional[Mapping[str, Any]] = None,
    *,
    section: str = SECTION,
    environ: Optional[Mapping[str, str]] = None,
    use_dlt_config: bool = True,
    key_hint_env: bool = True,
) -> ClientSettings:
    """Merge the three sources of settings and validate them into `ClientSettings`."""
    env = os.environ if environ is None else environ
    values: Dict[str, Any] = dict(read_dlt_settings(section)) if use_dlt_config else {}
    values.update({k: v for k, v in (explicit or {}).items() if v is not None})

    provider = values.get("provider")
    if provider is not None:
        provider = str(provider).strip().lower()
        if provider not in ("openai", "azure"):
            raise ConfigurationError(f"provider must be 'openai' or 'azure', got {values['provider']!r}: fix {_where('provider', section)}")
    elif values.get("azure_endpoint"):
        provider = "azure"
    elif values.get("base_url"):
        provider = "openai"
    else:
        has_azure = bool(env.get("AZURE_OPENAI_ENDPOINT") or env.get("AZURE_OPENAI_API_KEY"))
        has_openai = bool(env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY"))
        if has_azure and has_openai:
            raise ConfigurationError(
                "both OpenAI (OPENAI_API_KEY/OPENAI_BASE_URL) and Azure OpenAI (AZURE_OPENAI_*) settings are set:"
                f" choose one with provider = \"openai\" or \"azure\" ({_where('provider', section)})"
            )
        provider = "azure" if has_azure else "openai"

    if provider == "azure":
        api_key = values.get("api_key") or env.get("AZURE_OPENAI_API_KEY")
        endpoint = values.get("azure_endpoint") or values.get("base_url") or env.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ConfigurationError(
                f"no Azure OpenAI endpoint: set AZURE_OPENAI_ENDPOINT or {_where('azure_endpoint', section)}"
            )
        base_url = _url(str(endpoint), "azure_endpoint", section)
        api_version = values.get("api_version") or env.get("OPENAI_API_VERSION") or settings.DEFAULT_AZURE_API_VERSION
        key_hint = f"set {'AZURE_OPENAI_API_KEY or ' if key_hint_env else ''}api_key in [{section}] of .dlt/secrets.toml"
    else:
        api_key = values.get("api_key") or env.get("OPENAI_API_KEY")
        base_url = _url(str(values.get("base_url") or env.get("OPENAI_BASE_URL") or settings.DEFAULT_BASE_URL), "base_url", section)
        api_version = None
        key_hint = f"set {'OPENAI_API_KEY or ' if key_hint_env else ''}api_key in [{section}] of .dlt/secrets.toml"
    if not api_key or not str(api_key).strip():
        demo = " (to try the loader without a key, run `openai-fine-tuning demo`)" if key_hint_env else ""
        raise ConfigurationError(f"no API key: {key_hint}{demo}")

    admin_key = values.get("admin_api_key") or (env.get("OPENAI_ADMIN_KEY") if provider == "openai" else None)
    return ClientSettings(
        api_key=str(api_key).strip(),
        base_url=base_url,
        provider=provider,
        organization=values.get("organization") or (env.get("OPENAI_ORG_ID") if provider == "openai" else None),
        project=values.get("project") or (env.get("OPENAI_PROJECT_ID") if provider == "openai" else None),
        api_version=str(api_version) if api_version else None,
        page_size=_number(values, "page_size", int, 1, settings.MAX_PAGE_SIZE, settings.DEFAULT_PAGE_SIZE, section),
        concurrency=_number(values, "concurrency", int, 1, settings.MAX_CONCURRENCY, settings.DEFAULT_CONCURRENCY, section),
        max_attempts=_number(values, "max_attempts", int, 1, 20, settings.DEFAULT_MAX_ATTEMPTS, section),
        max_retry_wait=_number(values, "max_retry_wait", float, 0, 3600, settings.DEFAULT_MAX_RETRY_WAIT, section),
        backoff_initial=_number(values, "backoff_initial", float, 0, 60, settings.DEFAULT_BACKOFF_INITIAL, section),
        connect_timeout=_number(values, "connect_timeout", float, 0.1, 600, settings.DEFAULT_CONNECT_TIMEOUT, section),
        read_timeout=_number(values, "read_timeout", float, 0.1, 3600, settings.DEFAULT_READ_TIMEOUT, section),
        max_pages=_number(values, "max_pages", int, 1, 10_000_000, settings.DEFAULT_MAX_PAGES, section),
        reconcile_interval_hours=_number(
            values, "reconcile_interval_hours", float, 0, 24 * 365, settings.DEFAULT_RECONCILE_INTERVAL_HOURS, section
        ),
        admin_api_key=str(admin_key).strip() if admin_key and str(admin_key).strip() else None,
        permissions_interval_hours=_number(
            values, "permissions_interval_hours", float, 0, 24 * 365, settings.DEFAULT_PERMISSIONS_INTERVAL_HOURS, section
        ),
        slice_rows=_number(values, "slice_rows", int, 1, 100_000_000, settings.DEFAULT_SLICE_ROWS, section),
    )


_PROJECT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


def configured_projects() -> List[str]:
    """Project names under [sources.openai_fine_tuning.projects.<name>] in config.toml, secrets.toml or
    SOURCES__OPENAI_FINE_TUNING__PROJECTS (JSON). dlt returns the first provider's section only, so the
    providers are asked one by one and the names are united."""
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    names: Dict[str, None] = {}
    for provider in Container()[PluggableRunContext].providers.providers:
        value, _ = provider.get_value("projects", Any, None, *SECTION.split("."))
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigurationError(
                    "SOURCES__OPENAI_FINE_TUNING__PROJECTS must be a JSON object of project sections, "
                    'e.g. {"research": {"project": "proj_..."}}'
                ) from None
        if isinstance(value, Mapping):
            names.update(dict.fromkeys(str(name) for name in value))
    for name in names:
        if not _PROJECT_NAME.match(name):
            raise ConfigurationError(
                f"project name {name!r} under [{SECTION}.projects] must be letters, digits, '_', '-' or '.'"
            )
    return list(names)


def project_settings(name: str, explicit: Optional[Mapping[str, Any]] = None) -> ClientSettings:
    """Settings of one named project: its own section over the shared [sources.openai_fine_tuning] one.
    The key must come from the project's own section: a project-scoped key is never shared."""
    section = f"{SECTION}.projects.{name}"
    shared = read_dlt_settings(SECTION)
    shared.pop("api_key", None)
    values = {**shared, **read_dlt_settings(section), **{k: v for k, v in (explicit or {}).items() if v is not None}}
    return resolve_settings(values, section=section, environ={}, use_dlt_config=False, key_hint_env=False)
