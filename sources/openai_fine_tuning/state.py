"""The incremental state: typed, versioned, behind one accessor.

It lives in dlt's source state, so it is saved in the pipeline folder and in the destination
(`_dlt_pipeline_state`) with every load, and restored by later versions of this package on other
machines. Layout of version 7:

    {"version": 7,
     "projects": {<project name>: {
         "reconciled_at": <unix seconds of the last complete reconciliation> | null,
         "permissions_read_at": <unix seconds of the last complete pass over checkpoint permissions> | null,
         "relist_checkpoints": <true until the finished jobs' checkpoints were listed once more> (absent: false),
         "listing": {"after": <id of the last job listed> | null, "pages": <pages listed>,  # (absent: none paused)
                     "newest": <frontier candidate> | null, "previous": <created_at of the last job placed> | null,
                     "ordered", "reconcile", "backfill", "resources": [<resources it plans for>]},
         "resources": {<"jobs" | "checkpoints" | "events" | "step_metrics">: {
             "frontier": {"id", "created_at", "peers": [ids created in that same second]} | null,
             "ordered": true,            # false once the jobs list was seen out of order: read it whole
             "open": {<job id>: {"misses": <404s in a row>, "failures": <failed reads in a row>,
                                 "newest_id": <newest event id loaded> | null,
                                 "digests": <base64: 9 bytes a row, see `row_digests`>}},
             "todo": [{"id", "status", "kind", "result_files",     # (absent: empty)
                       "after", "newest_id"}],                  # (events read in part; absent: none)
             "unlisted": [<open job ids the paused listing has not listed yet>]}}}}}  # (absent: none paused)

The digests of an open job's rows tell the summary which re-read rows changed (dlt cannot after a merge):
per row, 4 bytes of a hash of its id and the first 5 bytes of its content hash (`rows.row_hash`), packed
into one base64 text (12 characters a row; two rows of one job whose ids share a key only blur the
summary's counts, never the data).
`todo` holds the jobs a sliced run listed but left for its next slice: the listing goes on past them
(and moves the frontier past them when it ends), so they are read from here first (by the next slice of the same
`load`, or by the next run after a run stopped between slices). A job whose events a slice read only in
part (a slice of events ends at a page, not at a job) keeps `after`, the id of the last event committed,
where its next read goes on, and `newest_id`, the newest event of the job's first page, which becomes the
open entry's `newest_id` once the job was read to its end (until then that entry keeps the previous one,
where the read stops).
`listing` is a jobs listing that a sliced run paused between pages when its slice was full: each slice
lists only the pages it reads, so no slice holds every job of a large account. The next slice (or the next
run, after a run stopped between slices) goes on after `after`, with the order check (`previous`,
`ordered`), the frontier candidate (`newest`, the newest job of the first page) and the kind of listing
(`reconcile`, `backfill`) of the slice that started it; the frontier moves once the listing ends. Each
resource's `unlisted` holds its open jobs that the listing has not served yet: those it still has not
served by its end are looked up by id, as they are after a listing in one slice.

Version 1 (releases up to 0.1.0) had no `version` key and kept the resources directly under the project.
Version 2 had no `permissions_read_at` and no `relist_checkpoints`; version 3 no `todo`; version 5 no
`after` and `newest_id` in `todo` (it read as version 6 with none: a slice ended at a job); version 6 no
`listing` and `unlisted` (a slice listed every page: it reads as version 7 with no listing paused); versions 1 to 4
kept `"hashes": {<row id>: <16 hex digits>}` per open job (about 300 bytes an open job with 3 checkpoints,
3.0 MB at 10,000), read into the same digests. Checkpoints loaded before version 3
have no `last_listed_at`: migrating a project that loaded checkpoints sets `relist_checkpoints`, and the
next run lists each finished job's checkpoints once more (one request per job, once), after which every
checkpoint says whether the job's latest listing still served it. `read_state` migrates them all; a
state of a newer version, or one that does not have this shape, raises `StateError` (exit 2) with the fix.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, MutableMapping, Optional

from .exceptions import StateError
from .stats import NEW, REREAD

STATE_VERSION = 7
FULL_REFRESH_HINT = "run `openai-fine-tuning load --full-refresh` to rebuild it (it re-reads the API and merges; no row is dropped)"


@dataclass
class Frontier:
    """The newest job of the last complete, unfiltered listing."""

    id: str
    created_at: float
    peers: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "peers": list(self.peers)}


@dataclass
class OpenJob:
    """A job that must be read again: not finished, not read completely, or failing."""

    misses: int = 0
    failures: int = 0
    newest_id: Optional[str] = None
    hashes: Optional[Dict[str, str]] = None  # row key -> content token (`row_digests`); None: never recorded (0.1.0)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.hashes is not None:
            packed = b"".join(bytes.fromhex(key + token) for key, token in self.hashes.items())
            out["digests"] = base64.b64encode(packed).decode()
        if self.misses:
            out["misses"] = self.misses
        if self.failures:
            out["failures"] = self.failures
        if self.newest_id:
            out["newest_id"] = self.newest_id
        return out


_KEY_BYTES, _TOKEN_BYTES = 4, 5


def row_key(row_id: str) -> str:
    """The key of a row in an open job's digests: 4 bytes of a hash of its id, as hex."""
    return hashlib.blake2b(row_id.encode(), digest_size=_KEY_BYTES).hexdigest()


