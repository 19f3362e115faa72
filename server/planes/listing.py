"""One page of a listing, as the planes return it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cloudassist.server.domain.pagination import Page

T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    items: list[T]
    total_count: int
    next_page_token: str


def listing(page: Page, items: list[T], total: int, key: Callable[[T], str]) -> Listing[T]:
    """The repositories fetch one row more than a page: its presence means a next page."""
    if len(items) > page.size:
        items = items[: page.size]
        return Listing(items, total, page.next_token(key(items[-1])))
    return Listing(items, total, "")
