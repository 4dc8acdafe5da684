"""The emulated API's routing: a request (method, path, headers) in, an answer out, as the API reference
documents it. Used by the loopback HTTP server (`server.py`) and, in-process, as an `httpx.MockTransport`
handler (`Router.transport()`), so unit-level tests need no socket.

An answer is (status, headers, body, action): `action` is "reset" (drop the connection), "truncate" (a
body cut short) or None.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from .faults import FaultPlan, Faults
from .store import BASE_TIME, Store

Answer = Tuple[int, Dict[str, str], Any, Optional[str]]
TRUNCATED_BODY = json.dumps({"object": "list", "data": [{"id": "x"}], "has_more": True}).encode()[:25]


@dataclass
class RequestRecord:
    method: str
    path: str
    params: Dict[str, str]
    endpoint: str  # jobs_list | job | checkpoints | events | file | file_content | permissions | other
    headers: Dict[str, str] = field(default_factory=dict)  # without the credentials


class Router:
    """Answers requests from a `Store`, with the faults of a `FaultPlan`; records every request."""

    def __init__(
        self,
        store: Store,
        plan: FaultPlan,
        *,
        api_key: str,
        admin_key: str,
        flavour: str = "openai",
        latency: float = 0.0,
        advance: Optional[Callable[[], Dict[str, int]]] = None,
    ) -> None:
        if flavour not in ("openai", "azure"):
            raise ValueError("flavour must be 'openai' or 'azure'")
        self.store = store
        self.plan = plan
        self.api_key = api_key
        self.admin_key = admin_key
        self.flavour = flavour
        self.latency = latency
        self.advance = advance
        self.requests: List[RequestRecord] = []
        self.on_request: Optional[Callable[[RequestRecord], None]] = None  # called for each request
        self.max_in_flight = 0  # the most requests it was answering at once
        self._in_flight = 0
        self._lock = threading.Lock()
        # job id -> (the events list it indexes, its length, event id -> position newest first): a long list
        # is paged in O(1) a request, not scanned (a job of 20,000 events cost 1.2 ms a request more)
        self._event_positions: Dict[str, Tuple[int, int, Dict[str, int]]] = {}

    # -- counting ---------------------------------------------------------------------------------
    def count(self, endpoint: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if endpoint is None or r.endpoint == endpoint)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.plan.log.clear()
            self.max_in_flight = 0

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            by_endpoint: Dict[str, int] = {}
            for record in self.requests:
                by_endpoint[record.endpoint] = by_endpoint.get(record.endpoint, 0) + 1
        with self.store.lock:
            statuses: Dict[str, int] = {}
            for job in self.store.jobs.values():
                statuses[job["status"]] = statuses.get(job["status"], 0) + 1
            served = sum(len(c) for c in self.store.checkpoints.values())
        return {"requests": by_endpoint, "jobs": statuses, "checkpoints_served": served,
                "faults": dict(vars(self.plan.faults))}

    # -- in-process use ---------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        """This router as an httpx transport: no socket. A "reset" raises httpx.ReadError; "slow" sleeps."""

        def handler(request: httpx.Request) -> httpx.Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            raw_path = request.url.raw_path.decode("ascii")
            status, extra, body, action = self.handle(request.method, raw_path, headers, request.content)
            if action == "reset":
                raise httpx.ReadError("connection reset by peer", request=request)
            payload, content_type = encode_body(body, extra)
            if action == "truncate":
                payload = TRUNCATED_BODY
            return httpx.Response(status, headers={"content-type": content_type, **extra}, content=payload)

        return httpx.MockTransport(handler)

    # -- control endpoints ------------------------------------------------------------------------
    def _control(self, method: str, action: str, body: bytes) -> Tuple[int, Any]:
        """`POST /_emulator/advance`, `POST /_emulator/faults` (a JSON object of `Faults` fields),
        `GET /_emulator/stats`: for people and BI demos watching the data change (no key needed)."""
        if method == "POST" and action == "advance" and self.advance is not None:
            return 200, self.advance()
        if method == "POST" and action == "faults":
            try:
                faults = Faults(**json.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                return 400, self._error(f"Invalid faults: {exc}", "invalid_request_error", None)
            self.plan.set(faults)
            return 200, vars(faults)
        if method == "GET" and action == "stats":
            return 200, self.stats()
        return 404, self._error(f"Invalid URL ({method} /_emulator/{action})", "invalid_request_error", None)

    # -- requests ---------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes = b"") -> Answer:
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
                job_id: Optional[str], headers: Dict[str, str]) -> Answer:
        safe_headers = {k: v for k, v in headers.items() if k not in ("authorization", "api-key")}
        record = RequestRecord(method, path, params, endpoint, safe_headers)
        if self.on_request is not None:
            self.on_request(record)
        with self._lock:
            self.requests.append(record)
            request_id = f"req_{len(self.requests):06d}"
        scripted = self.plan.take_script(raw_path)
        fault = self.plan.draw(raw_path) if scripted is None else None
        base_headers = {"x-request-id": request_id}
        if self.latency:
            time.sleep(self.latency)
        if scripted is not None:
            return scripted.status, {**base_headers, **scripted.headers}, scripted.body, scripted.action
        if fault == "slow":
            time.sleep(self.plan.faults.slow_seconds)
        elif fault is not None:
            status, extra, body, action = self._fault_answer(fault)
            return status, {**base_headers, **extra}, body, action
        auth_error = self._check_auth(headers, params, admin=endpoint == "permissions")
        if auth_error is not None:
            return auth_error[0], base_headers, auth_error[1], None
        if method != "GET" or endpoint == "other":
            return 404, base_headers, self._error(f"Invalid URL ({method} {path})", "invalid_request_error", None), None
        with self.store.lock:
            status, body = self._route(endpoint, job_id, params)
        if endpoint == "file_content" and status == 200:
            return status, {**base_headers, "content-type": "text/csv"}, body, None
        return status, base_headers, body, None

    def _fault_answer(self, name: str) -> Answer:
        if name == "rate_limit":
            retry = {"retry-after-ms": str(self.plan.faults.retry_after_ms), "retry-after": "1"}
            return 429, retry, self._error("Rate limit reached for requests", "requests", "rate_limit_exceeded"), None
        if name == "server_error":
            return 500, {}, self._error("The server had an error while processing your request.", "server_error", None), None
        if name == "bad_gateway_html":
            return 502, {"content-type": "text/html"}, "<html><body><h1>502 Bad Gateway</h1></body></html>", None
        if name == "reset":
            return 0, {}, None, "reset"
        return 200, {}, None, "truncate"

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
            filters = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[") and k.endswith("]")}
            if filters or self.store.order is not None:
                jobs = self.store.sorted_jobs()
                if filters:
                    jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in filters.items())]
                return self._page(jobs, params, default_limit=20, ids=False)
            listing = self.store.jobs_listing(paging=bool(params.get("after")))
            return self._page(listing.jobs, params, default_limit=20, ids=False, position=listing.position)
        if endpoint in ("file", "file_content"):
            return self._file(endpoint, str(job_id))
        if endpoint == "permissions":
            items = sorted(self.store.permissions.get(str(job_id), []), key=lambda p: p["created_at"], reverse=params.get("order") != "ascending")
            return self._page(items, params, default_limit=10, ids=True)
        if job_id not in self.store.jobs:
            return 404, self._error(f"No such fine-tuning job: {job_id}", "invalid_request_error", "fine_tune_not_found", "fine_tuning_job_id")
        if endpoint == "job":
            return 200, self.store.jobs[job_id]
        if endpoint == "checkpoints":
            if job_id in self.store.missing_checkpoints:
                return 404, self._error(f"No such fine-tuning job: {job_id}", "invalid_request_error", "fine_tune_not_found")
            items = sorted(self.store.checkpoints[job_id], key=lambda c: c["step_number"], reverse=self.flavour != "azure")
            return self._page(items, params, default_limit=10, ids=self.flavour != "azure")
        stored = self.store.events[job_id]
        items = stored[::-1]
        return self._page(items, params, default_limit=20, ids=False, position=self._event_position(job_id, stored, items))

    def _event_position(self, job_id: str, stored: List[Dict[str, Any]], items: List[Dict[str, Any]]) -> Callable[[str], Optional[int]]:
        """Where an event id stands in the job's list newest first; the index is checked at each use and
        built again when the list changed (tests append, insert and edit events)."""

        def position(after: str) -> Optional[int]:
            cached = self._event_positions.get(job_id)
            if cached is None or cached[0] != id(stored) or cached[1] != len(stored):
                cached = (id(stored), len(stored), {item["id"]: n for n, item in enumerate(items)})
                self._event_positions[job_id] = cached
            found = cached[2].get(after)
            if found is not None and items[found]["id"] == after:
                return found
            return _scan(items, after)

        return position

    def _file(self, endpoint: str, file_id: str) -> Tuple[int, Any]:
        stored = self.store.files.get(file_id)
        if stored is None:
            return 404, self._error(f"No such File object: {file_id}", "invalid_request_error", None, "id")
        content = self.store.result_csv(stored["job_id"]).encode()
        if stored["base64"]:
            content = base64.b64encode(content)
        if endpoint == "file_content":
            return 200, content
        created = self.store.jobs[stored["job_id"]]["finished_at"] or BASE_TIME
        return 200, {"object": "file", "id": file_id, "purpose": "fine-tune-results", "filename": "step_metrics.csv",
                     "bytes": len(content), "created_at": created, "status": "processed"}

    def _page(
        self, items: List[Dict[str, Any]], params: Dict[str, str], *, default_limit: int, ids: bool,
        position: Optional[Callable[[str], Optional[int]]] = None,
    ) -> Tuple[int, Any]:
        try:
            limit = int(params.get("limit", default_limit))
        except ValueError:
            return 400, self._error("Invalid 'limit': expected an integer.", "invalid_request_error", "invalid_value", "limit")
        if limit < 1:
            return 400, self._error("Invalid 'limit': must be at least 1.", "invalid_request_error", "invalid_value", "limit")
        start = 0
        after = params.get("after")
        if after:
            found = position(after) if position is not None else _scan(items, after)
            start = len(items) if found is None else found + 1
        page = items[start:start + limit]
        body: Dict[str, Any] = {"object": "list", "data": page, "has_more": start + limit < len(items)}
        if ids:
            body["first_id"] = page[0]["id"] if page else None
            body["last_id"] = page[-1]["id"] if page else None
        return 200, body




def _scan(items: List[Dict[str, Any]], after: str) -> Optional[int]:
    """Where the item with id `after` stands in `items`, looked for one by one (None: not there)."""
    return next((n for n, item in enumerate(items) if item["id"] == after), None)


def encode_body(body: Any, headers: Dict[str, str]) -> Tuple[bytes, str]:
    """The bytes of an answer's body and its content type (popped from `headers` when the answer set one)."""
    if isinstance(body, (bytes, str)):
        return (body.encode() if isinstance(body, str) else body), headers.pop("content-type", "text/plain")
    return json.dumps(body).encode(), headers.pop("content-type", "application/json")
