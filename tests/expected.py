"""What the warehouse must hold, computed from the emulator's data independently of the loader."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional

from openai_fine_tuning.emulator import Emulator
from openai_fine_tuning.settings import CHECKPOINT_METRICS

CHECKPOINT_COLUMNS = (
    "id, fine_tuning_job_id, fine_tuned_model_checkpoint, step_number, created_at, "
    + ", ".join(f"metrics__{m}" for m in CHECKPOINT_METRICS)
)


def checkpoint_row(c: Dict[str, Any]) -> tuple:
    return (
        c["id"], c["fine_tuning_job_id"], c["fine_tuned_model_checkpoint"], c["step_number"], c["created_at"],
        *(c["metrics"].get(m) for m in CHECKPOINT_METRICS),
    )


def seconds(value: Any) -> Optional[int]:
    """A loaded timestamp as unix seconds, whatever the engine returns: an aware datetime, a naive one in
    UTC (MariaDB), or text (SQLite)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp())


def loaded_checkpoint_rows(rows: Iterable[Dict[str, Any]]) -> List[tuple]:
    return sorted(
        (
            r["id"], r["fine_tuning_job_id"], r["fine_tuned_model_checkpoint"], r["step_number"],
            seconds(r["created_at"]), *(r[f"metrics__{m}"] for m in CHECKPOINT_METRICS),
        )
        for r in rows
    )


def expected_checkpoints(emu: Emulator, also: Iterable[Dict[str, Any]] = ()) -> List[tuple]:
    """The checkpoints the API serves now plus `also` (seen before, since removed by retention)."""
    served = dict(emu.served_checkpoints())
    for c in also:
        served.setdefault(c["id"], c)
    return sorted(checkpoint_row(c) for c in served.values())


def job_row(j: Dict[str, Any]) -> tuple:
    return (j["id"], j["status"], j["created_at"], j["finished_at"], j["fine_tuned_model"], j["trained_tokens"])


def expected_jobs(emu: Emulator, only: Optional[Iterable[str]] = None) -> List[tuple]:
    ids = set(only) if only is not None else None
    return sorted(job_row(j) for j in emu.jobs.values() if ids is None or j["id"] in ids)


def loaded_job_rows(rows: Iterable[Dict[str, Any]]) -> List[tuple]:
    return sorted(
        (r["id"], r["status"], seconds(r["created_at"]), seconds(r["finished_at"]), r["fine_tuned_model"], r["trained_tokens"])
        for r in rows
    )


def open_jobs(emu: Emulator) -> List[str]:
    return [j["id"] for j in emu.jobs.values() if j["status"] not in ("succeeded", "failed", "cancelled")]
