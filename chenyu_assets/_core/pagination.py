"""``AsyncPaginator``: ``await`` it for one page, ``async for`` it for every item.

Pages are fetched lazily, one at a time: walking 100,000 assets holds one page in memory.
The walk stops at an empty or short page, or once ``total_count`` items were seen.

Every walk is bounded, whatever the server answers: ``deadline`` (seconds, for the whole
walk, the caller's time between pages included) ends it with ``RequestTimeoutError``; a
page repeating an earlier one, a page with items past what its own ``TotalCount`` allows,
or more than ``max_pages`` pages end it with :class:`~chenyu_assets.errors.PaginationError`
(never retried).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from chenyu_assets.errors import PaginationError, RequestTimeoutError

__all__ = ["AsyncPaginator", "Page"]

T = TypeVar("T")

#: ``fetch(page_number, seconds_left)`` gets one page; ``seconds_left`` is None without a deadline.
Fetch = Callable[[int, float | None], Awaitable["Page[T]"]]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total_count: int | None
    page_number: int
    page_size: int
    request_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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
    ) -> None:
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")
        if max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {max_pages}")
        self._fetch = fetch
        self._first = first_page
        self._deadline = deadline
        self._max_pages = max_pages
        self._key = key
        self._name = name

    def __await__(self) -> Generator[Any, None, Page[T]]:
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
        number = self._first
        seen = 0
        fetched = 0
        started = asyncio.get_running_loop().time()
        earlier: dict[int, int] = {}  # hash of a page's keys -> its number
        while True:
            if fetched >= self._max_pages:
                raise PaginationError(
                    f"{self._name}: more than {self._max_pages} pages; narrow the filter"
                )
            page = await self._fetch(number, self._left(started))
            fetched += 1
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
        fingerprint = hash(tuple(self._key(item) for item in page.items))
        if fingerprint in earlier:
            raise PaginationError(
                f"{self._name}: page {number} repeats page {earlier[fingerprint]}",
                request_id=page.request_id,
            )
        earlier[fingerprint] = number

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item
