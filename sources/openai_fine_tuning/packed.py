"""Pages of events held pickled, column by column, between the thread that reads them and the one that
turns them into Arrow.

A worker thread packs each page as it arrives: its objects split into columns (`rows.columns_by_key`,
which the consuming thread would otherwise run on the whole job) and pickled. A page of 100 events takes
about 14.5 KB that way, against 18.7 KB pickled as objects and about 105 KB as decoded objects; pickling
and unpickling the columns costs 29 + 37 µs a page, the objects 60 + 137 µs (measured 2026-12-06). That is
what lets the jobs that finish together wait for the consuming thread while their threads go on reading
(`concurrency.concurrently`), and lets the read-ahead hold half a slice while a slice loads. `pickle` gives
back exactly what JSON decoding gave (dicts, lists, text, ints of any size, floats, None, bools).

A page whose keys do not map to columns one to one (two keys that name one column, a `data` that is not an
object) is packed as its objects, and turned into Arrow object by object (`rows.items_to_arrow`).
"""

from __future__ import annotations

import pickle
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence

from .rows import columns_by_key


class Page(NamedTuple):
    """One page, or consecutive pages of one job, as the consuming thread gets them back: `columns` (column
    name -> `rows` values, in the order served) or, for a page that is not split into columns, `items`."""

    rows: int
    columns: Optional[Dict[str, List[Any]]]
    items: Optional[List[Dict[str, Any]]]

    @property
    def ids(self) -> List[Any]:
        if self.columns is not None:
            return self.columns["id"]
        return [item["id"] for item in self.items or ()]


def pack(page: List[Dict[str, Any]], *, nested: str) -> bytes:
    columns = columns_by_key(page, nested)
    if columns is not None and not all(type(row_id) is str for row_id in columns.get("id", (None,))):
        columns = None  # ids that are not all text: `first_served` meets them object by object
    if columns is not None:
        return pickle.dumps((len(page), columns, None), protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.dumps((len(page), None, page), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(packed: Iterable[bytes]) -> Iterator[Page]:
    """The pages, in the order they were packed."""
    return (Page(*pickle.loads(page)) for page in packed)


def select(pages: Sequence[Page], keep: Sequence[int]) -> List[Page]:
    """The pages with only the rows at `keep` (ascending positions over all of the pages' rows)."""
    selected: List[Page] = []
    start = taken = 0
    for page in pages:
        end = start + page.rows
        positions = []
        while taken < len(keep) and keep[taken] < end:
            positions.append(keep[taken] - start)
            taken += 1
        if len(positions) == page.rows:
            selected.append(page)
        elif positions and page.columns is not None:
            columns = {name: [values[i] for i in positions] for name, values in page.columns.items()}
            selected.append(Page(len(positions), columns, None))
        elif positions:
            selected.append(Page(len(positions), None, [page.items[i] for i in positions]))  # type: ignore[index]
        start = end
    return selected


def runs(pages: Sequence[Page]) -> Iterator[Page]:
    """The pages with each run of consecutive column pages joined into one (a column absent from some of
    them is None there), so that a job's columns become Arrow in one call each."""
    joined: List[Page] = []
    for page in pages:
        if page.columns is not None:
            joined.append(page)
            continue
        if joined:
            yield _join(joined)
            joined = []
        yield page
    if joined:
        yield _join(joined)


def _join(pages: List[Page]) -> Page:
    if len(pages) == 1:
        return pages[0]
    total = 0
    columns: Dict[str, List[Any]] = {}
    for page in pages:
        for name, values in (page.columns or {}).items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * total
            elif len(column) < total:
                column.extend([None] * (total - len(column)))
            column.extend(values)
        total += page.rows
    for column in columns.values():
        if len(column) < total:
            column.extend([None] * (total - len(column)))
    return Page(total, columns, None)
