"""A loopback HTTP server that speaks the fine-tuning list endpoints, for tests, benchmarks and the demo.

It serves `GET {root}/fine_tuning/jobs` (with `metadata[k]=v` filters), `/fine_tuning/jobs/{id}`,
`/checkpoints` and `/events`, the result files (`/files/{id}`, `/files/{id}/content`: a CSV, plain or
base64) and, for the admin key only, `/fine_tuning/checkpoints/{model}/permissions`, as the
API reference documents them: newest first, `after` + `limit` cursors with default limits (jobs and events
20, checkpoints 10), `has_more`, `first_id`/`last_id` on checkpoints only, Bearer auth, the error body
`{"error": {"message","type","param","code"}}` and 404 for unknown jobs. The `azure` flavour serves the
same under `/openai/...`, wants an `api-key` header and an `api-version` parameter, lists checkpoints
oldest first without `first_id`/`last_id`, and answers errors as `{"error": {"code","message"}}`.

A living account: `advance()` (or `--advance-every SECONDS` on the command line) adds checkpoints and
metric events, finishes and starts jobs and prunes retention. Control endpoints, at the server root (no
key): `POST /_emulator/advance`, `POST /_emulator/faults` (JSON: the `Faults` fields, e.g.
`{"server_error": 0.2, "seed": 1}`), `GET /_emulator/stats` (requests per endpoint, jobs per status).

Jobs come in the three methods (`supervised`, `dpo`, `reinforcement`), each with its own hyperparameters
under `method.<type>.hyperparameters` (only supervised jobs also carry the legacy `hyperparameters`),
metric events and result file columns.

Hooks for tests: `add_job`, `add_checkpoint`, `add_event`, `set_status`, `expire_checkpoints`,
`set_result_file`, `grant`, `revoke`,
`requests` and `count()`, `latency`, `faults` (random faults with a seed) and `script()` (the next
matching requests answer as told).
"""

from __future__ import annotations

import base64
import json
import random
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_API_KEY = "sk-emulator-0000000000000000"
DEFAULT_ADMIN_KEY = "sk-admin-emulator-000000000000"
REWARD_METRICS = ("train_reward_mean", "valid_reward_mean")  # what reinforcement jobs report instead of losses
BASE_TIME = 1_721_000_000
STEPS_PER_EPOCH = 100


@dataclass
class RequestRecord:
    method: str
    path: str
    params: Dict[str, str]
    endpoint: str  # jobs_list | job | checkpoints | events | file | file_content | permissions | other
    headers: Dict[str, str] = field(default_factory=dict)  # without the credentials


@dataclass
class Faults:
    """Per-request probabilities of transient faults. Draws come from a seeded generator."""

    rate_limit: float = 0.0  # 429 with retry-after-ms (and retry-after)
    server_error: float = 0.0  # 500 with the JSON error body
    bad_gateway_html: float = 0.0  # 502 with an HTML page, as a proxy sends
    reset: float = 0.0  # connection closed without an answer
    truncated: float = 0.0  # 200 whose JSON body is cut short
    slow: float = 0.0  # answer after `slow_seconds`
    slow_seconds: float = 0.5
    retry_after_ms: int = 1
    seed: int = 0


@dataclass
class Scripted:
    """The next `times` requests whose path contains `match` get this answer instead of the real one."""

    match: str
    status: int = 200
    body: Any = None
    headers: Dict[str, str] = field(default_factory=dict)
    action: Optional[str] = None  # "reset" | "truncate" | None
    times: int = 1