def row_token(digest: str) -> str:
    """What the digests keep of a row's content hash (`rows.row_hash`): its first 5 bytes, as hex."""
    return digest[: 2 * _TOKEN_BYTES]


def row_digests(hashes: Mapping[str, str]) -> Dict[str, str]:
    """{row id: content hash} -> the digests an open job keeps: {row key: content token}."""
    return {row_key(row_id): row_token(digest) for row_id, digest in hashes.items()}


KNOWN = "known"  # a job read before and still open: its rows are compared with their hashes
RELIST = "relist"  # a finished job whose checkpoints are listed once more (the upgrade to state version 3)
TODO_KINDS = (NEW, KNOWN, REREAD, RELIST)  # how the rows of a job in `todo` count in the summary


@dataclass
class TodoJob:
    """A job planned by a sliced run and left for its next slice: what reading it needs of the job."""

    id: str
    status: Optional[str] = None
    kind: str = NEW  # one of TODO_KINDS
    result_files: List[str] = field(default_factory=list)
    after: Optional[str] = None  # events read in part: the last event id committed, where reading goes on
    newest_id: Optional[str] = None  # ... and the newest event id of that read (the job's next stop)

    def job(self) -> Dict[str, Any]:
        return {"id": self.id, "status": self.status, "result_files": list(self.result_files)}

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"id": self.id, "status": self.status, "kind": self.kind}
        if self.result_files:
            out["result_files"] = list(self.result_files)
        if self.after:
            out["after"] = self.after
        if self.newest_id:
            out["newest_id"] = self.newest_id
        return out


@dataclass
class ResourceState:
    frontier: Optional[Frontier] = None
    ordered: bool = True
    open: Dict[str, OpenJob] = field(default_factory=dict)
    todo: List[TodoJob] = field(default_factory=list)
    unlisted: Optional[List[str]] = None  # while a listing is paused: open jobs it has not served yet

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "frontier": self.frontier.to_dict() if self.frontier else None,
            "ordered": self.ordered,
            "open": {job_id: entry.to_dict() for job_id, entry in self.open.items()},
        }
        if self.todo:
            out["todo"] = [item.to_dict() for item in self.todo]
        if self.unlisted is not None:
            out["unlisted"] = list(self.unlisted)
        return out


@dataclass
class PausedListing:
    """A jobs listing a sliced run paused between pages (its slice was full): where the next slice goes on."""

    after: Optional[str]  # the id of the last job listed: the next page asks for the jobs after it (None: none yet)
    pages: int  # pages listed so far (`max_pages` counts them all)
    newest: Optional[Frontier]  # the frontier candidate: the newest plausible job listed
    previous: Optional[float]  # created_at of the last job placed (the order check goes on from it)
    ordered: bool
    reconcile: bool
    backfill: bool
    resources: List[str]  # the resources that plan from it; a run that plans for others lists from the top

    def to_dict(self) -> Dict[str, Any]:
        return {
            "after": self.after, "pages": self.pages, "newest": self.newest.to_dict() if self.newest else None,
            "previous": self.previous, "ordered": self.ordered, "reconcile": self.reconcile,
            "backfill": self.backfill, "resources": list(self.resources),
        }


@dataclass
class ProjectState:
    resources: Dict[str, ResourceState] = field(default_factory=dict)
    reconciled_at: Optional[float] = None
    permissions_read_at: Optional[float] = None
    relist_checkpoints: bool = False
    listing: Optional[PausedListing] = None

    def resource(self, name: str) -> ResourceState:
        return self.resources.setdefault(name, ResourceState())

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "reconciled_at": self.reconciled_at,
            "permissions_read_at": self.permissions_read_at,
            "resources": {name: resource.to_dict() for name, resource in self.resources.items()},
        }
        if self.relist_checkpoints:
            out["relist_checkpoints"] = True
        if self.listing is not None:
            out["listing"] = self.listing.to_dict()
        return out


