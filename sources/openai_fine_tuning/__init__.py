"""Load OpenAI fine-tuning data into SQL with dlt: the `openai_fine_tuning` source, `create_views`, and
`load` (what the `openai-fine-tuning` command runs).

    import dlt
    from openai_fine_tuning import create_views, openai_fine_tuning

    pipeline = dlt.pipeline(pipeline_name="fine_tuning", destination="duckdb", dataset_name="openai_fine_tuning")
    pipeline.run(openai_fine_tuning())
    create_views(pipeline)

The source is in `source.py` (its docstring explains the API quirks and the write dispositions). Names are
imported on first use (PEP 562), so `openai-fine-tuning --help` and usage errors do not wait for dlt.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "openai_fine_tuning": ".source",
    "create_views": ".views",
    "load": ".load",
    "LoadResult": ".load",
    "FineTuningClient": ".client",
    "ClientSettings": ".client",
    "RunStats": ".stats",
    "resolve_settings": ".config",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