class Emulator:
    """The data and the server. Use as a context manager: `with Emulator.synthetic(5) as emu: emu.base_url`."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        admin_key: str = DEFAULT_ADMIN_KEY,
        flavour: str = "openai",
        latency: float = 0.0,
        faults: Optional[Faults] = None,
    ) -> None:
        if flavour not in ("openai", "azure"):
            raise ValueError("flavour must be 'openai' or 'azure'")
        self.api_key = api_key
        self.admin_key = admin_key
        self.flavour = flavour
        self.latency = latency
        self.faults = faults or Faults()
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.checkpoints: Dict[str, List[Dict[str, Any]]] = {}
        self.events: Dict[str, List[Dict[str, Any]]] = {}
        self.missing_checkpoints: set = set()  # listed jobs whose checkpoints answer 404
        self.files: Dict[str, Dict[str, Any]] = {}  # file id -> {"job_id", "content": bytes | None, "base64"}
        self.permissions: Dict[str, List[Dict[str, Any]]] = {}  # checkpoint model name -> permissions
        self.requests: List[RequestRecord] = []
        self.fault_log: List[str] = []
        self.on_request: Optional[Callable[[RequestRecord], None]] = None  # called for each request
        self._scripts: List[Scripted] = []
        self._lock = threading.RLock()
        self._rng = random.Random(self.faults.seed)
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._clock = BASE_TIME
        self._serial = 0
        self._ticks = 0
        self._in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once

    # -- server life ------------------------------------------------------------------------------
    def start(self) -> "Emulator":
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = LoopbackServer(("127.0.0.1", 0), handler)
        self._server.request_queue_size = 128
        self._thread = threading.Thread(target=self._server.serve_forever, name="fine-tuning-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What a client sets as base_url (OpenAI) or endpoint (Azure)."""
        root = f"http://127.0.0.1:{self.port}"
        return root if self.flavour == "azure" else f"{root}/v1"

    # -- data hooks -------------------------------------------------------------------------------
    def _next_id(self, prefix: str, rng: Optional[random.Random] = None) -> str:
        self._serial += 1
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        r = rng or random.Random(self._serial)
        return prefix + "".join(r.choice(alphabet) for _ in range(24))

    def add_job(
        self,
        *,
        job_id: Optional[str] = None,
        status: str = "running",
        created_at: Optional[int] = None,
        model: str = "gpt-4o-mini-2024-07-18",
        suffix: Optional[str] = "custom-suffix",
        n_epochs: Any = 3,
        hyperparameters: Any = "default",
        error: Any = None,
        validation: bool = True,
        trained_tokens: Optional[int] = None,
        method: str = "supervised",
        metadata: Optional[Dict[str, str]] = None,
        extra: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        with self._lock:
            if created_at is None:
                self._clock += 60
                created_at = self._clock
            job_id = job_id or self._next_id("ftjob-")
            if hyperparameters == "default":
                hyperparameters = {"n_epochs": n_epochs, "batch_size": "auto", "learning_rate_multiplier": 1.8}
            job: Dict[str, Any] = {
                "object": "fine_tuning.job",
                "id": job_id,
                "model": model,
                "created_at": created_at,
                "finished_at": None,
                "fine_tuned_model": None,
                "organization_id": "org-emulator",
                "result_files": [],
                "status": status,
                "validation_file": "file-valid" if validation else None,
                "training_file": "file-train",
                "hyperparameters": hyperparameters,
                "trained_tokens": trained_tokens,
                "error": error if error is not None else {},
                "user_provided_suffix": suffix,
                "seed": 42,
                "estimated_finish": None,
                "integrations": [],
                "metadata": metadata,
                "method": method_object(method, hyperparameters, n_epochs),
            }
            if method != "supervised":
                del job["hyperparameters"]  # "only returned for supervised jobs"
            job.update(extra or {})
            self.jobs[job_id] = job
            self.checkpoints.setdefault(job_id, [])
            self.events.setdefault(job_id, [])
            if status in ("succeeded", "failed", "cancelled"):
                self._finish(job, status)
            return job

    def _finish(self, job: Dict[str, Any], status: str) -> None:
        job["status"] = status
        job["finished_at"] = max(job["created_at"], self._last_time(job["id"])) + 30
        if status == "succeeded":
            job["fine_tuned_model"] = f"ft:{job['model']}:org-emulator:{job['user_provided_suffix'] or ''}:{job['id'][-8:]}"
            file_id = "file-" + job["id"][-20:]
            job["result_files"] = [file_id]
            self.files.setdefault(file_id, {"job_id": job["id"], "content": None, "base64": False})
            job["trained_tokens"] = job["trained_tokens"] or 1000 * max(len(self.checkpoints[job["id"]]), 1)
        if status == "failed" and not job["error"]:
            job["error"] = {"code": "invalid_training_file", "message": "The training file is invalid.", "param": "training_file"}

    def _last_time(self, job_id: str) -> int:
        times = [c["created_at"] for c in self.checkpoints.get(job_id, [])]
        return max(times) if times else 0

    def set_status(self, job_id: str, status: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            if status in ("succeeded", "failed", "cancelled"):
                self._finish(job, status)
            else:
                job["status"] = status

    def add_checkpoint(
        self,
        job_id: str,
        *,
        step: Optional[int] = None,
        metrics: Any = "default",
        final_name: bool = False,
        created_at: Optional[int] = None,
        extra: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        with self._lock:
            job = self.jobs[job_id]
            existing = self.checkpoints[job_id]
            step = step if step is not None else (len(existing) + 1) * STEPS_PER_EPOCH
            if created_at is None:
                created_at = max(job["created_at"], self._last_time(job_id)) + 600
            rng = random.Random(f"{job_id}:{step}")
            if metrics == "default" and method_type(job) == "reinforcement":
                metrics = {"step": float(step), "train_reward_mean": round(0.3 + step / (step + 200) * 0.5, 4)}
                if job["validation_file"]:
                    metrics["valid_reward_mean"] = round(0.28 + step / (step + 220) * 0.5 + rng.random() * 0.02, 4)
            elif metrics == "default":
                metrics = {
                    "step": float(step),
                    "train_loss": round(2.0 / (1 + step / 100) + rng.random() * 0.05, 4),
                    "train_mean_token_accuracy": round(0.5 + step / (step + 300) * 0.4, 4),
                }
                if job["validation_file"]:
                    metrics["valid_loss"] = round(2.1 / (1 + step / 120) + rng.random() * 0.08, 4)
                    metrics["valid_mean_token_accuracy"] = round(0.45 + step / (step + 320) * 0.4, 4)
                    metrics["full_valid_loss"] = round(2.05 / (1 + step / 110) + rng.random() * 0.06, 4)
                    metrics["full_valid_mean_token_accuracy"] = round(0.46 + step / (step + 310) * 0.4, 4)
            model_name = f"ft:{job['model']}:org-emulator:{job['user_provided_suffix'] or ''}:{job_id[-8:]}"
            checkpoint = {
                "object": "fine_tuning.job.checkpoint",
                "id": self._next_id("ftckpt_", rng),
                "created_at": created_at,
                "fine_tuned_model_checkpoint": model_name if final_name else f"{model_name}:ckpt-step-{step}",
                "fine_tuning_job_id": job_id,
                "metrics": metrics,
                "step_number": step,
            }
            checkpoint.update(extra or {})
            existing.append(checkpoint)
            return checkpoint

    def add_event(self, job_id: str, *, message: str, level: str = "info", type: str = "message",
                  data: Any = None, created_at: Optional[int] = None) -> Dict[str, Any]:
        with self._lock:
            events = self.events[job_id]
            if created_at is None:
                created_at = (events[-1]["created_at"] if events else self.jobs[job_id]["created_at"]) + 5
            event = {
                "object": "fine_tuning.job.event",
                "id": self._next_id("ftevent-", random.Random(f"{job_id}:e{len(events)}")),
                "created_at": created_at,
                "level": level,
                "message": message,
                "data": data if data is not None else {},
                "type": type,
            }
            events.append(event)
            return event

    def add_metric_events(self, job_id: str, count: int, *, total_steps: Optional[int] = None) -> None:
        """`count` metric events spread evenly over `total_steps`, on the same curves as the checkpoints."""
        total = total_steps or count
        every = max(total // max(count, 1), 1)
        start = sum(1 for e in self.events[job_id] if e["type"] == "metrics")
        for n in range(start + 1, start + count + 1):
            step = n * every
            rng = random.Random(f"{job_id}:s{step}")
            data: Dict[str, Any] = {"step": step, "total_steps": total}
            if method_type(self.jobs[job_id]) == "reinforcement":
                data["train_reward_mean"] = round(0.3 + step / (step + 200) * 0.5 + rng.random() * 0.02, 4)
                if n % 5 == 0 and self.jobs[job_id]["validation_file"]:
                    data["valid_reward_mean"] = round(0.28 + step / (step + 220) * 0.5, 4)
                self.add_event(job_id, message=f"Step {step}/{total}: mean reward={data['train_reward_mean']}", type="metrics", data=data)
                continue
            data["train_loss"] = round(2.0 / (1 + step / 100) + rng.random() * 0.08, 4)
            data["train_mean_token_accuracy"] = round(0.5 + step / (step + 300) * 0.4 + rng.random() * 0.01, 4)
            if n % 5 == 0 and self.jobs[job_id]["validation_file"]:
                data["valid_loss"] = round(2.1 / (1 + step / 120) + rng.random() * 0.08, 4)
                data["valid_mean_token_accuracy"] = round(0.45 + step / (step + 320) * 0.4, 4)
            self.add_event(job_id, message=f"Step {step}/{total}: training loss={data['train_loss']}", type="metrics", data=data)

    def expire_checkpoints(self, job_id: str, keep_last: int = 3) -> List[Dict[str, Any]]:
        """Retention: the API keeps only the last epochs' checkpoints. Returns what was dropped."""
        with self._lock:
            kept = self.checkpoints[job_id]
            dropped, self.checkpoints[job_id] = kept[:-keep_last] if keep_last else kept, kept[-keep_last:] if keep_last else []
            return dropped

    def set_result_file(self, job_id: str, content: Any, *, base64_encoded: bool = False) -> str:
        """Serve `content` (text or bytes) as the job's result file, base64-encoded when asked. Returns its id."""
        with self._lock:
            job = self.jobs[job_id]
            file_id = job["result_files"][0] if job["result_files"] else "file-" + job_id[-20:]
            job["result_files"] = [file_id]
            raw = content.encode() if isinstance(content, str) else content
            self.files[file_id] = {"job_id": job_id, "content": raw, "base64": base64_encoded}
            return file_id

    def result_csv(self, job_id: str) -> str:
        """The step-level CSV of a job, as the result file serves it (decoded): one row per step, the
        validation columns filled every 10th step; reinforcement jobs report rewards instead of losses."""
        with self._lock:
            file_id = self.jobs[job_id]["result_files"][0]
            stored = self.files[file_id]["content"]
            if stored is not None:
                return stored.decode()
            last = max((c["step_number"] for c in self.checkpoints[job_id]), default=0) or STEPS_PER_EPOCH
            reinforcement = method_type(self.jobs[job_id]) == "reinforcement"
            header = ["step", *REWARD_METRICS] if reinforcement else [
                "step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
            lines = [",".join(header)]
            for step in range(1, last + 1):
                rng = random.Random(f"{job_id}:r{step}")
                validated = step % 10 == 0 and self.jobs[job_id]["validation_file"]
                if reinforcement:
                    values = [round(0.3 + step / (step + 200) * 0.5 + rng.random() * 0.02, 4),
                              round(0.28 + step / (step + 220) * 0.5, 4) if validated else ""]
                else:
                    values = [round(2.0 / (1 + step / 100) + rng.random() * 0.1, 5),
                              round(0.5 + step / (step + 300) * 0.4 + rng.random() * 0.01, 5),
                              round(2.1 / (1 + step / 120) + rng.random() * 0.08, 5) if validated else "",
                              round(0.45 + step / (step + 320) * 0.4, 5) if validated else ""]
                lines.append(",".join(str(v) for v in [step, *values]))
            return "\n".join(lines) + "\n"

    def grant(self, model: str, project_id: str, *, created_at: Optional[int] = None) -> Dict[str, Any]:
        """Share a checkpoint model with a project (what `POST .../permissions` does)."""
        with self._lock:
            permissions = self.permissions.setdefault(model, [])
            permission = {
                "object": "checkpoint.permission",
                "id": self._next_id("cp_", random.Random(f"{model}:{project_id}:{len(permissions)}")),
                "created_at": created_at or BASE_TIME + len(permissions) * 60,
                "project_id": project_id,
            }
            permissions.append(permission)
            return permission

    def revoke(self, model: str, permission_id: str) -> None:
        with self._lock:
            self.permissions[model] = [p for p in self.permissions.get(model, []) if p["id"] != permission_id]

    def script(self, match: str, *, status: int = 200, body: Any = None, headers: Optional[Dict[str, str]] = None,
               action: Optional[str] = None, times: int = 1) -> None:
        with self._lock:
            self._scripts.append(Scripted(match, status, body, dict(headers or {}), action, times))

    def count(self, endpoint: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if endpoint is None or r.endpoint == endpoint)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.fault_log.clear()
            self.max_in_flight = 0

    # -- synthetic data ---------------------------------------------------------------------------
    @classmethod
    def synthetic(cls, n_jobs: int = 12, *, checkpoints_per_job: int = 3, events_per_job: int = 0,
                  seed: int = 7, open_jobs: Optional[int] = None, **kwargs: Any) -> "Emulator":
        """Deterministic data with the API's quirks: optional metrics missing, a final checkpoint named
        without `:ckpt-step-N`, `n_epochs` as a number or "auto", `error: {}`, `hyperparameters: null`,
        open statuses (`running`, `paused`, `queued`), failed and cancelled jobs, two jobs created in the
        same second, retention having dropped early checkpoints of one job, a DPO and a reinforcement job
        in every 12, a result file served base64-encoded and a checkpoint shared with two projects. With `open_jobs`, every
        job has succeeded but the newest `open_jobs`, which are running (as in a large, real account)."""
        emu = cls(**kwargs)
        rng = random.Random(seed)
        statuses = ["succeeded"] * 6 + ["failed", "cancelled", "running", "paused", "queued", "succeeded"]
        for i in range(n_jobs):
            status = statuses[i % len(statuses)]
            if open_jobs is not None:
                status = "running" if i >= n_jobs - open_jobs else "succeeded"
            created_at = BASE_TIME + i * 3600 - (3600 if i == 1 else 0)  # jobs 0 and 1 tie on created_at
            n_ckpt = 0 if status == "queued" else checkpoints_per_job + (2 if i == 2 else 0)
            method = {3: "dpo", 11: "reinforcement"}.get(i % 12, "supervised") if open_jobs is None else "supervised"
            job = emu.add_job(
                job_id="ftjob-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24)),
                method=method,
                metadata={"experiment": "sweep-a" if i % 2 == 0 else "sweep-b"},
                status="running" if status != "queued" else "queued",
                created_at=created_at,
                n_epochs="auto" if i % 3 == 0 else n_ckpt or 3,
                hyperparameters=None if i % 7 == 5 else "default",
                validation=i % 4 != 1,
                suffix=None if i % 5 == 4 else f"run-{i}",
            )
            for k in range(n_ckpt):
                emu.add_checkpoint(job["id"], final_name=(k == n_ckpt - 1 and status == "succeeded" and i % 2 == 0))
            if events_per_job:
                emu.add_event(job["id"], message="Fine-tuning job started")
                emu.add_metric_events(job["id"], events_per_job, total_steps=max(n_ckpt, 1) * STEPS_PER_EPOCH)
            if i == 2:
                emu.expire_checkpoints(job["id"], keep_last=checkpoints_per_job)
            if status not in ("running", "queued"):
                emu.set_status(job["id"], status)
            if i % 12 == 4 and status == "succeeded":
                emu.files[job["result_files"][0]]["base64"] = True  # seen served base64-encoded too
            if i % 12 == 0 and status == "succeeded":
                final = emu.checkpoints[job["id"]][-1]["fine_tuned_model_checkpoint"]
                emu.grant(final, "proj_emulator_shared")
                emu.grant(final, "proj_emulator_eval")
        return emu

    def served_checkpoints(self) -> Dict[str, Dict[str, Any]]:
        """Every checkpoint the API serves now, by id."""
        with self._lock:
            return {c["id"]: c for job_id, cs in self.checkpoints.items() if job_id not in self.missing_checkpoints for c in cs}

    # -- request handling -------------------------------------------------------------------------
    def sorted_jobs(self) -> List[Dict[str, Any]]:
        """The jobs as the list endpoint serves them: newest first (ties: the order they were added)."""
        return self._sorted_jobs()

    def _sorted_jobs(self) -> List[Dict[str, Any]]:
        order = {job_id: n for n, job_id in enumerate(self.jobs)}
        return sorted(self.jobs.values(), key=lambda j: (j["created_at"] or 0, order[j["id"]]), reverse=True)

    # -- a living account -----------------------------------------------------------------------
    def advance(self) -> Dict[str, int]:
        """One tick of a real account: every running job gets a checkpoint (and its metric events); a
        running job with 3 or more checkpoints finishes (succeeded, or now and then failed); retention
        keeps the last 3 checkpoints; a new job starts. Returns what changed."""
        with self._lock:
            changed = {"checkpoints_added": 0, "jobs_finished": 0, "jobs_started": 0, "checkpoints_pruned": 0}
            self._ticks += 1
            for job in [j for j in self.jobs.values() if j["status"] == "running"]:
                self.add_checkpoint(job["id"])
                changed["checkpoints_added"] += 1
                if self.events.get(job["id"]):
                    self.add_metric_events(job["id"], 5)
                if len(self.checkpoints[job["id"]]) >= 3 and (self._ticks + len(job["id"])) % 2 == 0:
                    self.set_status(job["id"], "failed" if self._ticks % 7 == 0 else "succeeded")
                    changed["checkpoints_pruned"] += len(self.expire_checkpoints(job["id"], keep_last=3))
                    changed["jobs_finished"] += 1
            job = self.add_job(status="running", suffix=f"live-{self._ticks}")
            self.add_event(job["id"], message="Fine-tuning job started")
            changed["jobs_started"] += 1
            return changed

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            by_endpoint: Dict[str, int] = {}
            for record in self.requests:
                by_endpoint[record.endpoint] = by_endpoint.get(record.endpoint, 0) + 1
            statuses: Dict[str, int] = {}
            for job in self.jobs.values():
                statuses[job["status"]] = statuses.get(job["status"], 0) + 1
            return {"requests": by_endpoint, "jobs": statuses,
                    "checkpoints_served": sum(len(c) for c in self.checkpoints.values()),
                    "faults": {k: v for k, v in vars(self.faults).items()}}

    def _control(self, method: str, action: str, body: bytes) -> Tuple[int, Any]:
        """`POST /_emulator/advance`, `POST /_emulator/faults` (a JSON object of `Faults` fields),
        `GET /_emulator/stats`: for people and BI demos watching the data change (no key needed)."""
        if method == "POST" and action == "advance":
            return 200, self.advance()
        if method == "POST" and action == "faults":
            try:
                fields = json.loads(body or b"{}")
                faults = Faults(**fields)
            except (ValueError, TypeError) as exc:
                return 400, self._error(f"Invalid faults: {exc}", "invalid_request_error", None)
            with self._lock:
                self.faults = faults
                self._rng = random.Random(faults.seed)
            return 200, vars(faults)
        if method == "GET" and action == "stats":
            return 200, self.stats()
        return 404, self._error(f"Invalid URL ({method} /_emulator/{action})", "invalid_request_error", None)

    def handle(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes = b"") -> Tuple[int, Dict[str, str], Any, Optional[str]]:
        """Returns (status, headers, body, action)."""
        parts = urlsplit(raw_path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = unquote(parts.path)
        if path.startswith("/_emulator/"):
            status, answer = self._control(method, path[len("/_emulator/"):], body)
            return status, {}, answer, None
        root = "/openai" if self.flavour == "azure" else "/v1"
        endpoint, job_id = "other", None
        if path.startswith(root + "/files/"):
            segments = path[len(root + "/files/"):].strip("/").split("/")
            if len(segments) == 1 or (len(segments) == 2 and segments[1] == "content"):
                endpoint, job_id = ("file" if len(segments) == 1 else "file_content"), segments[0]
        elif path.startswith(root + "/fine_tuning/checkpoints/") and path.endswith("/permissions"):
            endpoint, job_id = "permissions", path[len(root + "/fine_tuning/checkpoints/"):-len("/permissions")]
        elif path.startswith(root + "/fine_tuning/jobs"):
            rest = path[len(root + "/fine_tuning/jobs"):].strip("/")
            segments = rest.split("/") if rest else []
            if not segments:
                endpoint = "jobs_list"
            elif len(segments) == 1:
                endpoint, job_id = "job", segments[0]
            elif len(segments) == 2 and segments[1] in ("checkpoints", "events"):
                endpoint, job_id = segments[1], segments[0]
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return self._answer(method, raw_path, path, params, endpoint, job_id, headers)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, method: str, raw_path: str, path: str, params: Dict[str, str], endpoint: str,
                job_id: Optional[str], headers: Dict[str, str]) -> Tuple[int, Dict[str, str], Any, Optional[str]]:
        safe_headers = {k: v for k, v in headers.items() if k not in ("authorization", "api-key")}
        record = RequestRecord(method, path, params, endpoint, safe_headers)
        if self.on_request is not None:
            self.on_request(record)
        with self._lock:
            self.requests.append(record)
            scripted = next((s for s in self._scripts if s.match in raw_path), None)
            if scripted is not None:
                scripted.times -= 1
                if scripted.times <= 0:
                    self._scripts.remove(scripted)
            fault = self._draw_fault()
        request_id = f"req_{len(self.requests):06d}"
        base_headers = {"x-request-id": request_id}
        if self.latency:
            time.sleep(self.latency)
        if scripted is not None:
            return scripted.status, {**base_headers, **scripted.headers}, scripted.body, scripted.action
        if fault is not None and fault[3] == "slow":
            time.sleep(self.faults.slow_seconds)
        elif fault is not None:
            return fault[0], {**base_headers, **fault[1]}, fault[2], fault[3]
        auth_error = self._check_auth(headers, params, admin=endpoint == "permissions")
        if auth_error is not None:
            return auth_error[0], base_headers, auth_error[1], None
        if method != "GET" or endpoint == "other":
            return 404, base_headers, self._error(f"Invalid URL ({method} {path})", "invalid_request_error", None), None
        with self._lock:
            status, body = self._route(endpoint, job_id, params)
        if endpoint == "file_content" and status == 200:
            return status, {**base_headers, "content-type": "text/csv"}, body, None
        return status, base_headers, body, None

    def _draw_fault(self) -> Optional[Tuple[int, Dict[str, str], Any, Optional[str]]]:
        f = self.faults
        r = self._rng.random()
        for probability, name in (
            (f.rate_limit, "rate_limit"), (f.server_error, "server_error"), (f.bad_gateway_html, "bad_gateway_html"),
            (f.reset, "reset"), (f.truncated, "truncated"), (f.slow, "slow"),
        ):
            if r < probability:
                self.fault_log.append(name)
                if name == "rate_limit":
                    return 429, {"retry-after-ms": str(f.retry_after_ms), "retry-after": "1"}, self._error(
                        "Rate limit reached for requests", "requests", "rate_limit_exceeded"), None
                if name == "server_error":
                    return 500, {}, self._error("The server had an error while processing your request.", "server_error", None), None
                if name == "bad_gateway_html":
                    return 502, {"content-type": "text/html"}, "<html><body><h1>502 Bad Gateway</h1></body></html>", None
                if name == "reset":
                    return 0, {}, None, "reset"
                if name == "truncated":
                    return 200, {}, None, "truncate"
                if name == "slow":
                    return -1, {}, None, "slow"
            r -= probability
        return None

    def _check_auth(self, headers: Dict[str, str], params: Dict[str, str], *, admin: bool = False) -> Optional[Tuple[int, Any]]:
        if admin:
            given = headers.get("authorization")
            if given == f"Bearer {self.admin_key}":
                return None
            if given == f"Bearer {self.api_key}":
                return 403, self._error("This endpoint requires an admin API key.", "invalid_request_error", "insufficient_permissions")
            return 401, self._error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.flavour == "azure":
            if headers.get("api-key") != self.api_key:
                return 401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}
            if not params.get("api-version"):
                return 404, {"error": {"code": "404", "message": "Resource not found"}}
            return None
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, self._error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    def _error(self, message: str, type_: Optional[str], code: Optional[str], param: Optional[str] = None) -> Dict[str, Any]:
        if self.flavour == "azure":
            return {"error": {"code": code or type_ or "error", "message": message}}
        return {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def _route(self, endpoint: str, job_id: Optional[str], params: Dict[str, str]) -> Tuple[int, Any]:
        if endpoint == "jobs_list":
            jobs = self._sorted_jobs()
            filters = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[") and k.endswith("]")}
            if filters:
                jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in filters.items())]
            return self._page(jobs, params, default_limit=20, ids=False)
        if endpoint in ("file", "file_content"):
            return self._file(endpoint, str(job_id))
        if endpoint == "permissions":
            items = sorted(self.permissions.get(str(job_id), []), key=lambda p: p["created_at"], reverse=params.get("order") != "ascending")
            return self._page(items, params, default_limit=10, ids=True)
        if job_id not in self.jobs:
            return 404, self._error(f"No such fine-tuning job: {job_id}", "invalid_request_error", "fine_tune_not_found", "fine_tuning_job_id")
        if endpoint == "job":
            return 200, self.jobs[job_id]
        if endpoint == "checkpoints":
            if job_id in self.missing_checkpoints:
                return 404, self._error(f"No such fine-tuning job: {job_id}", "invalid_request_error", "fine_tune_not_found")
            items = sorted(self.checkpoints[job_id], key=lambda c: c["step_number"], reverse=self.flavour != "azure")
            return self._page(items, params, default_limit=10, ids=self.flavour != "azure")
        items = list(reversed(self.events[job_id]))
        return self._page(items, params, default_limit=20, ids=False)

    def _file(self, endpoint: str, file_id: str) -> Tuple[int, Any]:
        stored = self.files.get(file_id)
        if stored is None:
            return 404, self._error(f"No such File object: {file_id}", "invalid_request_error", None, "id")
        content = self.result_csv(stored["job_id"]).encode()
        if stored["base64"]:
            content = base64.b64encode(content)
        if endpoint == "file_content":
            return 200, content
        created = self.jobs[stored["job_id"]]["finished_at"] or BASE_TIME
        return 200, {"object": "file", "id": file_id, "purpose": "fine-tune-results", "filename": "step_metrics.csv",
                     "bytes": len(content), "created_at": created, "status": "processed"}

    def _page(self, items: List[Dict[str, Any]], params: Dict[str, str], *, default_limit: int, ids: bool) -> Tuple[int, Any]:
        try:
            limit = int(params.get("limit", default_limit))
        except ValueError:
            return 400, self._error("Invalid 'limit': expected an integer.", "invalid_request_error", "invalid_value", "limit")
        if limit < 1:
            return 400, self._error("Invalid 'limit': must be at least 1.", "invalid_request_error", "invalid_value", "limit")
        start = 0
        after = params.get("after")
        if after:
            position = next((n for n, item in enumerate(items) if item["id"] == after), None)
            start = len(items) if position is None else position + 1
        page = items[start:start + limit]
        body: Dict[str, Any] = {"object": "list", "data": page, "has_more": start + limit < len(items)}
        if ids:
            body["first_id"] = page[0]["id"] if page else None
            body["last_id"] = page[-1]["id"] if page else None
        return 200, body


def method_type(job: Dict[str, Any]) -> str:
    method = job.get("method")
    return str(method.get("type")) if isinstance(method, dict) else "supervised"


def method_object(method: str, hyperparameters: Any, n_epochs: Any) -> Dict[str, Any]:
    """`method` as the API serves it: the type and, under its name, that method's hyperparameters."""
    if method == "supervised":
        return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}} if hyperparameters else {"type": "supervised"}
    if method == "dpo":
        return {"type": "dpo", "dpo": {"hyperparameters": {
            "beta": 0.1, "batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": n_epochs}}}
    if method == "reinforcement":
        return {"type": "reinforcement", "reinforcement": {
            "grader": {"type": "string_check", "name": "exact_answer", "input": "{{sample.output_text}}",
                       "reference": "{{item.answer}}", "operation": "eq"},
            "hyperparameters": {"n_epochs": n_epochs, "batch_size": 8, "learning_rate_multiplier": 1.0,
                                "reasoning_effort": "medium", "compute_multiplier": "auto",
                                "eval_interval": 5, "eval_samples": "auto"}}}
    return {"type": method, method: {"hyperparameters": {"n_epochs": n_epochs}, "settings": {"mode": "future"}}}


class LoopbackServer(ThreadingHTTPServer):
    """A threaded server whose clients may drop a connection at any time (a read timeout, a closed pool):
    a reset or broken pipe ends that connection quietly instead of printing a traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    emulator: Emulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stalls

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        request_body = self.rfile.read(length) if length else b""
        status, extra_headers, body, action = self.emulator.handle(method, self.path, headers, request_body)
        if action == "reset":
            # RST instead of FIN: the client sees a connection reset.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if isinstance(body, (bytes, str)):
            payload = body.encode() if isinstance(body, str) else body
            content_type = extra_headers.pop("content-type", "text/plain")
        else:
            payload = json.dumps(body).encode()
            content_type = extra_headers.pop("content-type", "application/json")
        if action == "truncate":
            payload = (json.dumps({"object": "list", "data": [{"id": "x"}], "has_more": True}).encode())[:25]
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            for key, value in extra_headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a read timeout): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr logging
        return


def main(argv: Optional[List[str]] = None) -> None:
    """`python -m openai_fine_tuning.emulator`: serve synthetic data until Ctrl-C, e.g. to point
    `openai-fine-tuning load` (OPENAI_BASE_URL, OPENAI_API_KEY) or your own code at it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m openai_fine_tuning.emulator", description=main.__doc__)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--checkpoints", type=int, default=3, help="checkpoints per job")
    parser.add_argument("--events", type=int, default=20, help="metric events per job")
    parser.add_argument("--flavour", choices=["openai", "azure"], default="openai")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--advance-every", type=float, default=0.0, metavar="SECONDS",
                        help="let the account live: every SECONDS add checkpoints, finish and start jobs, prune retention")
    args = parser.parse_args(argv)
    emulator = Emulator.synthetic(args.jobs, checkpoints_per_job=args.checkpoints, events_per_job=args.events,
                                  flavour=args.flavour, api_key=args.api_key, latency=args.latency)
    with emulator:
        variable = "AZURE_OPENAI_ENDPOINT" if args.flavour == "azure" else "OPENAI_BASE_URL"
        key_variable = "AZURE_OPENAI_API_KEY" if args.flavour == "azure" else "OPENAI_API_KEY"
        sys.stdout.write(f"export {variable}={emulator.base_url} {key_variable}={emulator.api_key}\n")
        sys.stdout.flush()
        try:
            stop = threading.Event()
            while not stop.wait(args.advance_every or None):
                emulator.advance()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