@dataclass
class SourceState:
    projects: Dict[str, ProjectState] = field(default_factory=dict)
    version: int = STATE_VERSION

    def project(self, name: str) -> ProjectState:
        return self.projects.setdefault(name, ProjectState())

    def to_dict(self) -> Dict[str, Any]:
        return {"version": self.version, "projects": {name: p.to_dict() for name, p in self.projects.items()}}


# -- reading ------------------------------------------------------------------------------------------


class _Reader:
    """Validates one raw state; every complaint names the path of the bad value."""

    def fail(self, path: str, what: str) -> "StateError":
        return StateError(f"{path} {what}")

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"should be an object, found {type(value).__name__}")
        return value

    def count(self, value: Any, path: str) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(path, f"should be a count, found {value!r}")
        return value

    def text(self, value: Any, path: str, *, optional: bool = False, what: str = "a job id") -> Optional[str]:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"should be {what}, found {value!r}")
        return value

    def seconds(self, value: Any, path: str, *, optional: bool = False) -> Optional[float]:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(path, f"should be a unix time, found {value!r}")
        return float(value)

    def frontier(self, value: Any, path: str) -> Optional[Frontier]:
        if value is None:
            return None
        raw = self.mapping(value, path)
        peers = raw.get("peers", [])
        if not isinstance(peers, list):
            raise self.fail(f"{path}.peers", f"should be a list, found {type(peers).__name__}")
        return Frontier(
            id=str(self.text(raw.get("id"), f"{path}.id")),
            created_at=float(self.seconds(raw.get("created_at"), f"{path}.created_at") or 0.0),
            peers=[str(self.text(peer, f"{path}.peers[]")) for peer in peers],
        )

    def resource(self, value: Any, path: str) -> ResourceState:
        raw = self.mapping(value, path)
        ordered = raw.get("ordered", True)
        if not isinstance(ordered, bool):
            raise self.fail(f"{path}.ordered", f"should be true or false, found {ordered!r}")
        open_raw = self.mapping(raw.get("open", {}) or {}, f"{path}.open")
        open_jobs = {}
        for job_id, entry in open_raw.items():
            entry_path = f"{path}.open.{job_id}"
            entry = self.mapping(entry if entry is not None else {}, entry_path)
            hashes = self.digests(entry, entry_path)
            open_jobs[str(job_id)] = OpenJob(
                misses=self.count(entry.get("misses"), f"{entry_path}.misses"),
                failures=self.count(entry.get("failures"), f"{entry_path}.failures"),
                newest_id=self.text(entry.get("newest_id"), f"{entry_path}.newest_id", optional=True, what="an event id"),
                hashes=hashes,
            )
        todo_raw = raw.get("todo", []) or []
        if not isinstance(todo_raw, list):
            raise self.fail(f"{path}.todo", f"should be a list, found {type(todo_raw).__name__}")
        return ResourceState(
            frontier=self.frontier(raw.get("frontier"), f"{path}.frontier"), ordered=ordered, open=open_jobs,
            todo=[self.todo(item, f"{path}.todo[{n}]") for n, item in enumerate(todo_raw)],
            unlisted=self.ids(raw.get("unlisted"), f"{path}.unlisted"),
        )

    def ids(self, value: Any, path: str) -> Optional[List[str]]:
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(path, f"should be a list of job ids, found {type(value).__name__}")
        return [str(self.text(item, f"{path}[]")) for item in value]

    def flag(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"should be true or false, found {value!r}")
        return value

    def listing(self, value: Any, path: str) -> Optional[PausedListing]:
        if value is None:
            return None
        raw = self.mapping(value, path)
        return PausedListing(
            after=self.text(raw.get("after"), f"{path}.after", optional=True),
            pages=self.count(raw.get("pages"), f"{path}.pages"),
            newest=self.frontier(raw.get("newest"), f"{path}.newest"),
            previous=self.seconds(raw.get("previous"), f"{path}.previous", optional=True),
            ordered=self.flag(raw.get("ordered"), f"{path}.ordered"),
            reconcile=self.flag(raw.get("reconcile"), f"{path}.reconcile"),
            backfill=self.flag(raw.get("backfill"), f"{path}.backfill"),
            resources=self.ids(raw.get("resources"), f"{path}.resources") or [],
        )

    def digests(self, entry: Mapping[str, Any], path: str) -> Optional[Dict[str, str]]:
        """An open job's digests (version 5), or its hashes of versions 1 to 4 turned into digests."""
        if entry.get("digests") is not None:
            value = entry["digests"]
            try:
                packed = base64.b64decode(value, validate=True) if isinstance(value, str) else b"?"
            except ValueError:
                packed = b"?"
            size = _KEY_BYTES + _TOKEN_BYTES
            if len(packed) % size:
                raise self.fail(f"{path}.digests", f"should be base64 of {size} bytes a row, found {value!r}")
            rows = (packed[n:n + size].hex() for n in range(0, len(packed), size))
            return {row[: 2 * _KEY_BYTES]: row[2 * _KEY_BYTES:] for row in rows}
        if entry.get("hashes") is None:
            return None
        hashes = {str(k): str(v) for k, v in self.mapping(entry["hashes"], f"{path}.hashes").items()}
        bad = next((v for v in hashes.values() if len(v) < 2 * _TOKEN_BYTES or not _is_hex(v)), None)
        if bad is not None:
            raise self.fail(f"{path}.hashes", f"should hold hex content hashes, found {bad!r}")
        return row_digests(hashes)

    def todo(self, value: Any, path: str) -> TodoJob:
        raw = self.mapping(value, path)
        kind = raw.get("kind", NEW)
        if kind not in TODO_KINDS:
            raise self.fail(f"{path}.kind", f"should be one of {', '.join(TODO_KINDS)}, found {kind!r}")
        status = raw.get("status")
        files = raw.get("result_files", []) or []
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise self.fail(f"{path}.result_files", f"should be a list of file ids, found {files!r}")
        return TodoJob(
            id=str(self.text(raw.get("id"), f"{path}.id")),
            status=str(status) if status is not None else None,
            kind=kind,
            result_files=list(files),
            after=self.text(raw.get("after"), f"{path}.after", optional=True, what="an event id"),
            newest_id=self.text(raw.get("newest_id"), f"{path}.newest_id", optional=True, what="an event id"),
        )

    def project_v3(self, value: Any, path: str) -> ProjectState:
        raw = self.mapping(value, path)
        resources = self.mapping(raw.get("resources", {}) or {}, f"{path}.resources")
        relist = raw.get("relist_checkpoints", False)
        if not isinstance(relist, bool):
            raise self.fail(f"{path}.relist_checkpoints", f"should be true or false, found {relist!r}")
        return ProjectState(
            resources={str(name): self.resource(r, f"{path}.resources.{name}") for name, r in resources.items()},
            reconciled_at=self.seconds(raw.get("reconciled_at"), f"{path}.reconciled_at", optional=True),
            permissions_read_at=self.seconds(raw.get("permissions_read_at"), f"{path}.permissions_read_at", optional=True),
            relist_checkpoints=relist,
            listing=self.listing(raw.get("listing"), f"{path}.listing"),
        )

    def project_v2(self, value: Any, path: str) -> ProjectState:
        return _needs_relist(self.project_v3(value, path))

    def project_v1(self, value: Any, path: str) -> ProjectState:
        raw = self.mapping(value, path)
        return _needs_relist(ProjectState(resources={str(name): self.resource(r, f"{path}.{name}") for name, r in raw.items()}))


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _needs_relist(project: ProjectState) -> ProjectState:
    """A project migrated from before version 3 that loaded checkpoints lists them once more (see above)."""
    checkpoints = project.resources.get("checkpoints")
    project.relist_checkpoints = checkpoints is not None and (checkpoints.frontier is not None or bool(checkpoints.open))
    return project


