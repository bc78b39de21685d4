"""``AsyncPaginator``: ``await`` it for one page, ``async for`` it for every item.

Pages are fetched lazily, one at a time: walking 100,000 assets holds one page in memory.
The walk stops at an empty or short page, or once ``total_count`` items were seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["AsyncPaginator", "Page"]

T = TypeVar("T")


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
    def __init__(self, fetch: Callable[[int], Awaitable[Page[T]]], *, first_page: int = 1) -> None:
        self._fetch = fetch
        self._first = first_page

    def __await__(self) -> Generator[Any, None, Page[T]]:
        return self._fetch(self._first).__await__()

    async def pages(self) -> AsyncIterator[Page[T]]:
        number = self._first
        seen = 0
        while True:
            page = await self._fetch(number)
            yield page
            seen += len(page.items)
            if not page.items or len(page.items) < page.page_size:
                return
            if page.total_count is not None and seen + (self._first - 1) * page.page_size >= (
                page.total_count
            ):
                return
            number += 1

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.pages():
            for item in page.items:
                yield item
