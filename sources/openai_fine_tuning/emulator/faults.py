"""Faults the emulator injects: scripted answers for the next matching requests, then random transient
faults drawn for each request from its seed, its path and query, and how many times that path and query
were asked before. The same seed gives the same faults to the same requests, in whatever order a client's
concurrent requests arrive: a test that passes with a seed passes every time."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

FAULT_NAMES = ("rate_limit", "server_error", "bad_gateway_html", "reset", "truncated", "slow")


@dataclass
class Faults:
    """Per-request probabilities of transient faults. Each request's draw is fixed by the seed, the request's
    path and query, and the number of times that path and query were asked before it."""

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


class FaultPlan:
    """What the router does instead of answering: `script()`ed answers first, then `faults` at random."""

    def __init__(self, faults: Optional[Faults] = None) -> None:
        self._lock = threading.Lock()
        self._scripts: List[Scripted] = []
        self.log: List[str] = []  # the random faults drawn, in order
        self.faults = faults or Faults()
        self._asked: Dict[str, int] = {}  # path and query -> times asked since the faults were set

    def set(self, faults: Faults) -> None:
        """New probabilities, and the draws started again from their seed."""
        with self._lock:
            self.faults = faults
            self._asked = {}

    def script(self, scripted: Scripted) -> None:
        with self._lock:
            self._scripts.append(scripted)

    def take_script(self, raw_path: str) -> Optional[Scripted]:
        """The scripted answer for this request, if any (counted down)."""
        with self._lock:
            scripted = next((s for s in self._scripts if s.match in raw_path), None)
            if scripted is not None:
                scripted.times -= 1
                if scripted.times <= 0:
                    self._scripts.remove(scripted)
            return scripted

    def draw(self, raw_path: str) -> Optional[str]:
        """The name of the random fault for this request (its path and query), or None."""
        with self._lock:
            f = self.faults
            asked = self._asked.get(raw_path, 0)
            self._asked[raw_path] = asked + 1
            # a string seed is hashed with SHA-512: the same on every run and machine
            r = random.Random(f"{f.seed}|{raw_path}|{asked}").random()
            for name in FAULT_NAMES:
                probability = getattr(f, name)
                if r < probability:
                    self.log.append(name)
                    return name
                r -= probability
            return None
