"""The emulated OpenAI fine-tuning API, for tests, benchmarks and the demo: on a loopback HTTP server, or
in-process as an httpx transport (`Emulator.transport()`, no socket).

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
`set_result_file`, `grant`, `revoke`, `order` (rearrange the jobs list), `requests` and `count()`,
`latency`, `faults` (random faults with a seed; assigning restarts the generator) and `script()` (the
next matching requests answer as told).

One module per job: `store.py` (the data and its hooks), `synthetic.py` (a synthetic account, `advance`),
`router.py` (a request in, an answer out; also the in-process transport), `faults.py` (scripted and
random faults), `server.py` (the loopback server and the `Emulator` that puts them together).
"""

from __future__ import annotations

from .faults import Faults, Scripted
from .router import RequestRecord, Router
from .server import DEFAULT_ADMIN_KEY, DEFAULT_API_KEY, Emulator, LoopbackServer, main
from .store import BASE_TIME, REWARD_METRICS, STEPS_PER_EPOCH, Store, method_object, method_type

__all__ = [
    "BASE_TIME", "DEFAULT_ADMIN_KEY", "DEFAULT_API_KEY", "REWARD_METRICS", "STEPS_PER_EPOCH", "Emulator", "Faults",
    "LoopbackServer", "RequestRecord", "Router", "Scripted", "Store", "main", "method_object", "method_type",
]
