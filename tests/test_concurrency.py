"""`concurrency.concurrently`: how many jobs it holds at once (each finished one holds its objects until consumed)."""

from __future__ import annotations

import threading
from typing import Iterator, List, Tuple

from openai_fine_tuning.concurrency import concurrently


def test_at_most_twice_the_workers_tasks_are_taken_before_a_result_is_consumed() -> None:
    taken: List[int] = []
    release = threading.Event()

    def tasks() -> Iterator[Tuple[int]]:
        for n in range(20):
            taken.append(n)
            yield (n,)

    def work(n: int) -> int:
        release.wait(10)  # every task waits until the first result is asked for and the pool is full
        return n

    timer = threading.Timer(0.2, release.set)
    timer.start()
    results = concurrently(tasks(), work, 4, on_abort=release.set)
    first = next(results)
    assert len(taken) == 2 * 4 and first in taken
    assert sorted([first, *results]) == list(range(20))
    timer.cancel()
