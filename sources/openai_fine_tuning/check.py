"""`openai-fine-tuning check`: a setup checked without loading (what `dbt debug` is to dbt).

One line per check: every setting with where it came from (secrets masked), one API request per project
(key, base URL, organization and project headers), the destination's driver and credentials, and that the
destination is reachable and writable (a table created and dropped). Exit 0 when all pass, else 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from . import settings as defaults
from .client import ClientSettings, FineTuningClient
from .config import SECRET_NAMES, SECTION, SETTING_NAMES
from .exceptions import EXIT_CONFIGURATION, EXIT_OK

# The SDK's environment variables, third in precedence (after arguments and dlt's config)
SDK_VARIABLES: Dict[str, Tuple[str, ...]] = {
    "api_key": ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"),
    "base_url": ("OPENAI_BASE_URL",),
    "organization": ("OPENAI_ORG_ID",),
    "project": ("OPENAI_PROJECT_ID",),
    "azure_endpoint": ("AZURE_OPENAI_ENDPOINT",),
    "api_version": ("OPENAI_API_VERSION",),
    "admin_api_key": ("OPENAI_ADMIN_KEY",),
}
CHECK_TABLE = "_openai_fine_tuning_check"


@dataclass
class Check:
    ok: bool
    text: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'error'}: {self.text}"


def setting_origin(name: str, section: str, explicit: Dict[str, Any]) -> str:
    """Where the value of setting `name` comes from, in the order of precedence."""
    from dlt.common.configuration.container import Container
    from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext

    if explicit.get(name) is not None:
        return "command line"
    for provider in Container()[PluggableRunContext].providers.providers:
        value, key = provider.get_value(name, Any, None, *section.split("."))
        if value is not None:
            return f"{provider.name} ({key})"
    if section == SECTION:  # a named project never falls back to the SDK variables
        for variable in SDK_VARIABLES.get(name, ()):
            if os.environ.get(variable):
                return f"environment variable {variable}"
    return "default"


def setting_checks(project: str, client_settings: ClientSettings, explicit: Dict[str, Any]) -> List[Check]:
    section = SECTION if project == defaults.DEFAULT_PROJECT else f"{SECTION}.projects.{project}"
    label = "" if project == defaults.DEFAULT_PROJECT else f"project {project}: "
    checks = []
    for name in SETTING_NAMES:
        value = getattr(client_settings, name, None)
        if name == "azure_endpoint":
            value = client_settings.base_url if client_settings.provider == "azure" else None
        if value is None:
            continue
        shown = "***" if name in SECRET_NAMES else value
        checks.append(Check(True, f"{label}{name} = {shown} (from {setting_origin(name, section, explicit)})"))
    return checks


def api_check(project: str, client_settings: ClientSettings) -> Check:
    label = "" if project == defaults.DEFAULT_PROJECT else f"project {project}: "
    try:
        with FineTuningClient(client_settings) as client:
            body = client.get(defaults.JOBS_PATH, params={"limit": 1})
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return Check(False, f"{label}the API at {client_settings.api_root} answered JSON that is not a job list: check base_url")
    except Exception as exc:  # every failure is one line of the report
        return Check(False, f"{label}API: {exc}")
    headers = ", ".join(h for h, v in (("organization", client_settings.organization), ("project", client_settings.project)) if v)
    return Check(True, f"{label}the API at {client_settings.api_root} accepted the key{f' and the {headers}' if headers else ''}")


def destination_checks(pipeline: Any) -> List[Check]:
    from .destinations import preflight

    name = pipeline.destination.destination_name
    try:
        preflight(pipeline)
    except Exception as exc:  # a missing driver or credential
        return [Check(False, f"destination {name}: {exc}")]
    checks = [Check(True, f"destination {name}: driver installed and credentials complete")]
    try:
        where = _write_and_drop(pipeline)
    except Exception as exc:  # unreachable, or no permission
        reason = " ".join(str(exc).split())[:300]
        return checks + [Check(False, f"destination {name} is not reachable or not writable: {reason}")]
    return checks + [Check(True, f"destination {name} is reachable and writable ({where})")]


def _write_and_drop(pipeline: Any) -> str:
    """Create and drop a table in the dataset (or create and drop the dataset, if it does not exist yet)."""
    if pipeline.destination.destination_name == "filesystem":
        client = pipeline.destination_client()
        path = f"{client.dataset_path}/{CHECK_TABLE}"
        client.fs_client.makedirs(client.dataset_path, exist_ok=True)
        client.fs_client.pipe(path, b"check")
        client.fs_client.rm(path)
        return f"wrote and removed {path}"
    with pipeline.sql_client() as client:
        if client.has_dataset():
            table = client.make_qualified_table_name(CHECK_TABLE)
            client.execute_sql(f"CREATE TABLE {table} (id INTEGER)")
            client.execute_sql(f"DROP TABLE {table}")
            return f"created and dropped a table in dataset {pipeline.dataset_name}"
        client.create_dataset()
        client.drop_dataset()
        return f"created and dropped dataset {pipeline.dataset_name}, which the first load creates"


def run_checks(
    pipeline: Any, projects: Sequence[Tuple[str, ClientSettings]], explicit: Dict[str, Any],
    emit: Callable[[str], None],
) -> int:
    """Print one line per check; 0 when all pass, else 2."""
    failed = False
    for project, client_settings in projects:
        for check in setting_checks(project, client_settings, explicit) + [api_check(project, client_settings)]:
            emit(check.line())
            failed = failed or not check.ok
    for check in destination_checks(pipeline):
        emit(check.line())
        failed = failed or not check.ok
    return EXIT_CONFIGURATION if failed else EXIT_OK


__all__ = ["run_checks", "Check", "setting_origin"]
