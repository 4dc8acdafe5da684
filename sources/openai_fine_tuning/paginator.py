"""Cursor pagination (`after` + `limit`, `has_more`) with a loop guard and shape checks."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Set

from .exceptions import InvalidResponseError, PageLimitError, PaginationLoopError

logger = logging.getLogger(__name__)

FetchPage = Callable[[Mapping[str, Any]], Any]


class CursorPaginator:
    """Iterates the pages of one list endpoint, yielding each page's items as a list.

    `after` is the id of the last item of the previous page (the jobs and events lists carry no
    `last_id`). Paging stops on `has_more: false`, on an empty page, or when `stop_at_id` is met (the
    items from that id on are not yielded). After iteration, `complete` says whether the list was read
    to its end (or to `stop_at_id`); it is False when the API answered `has_more: true` with an empty
    page, which is logged and leaves the caller to read the list again next time. A list that goes on
    past `max_pages` pages raises `PageLimitError`. `start_after` goes on with a list read in part before:
    its first request asks for the items after that id; `pages_before` pages of it count toward `max_pages`.
    """

    def __init__(
        self,
        fetch: FetchPage,
        *,
        endpoint: str,
        page_size: int,
        stop_at_id: Optional[str] = None,
        max_pages: int = 10_000,
        start_after: Optional[str] = None,
        pages_before: int = 0,
    ) -> None:
        self._fetch = fetch
        self.endpoint = endpoint
        self.page_size = page_size
        self.stop_at_id = stop_at_id
        self.max_pages = max_pages
        self.start_after = start_after
        self.complete = False
        self.reached_stop_id = False
        self.pages = pages_before

    def __iter__(self) -> Iterator[List[Dict[str, Any]]]:
        seen_cursors: Set[str] = set()
        after: Optional[str] = self.start_after
        while True:
            if self.pages >= self.max_pages:
                raise PageLimitError(
                    f"{self.endpoint} still had more after {self.max_pages} pages (max_pages): the list does not end;"
                    " raise max_pages if it is really that long"
                )
            params: Dict[str, Any] = {"limit": self.page_size}
            if after is not None:
                params["after"] = after
            body = self._fetch(params)
            self.pages += 1
            items, has_more = self._validate(body)
            if self.stop_at_id is not None:
                for index, item in enumerate(items):
                    if item.get("id") == self.stop_at_id:
                        self.reached_stop_id = self.complete = True
                        if index:
                            yield items[:index]
                        return
            self.complete = not has_more  # already while the last page is out: a caller may stop there
            if items:
                yield items
            if not has_more:
                return
            if not items:
                logger.warning(
                    "%s answered has_more=true with an empty page; stopping this list, it is read again next run",
                    self.endpoint,
                )
                return
            cursor = items[-1].get("id")
            if not isinstance(cursor, str) or not cursor:
                raise InvalidResponseError(f"{self.endpoint} returned an item without a string 'id'; cannot page on")
            if cursor in seen_cursors or cursor == after:
                raise PaginationLoopError(
                    f"{self.endpoint}: loop detected, cursor after={cursor} was already used; the API keeps serving"
                    " the same page. Run again later; report it if it persists."
                )
            seen_cursors.add(cursor)
            after = cursor

    def _validate(self, body: Any) -> "tuple[List[Dict[str, Any]], bool]":
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise InvalidResponseError(
                f"{self.endpoint} returned JSON without a 'data' list; this is not a list response."
                " Check base_url points at the OpenAI API"
            )
        items = body["data"]
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item.get("id"):
                raise InvalidResponseError(f"{self.endpoint} returned an item without a string 'id'")
        has_more = body.get("has_more", False)
        if not isinstance(has_more, bool):
            raise InvalidResponseError(f"{self.endpoint} returned a non-boolean 'has_more': {has_more!r}")
        return items, has_more
