"""Running one task per job over a bounded thread pool, results in completion order."""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Deque, Iterator, Tuple, TypeVar

T = TypeVar("T")


def concurrently(
    tasks: Iterator[Tuple[Any, ...]], work: Callable[..., T], workers: int, *, on_abort: Callable[[], None]
) -> Iterator[T]:
    """Run `work(*task)` over a bounded pool; at most 2 x workers tasks are in flight, so memory stays
    bounded however many jobs there are (a finished task holds what it read until it is consumed). The
    second `workers` keep the threads reading when many tasks finish together: with workers + 2, each
    thread but two waited for the consuming thread to take the results before it, and an events backfill
    took 1.22x to 1.25x its latency floor instead of 1.19x to 1.20x (events wait packed, `packed.py`, so the
    extra tasks cost little memory). Results come back as they finish. If the consumer stops early (an
    error, a signal), `on_abort` stops the requests in flight so the pool shuts down at once."""
    if workers <= 1:
        for task in tasks:
            yield work(*task)
        return
    finished = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fine-tuning") as pool:
        in_flight: Deque[Future] = deque()
        try:
            for task in tasks:
                in_flight.append(pool.submit(work, *task))
                while len(in_flight) >= 2 * workers or (in_flight and in_flight[0].done()):
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        in_flight.remove(future)
                        yield future.result()
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    in_flight.remove(future)
                    yield future.result()
            finished = True
        finally:
            if not finished:
                on_abort()
                for future in in_flight:
                    future.cancel()
