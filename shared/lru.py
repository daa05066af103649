"""A bounded map that forgets its least recently used entry first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, ItemsView
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most capacity entries; a get or put makes its entry the most recently used."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The entry's value, if it is held."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> int:
        """Holds value under key; returns how many older entries were forgotten for it."""
        self._items[key] = value
        self._items.move_to_end(key)
        forgotten = 0
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
            forgotten += 1
        return forgotten

    def pop(self, key: K) -> None:
        """Forgets key."""
        del self._items[key]

    def clear(self) -> None:
        """Forgets everything."""
        self._items.clear()

    def items(self) -> ItemsView[K, V]:
        """What is held, least recently used first."""
        return self._items.items()

    def __len__(self) -> int:
        return len(self._items)