def read_state(raw: Mapping[str, Any]) -> SourceState:
    """The typed state from dlt's source state dict (any version up to this one; migrated)."""
    reader = _Reader()
    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise reader.fail("version", f"should be a whole number, found {version!r}")
    if version > STATE_VERSION:
        raise StateError(
            f"it was written by a newer release of openai-fine-tuning-dlt (state version {version}; this release"
            f" reads up to {STATE_VERSION}): upgrade the package (pip install -U openai-fine-tuning-dlt)",
            newer=True,
        )
    projects = reader.mapping(raw.get("projects", {}) or {}, "projects")
    # version 4 only added the optional `todo`, version 5 `digests` for `hashes`, version 6 `after` and
    # `newest_id` in `todo`, version 7 `listing` and `unlisted`: versions 3 to 7 read alike
    read = {1: reader.project_v1, 2: reader.project_v2}.get(version, reader.project_v3)
    return SourceState(projects={str(name): read(p, f"projects.{name}") for name, p in projects.items()})


def write_state(state: SourceState, raw: MutableMapping[str, Any]) -> None:
    """Store the typed state back into dlt's source state dict (always the current version). Other keys
    (dlt keeps resource state there) are left alone."""
    raw["version"] = STATE_VERSION
    raw["projects"] = state.to_dict()["projects"]
