"""``AsyncPaginator``: ``await`` it for one page, ``async for`` it for every item.

Pages are fetched lazily, one at a time: walking 100,000 assets holds one page in memory.
The walk stops at an empty or short page, or once ``total_count`` items were seen.

Every walk is bounded, whatever the server answers: ``deadline`` (seconds, for the whole
walk, the caller's time between pages included) ends it with ``RequestTimeoutError``; a
page repeating an earlier one, a page with items past what its own ``TotalCount`` allows,
or more than ``max_pages`` pages end it with :class:`~chenyu_assets.errors.PaginationError`
(never retried).

Cursor paging (``cursor=``, a ``fetch(next_token, seconds_left)``): each page carries the
token of the next (``Page.next_token``); a missing or empty token ends the walk. The same
bounds hold: ``deadline``, ``cursor_max_pages``, a page repeating an earlier one, a
``NextToken`` repeating an earlier one, more than :data:`MAX_EMPTY_PAGES` empty pages in a
row, or a walk that ends short of a ``TotalCount`` the server sent anyway (it ignored the
cursor) are a :class:`~chenyu_assets.errors.PaginationError`. ``paging`` chooses: ``"offset"``
(numbered pages only), ``"cursor"`` (the cursor only), or ``"auto"``: numbered pages, but when
the first page's ``TotalCount`` shows that the walk would pass ``offset_limit`` items (where a
server refuses offset paging) the walk starts again from the start with the cursor (that first
page is not yielded: one extra call for a walk of more than ``offset_limit`` items).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from chenyu_assets.errors import PaginationError, RequestTimeoutError

__all__ = ["MAX_EMPTY_PAGES", "AsyncPaginator", "Page", "Paging"]

T = TypeVar("T")

#: ``fetch(page_number, seconds_left)`` gets one page; ``seconds_left`` is None without a deadline.
Fetch = Callable[[int, float | None], Awaitable["Page[T]"]]
#: ``fetch(next_token, seconds_left)`` gets one cursor page (``None``: the first).
CursorFetch = Callable[[str | None, float | None], Awaitable["Page[T]"]]
Paging = Literal["auto", "offset", "cursor"]
#: Empty cursor pages in a row that end a walk as a PaginationError (a server that keeps
#: handing out tokens for nothing).
MAX_EMPTY_PAGES = 10


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total_count: int | None
    page_number: int
    page_size: int
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the cursor of the next page (cursor paging; None or "" at the end)
    next_token: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)


class AsyncPaginator(Generic[T]):
    """A lazy, bounded walk over numbered pages (see the module docstring).

    ``key(item)`` identifies an item (its id), to recognise a repeated page;
    ``max_pages`` is the hard cap of pages one walk fetches.
    """

    def __init__(
        self,
        fetch: Fetch[T],
        *,
        first_page: int = 1,
        deadline: float | None = None,
        max_pages: int = 1000,
        key: Callable[[T], Hashable] = repr,
        name: str = "listing",
        cursor: CursorFetch[T] | None = None,
        paging: Paging = "offset",
        offset_limit: int | None = None,
        cursor_max_pages: int = 100_000,
        next_token: str | None = None,
    ) -> None:
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")
        if max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {max_pages}")
        if paging not in ("auto", "offset", "cursor"):
            raise ValueError(f"paging must be auto, offset or cursor, not {paging!r}")
        if paging != "offset" and cursor is None:
            raise ValueError(f"paging={paging!r} needs a cursor fetch")
        self._cursor = cursor
        self._paging = paging
        self._offset_limit = offset_limit
        self._cursor_max_pages = cursor_max_pages
        self._next_token = next_token
        self._fetch = fetch
        self._first = first_page
        self._deadline = deadline
        self._max_pages = max_pages
        self._key = key
        self._name = name

    def __await__(self) -> Generator[Any, None, Page[T]]:
        if self._paging == "cursor" and self._cursor is not None:
            return self._cursor(self._next_token, self._deadline).__await__()
        return self._fetch(self._first, self._deadline).__await__()

    def _left(self, started: float) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline - (asyncio.get_running_loop().time() - started)
        if left <= 0:
            raise RequestTimeoutError(
                f"{self._name}: not complete within its {self._deadline:g} s deadline",
                sent=False,
            )
        return left

    async def pages(self) -> AsyncIterator[Page[T]]:
        started = asyncio.get_running_loop().time()
        if self._paging == "cursor":
            async for page in self._cursor_pages(started, self._next_token):
                yield page
            return
        number = self._first
        seen = 0
        fetched = 0
        earlier: dict[int, int] = {}  # hash of a page's keys -> its number
        while True:
            if fetched >= self._max_pages:
                hint = "; page with paging='cursor'" if self._cursor is not None else ""
                raise PaginationError(
                    f"{self._name}: more than {self._max_pages} pages; narrow the filter{hint}"
                )
            page = await self._fetch(number, self._left(started))
            fetched += 1
            if fetched == 1 and self._too_long_for_offsets(page):
                async for cursor_page in self._cursor_pages(started, None):
                    yield cursor_page
                return
            self._check(page, number, earlier)
            yield page
            seen += len(page.items)
            if not page.items or len(page.items) < page.page_size:
                return
            if page.total_count is not None and seen + (self._first - 1) * page.page_size >= (
                page.total_count
            ):
                return
            number += 1

    def _too_long_for_offsets(self, page: Page[T]) -> bool:
        """``auto``: the first page's TotalCount says the offsets would pass the limit."""
        return (
            self._paging == "auto"
            and self._first == 1
            and self._offset_limit is not None
            and page.total_count is not None
            and page.total_count > self._offset_limit
        )

    async def _cursor_pages(self, started: float, token: str | None) -> AsyncIterator[Page[T]]:
        cursor = self._cursor
        if cursor is None:  # pragma: no cover - checked in __init__
            raise ValueError("no cursor fetch")
        earlier: dict[int, int] = {}
        tokens: set[str] = set() if token is None else {token}
        empty_run = seen = 0
        for number in range(1, self._cursor_max_pages + 1):
            page = await cursor(token, self._left(started))
            self._check_repeat(page, number, earlier)
            seen += len(page.items)
            empty_run = 0 if page.items else empty_run + 1
            if empty_run > MAX_EMPTY_PAGES:
                raise PaginationError(
                    f"{self._name}: more than {MAX_EMPTY_PAGES} empty pages in a row",
                    request_id=page.request_id,
                )
            token = page.next_token or None
            if token is None and page.total_count is not None and seen < page.total_count:
                # cursor answers carry no TotalCount: this server ignored MaxResults/NextToken
                raise PaginationError(
                    f"{self._name}: the cursor walk ended after {seen} of its TotalCount "
                    f"{page.total_count} items (the server does not page by NextToken?)",
                    request_id=page.request_id,
                )
            yield page
            if token is None:
                return
            if token in tokens:
                raise PaginationError(
                    f"{self._name}: page {number} hands out a NextToken seen before",
                    request_id=page.request_id,
                )
            tokens.add(token)
        raise PaginationError(
            f"{self._name}: more than {self._cursor_max_pages} pages; narrow the filter"
        )

    def _check_repeat(self, page: Page[T], number: int, earlier: dict[int, int]) -> None:
        if not page.items:
            return
        fingerprint = hash(tuple(self._key(item) for item in page.items))
        if fingerprint in earlier:
            raise PaginationError(
                f"{self._name}: page {number} repeats page {earlier[fingerprint]}",
                request_id=page.request_id,
            )
        earlier[fingerprint] = number

    def _check(self, page: Page[T], number: int, earlier: dict[int, int]) -> None:
        if not page.items:
            return
        offset = (number - 1) * page.page_size
        if page.total_count is not None and offset >= page.total_count:
            raise PaginationError(
                f"{self._name}: page {number} has items past its TotalCount "
                f"({page.total_count}, {page.page_size} per page)",
                request_id=page.request_id,
            )
        self._check_repeat(page, number, earlier)

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item
