"""The emulated account's data: jobs, checkpoints, events, result files and checkpoint permissions, with
the hooks tests use to shape it. Thread safe (one lock); the router reads it while tests change it."""

from __future__ import annotations

import operator
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

BASE_TIME = 1_721_000_000
STEPS_PER_EPOCH = 100
REWARD_METRICS = ("train_reward_mean", "valid_reward_mean")  # what reinforcement jobs report instead of losses


class Store:
    """The data of one emulated account. `order` (when set) replaces the order the jobs list serves,
    e.g. to serve it out of order."""

    def __init__(self) -> None:
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.checkpoints: Dict[str, List[Dict[str, Any]]] = {}
        self.events: Dict[str, List[Dict[str, Any]]] = {}
        self.missing_checkpoints: set = set()  # listed jobs whose checkpoints answer 404
        self.files: Dict[str, Dict[str, Any]] = {}  # file id -> {"job_id", "content": bytes | None, "base64"}
        self.permissions: Dict[str, List[Dict[str, Any]]] = {}  # checkpoint model name -> permissions
        self.order: Optional[Callable[[List[Dict[str, Any]]], List[Dict[str, Any]]]] = None
        self.lock = threading.RLock()
        self._clock = BASE_TIME
        self._serial = 0
        self._listing: Optional[JobsListing] = None  # the jobs newest first, kept while they do not change
        self._generation = 0  # jobs added through the store

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
        with self.lock:
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
            self._generation += 1
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
        with self.lock:
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
        with self.lock:
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
        with self.lock:
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
        with self.lock:
            kept = self.checkpoints[job_id]
            dropped, self.checkpoints[job_id] = kept[:-keep_last] if keep_last else kept, kept[-keep_last:] if keep_last else []
            return dropped

    def set_result_file(self, job_id: str, content: Any, *, base64_encoded: bool = False) -> str:
        """Serve `content` (text or bytes) as the job's result file, base64-encoded when asked. Returns its id."""
        with self.lock:
            job = self.jobs[job_id]
            file_id = job["result_files"][0] if job["result_files"] else "file-" + job_id[-20:]
            job["result_files"] = [file_id]
            raw = content.encode() if isinstance(content, str) else content
            self.files[file_id] = {"job_id": job_id, "content": raw, "base64": base64_encoded}
            return file_id

    def result_csv(self, job_id: str) -> str:
        """The step-level CSV of a job, as the result file serves it (decoded): one row per step, the
        validation columns filled every 10th step; reinforcement jobs report rewards instead of losses."""
        with self.lock:
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
        with self.lock:
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
        with self.lock:
            self.permissions[model] = [p for p in self.permissions.get(model, []) if p["id"] != permission_id]


    def served_checkpoints(self) -> Dict[str, Dict[str, Any]]:
        """Every checkpoint the API serves now, by id."""
        with self.lock:
            return {c["id"]: c for job_id, cs in self.checkpoints.items() if job_id not in self.missing_checkpoints for c in cs}

    def sorted_jobs(self) -> List[Dict[str, Any]]:
        """The jobs as the list endpoint serves them: newest first (ties: the order they were added), or as
        `order` rearranges them."""
        with self.lock:
            jobs = list(self._newest_first(paging=False).jobs)
        return self.order(jobs) if self.order is not None else jobs

    def jobs_listing(self, *, paging: bool) -> "JobsListing":
        """The jobs newest first with an index of their positions, for the list endpoint without `order`.

        The sorted list is kept between requests. A first page (`paging=False`) checks every job: any job
        added, removed, replaced or given another `created_at`, through the store or in `jobs` directly,
        sorts the list again. A later page (`paging=True`, a request with `after`) checks only what costs
        nothing: jobs added through the store, `jobs` replaced, or its size changed. So a `created_at`
        edited in place between two pages of one listing shows from the next listing's first page. Checking
        every job for every page cost 0.2 s a page at 100,000 jobs, and sorting them 0.5 s."""
        with self.lock:
            return self._newest_first(paging=paging)

    def _newest_first(self, *, paging: bool) -> "JobsListing":
        cached = self._listing
        if cached is not None and cached.source is self.jobs and cached.generation == self._generation \
                and len(cached.values) == len(self.jobs) and (paging or cached.matches(self.jobs)):
            return cached
        values = list(self.jobs.values())
        added = {id(job): n for n, job in enumerate(values)}
        jobs = sorted(values, key=lambda j: (j["created_at"] or 0, added[id(j)]), reverse=True)
        self._listing = JobsListing(self.jobs, self._generation, values, list(map(_CREATED_AT, values)), jobs)
        return self._listing


_CREATED_AT = operator.itemgetter("created_at")


@dataclass
class JobsListing:
    """The jobs newest first, as sorted from `values` (the jobs in the order they were added) whose
    `created_at` were `created` then."""

    source: Dict[str, Dict[str, Any]]
    generation: int
    values: List[Dict[str, Any]]
    created: List[Any]
    jobs: List[Dict[str, Any]]
    _positions: Optional[Dict[str, int]] = None  # job id -> index in `jobs`, built at the first `after`

    def matches(self, jobs: Dict[str, Dict[str, Any]]) -> bool:
        """Whether `jobs` still holds the same job objects, in the same order, with the same `created_at`."""
        values = list(jobs.values())
        return len(values) == len(self.values) and all(map(operator.is_, values, self.values)) \
            and list(map(_CREATED_AT, values)) == self.created

    def position(self, job_id: str) -> Optional[int]:
        """Where a job stands in `jobs` (None: not there)."""
        if self._positions is None:
            self._positions = {job["id"]: n for n, job in enumerate(self.jobs)}
        found = self._positions.get(job_id)
        return found if found is not None and self.jobs[found]["id"] == job_id else None


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


