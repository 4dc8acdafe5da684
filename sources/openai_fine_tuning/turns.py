"""Which job's list to read next when a job is read in turns.

A job's events are read `settings.EVENT_PAGES_PER_TURN` pages at a time; the job's next turn then waits
behind the turns of the other jobs being read. With whole jobs, the jobs a run started last ended one job's
length after the others: 200 jobs on 16 threads left 8 threads idle for a whole job, and 20 long jobs left
12 threads idle for a fifth of the run. In turns, the jobs go on evenly and end within a few pages of each
other. At most `limit` jobs are being read at once (new jobs start while fewer are), so a run with many jobs
does not start them all; a turn that ends a job lets the next new job start.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Generic, Iterator, Optional, Tuple, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class Turns(Generic[J, R]):
    """The turns of a run's jobs: iterate for the next (job, where its read goes on), or None when no turn can
    start before one handed out comes `back`; iteration ends once every job has ended."""

    def __init__(self, new: Iterator[Tuple[J, R]], *, limit: int) -> None:
        self._new = new
        self._more_new = True
        self._waiting: Deque[Tuple[J, R]] = deque()
        self._handed_out = 0  # turns handed out and not back yet
        self._reading = 0  # jobs started and not ended
        self._limit = max(limit, 1)

    def __iter__(self) -> Iterator[Optional[Tuple[J, R]]]:
        while True:
            if self._waiting and (self._reading >= self._limit or not self._more_new):
                yield self._hand_out(self._waiting.popleft())
                continue
            new = next(self._new, None) if self._more_new else None
            if new is not None:
                self._reading += 1
                yield self._hand_out(new)
                continue
            self._more_new = False
            if self._waiting:
                continue
            if not self._handed_out:
                return
            yield None

    def back(self, *, goes_on: Optional[Tuple[J, R]] = None) -> None:
        """A turn came back: its job ended, or goes on with `goes_on` (its next turn, behind the others')."""
        self._handed_out -= 1
        if goes_on is None:
            self._reading -= 1
        else:
            self._waiting.append(goes_on)

    def _hand_out(self, turn: Tuple[J, R]) -> Tuple[J, R]:
        self._handed_out += 1
        return turn
