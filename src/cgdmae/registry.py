"""A name → item registry for the methods and tasks and their cards: adding a name twice is
an error, and looking up an unknown one names the known ones. A lookup first loads the
plugins a parent process exported (``cgdmae.plugins``), so a job sees what its Snakefile saw."""

from __future__ import annotations

from typing import Generic, TypeVar

from cgdmae.plugins import load_exported

Item = TypeVar("Item")


class Registry(Generic[Item]):
    def __init__(self, kind: str, plural: str):
        self.kind, self.plural = kind, plural
        self._items: dict[str, Item] = {}

    def add(self, name: str, item: Item) -> Item:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> Item:
        load_exported()
        if name not in self._items:
            known = ", ".join(self._items) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.plural}: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        """The names in registration order."""
        load_exported()
        return list(self._items)

    def items(self) -> list[Item]:
        load_exported()
        return list(self._items.values())

    def copy(self) -> Registry[Item]:
        """A registry with the same entries, to add to without touching this one (tests)."""
        other: Registry[Item] = Registry(self.kind, self.plural)
        other._items = dict(self._items)
        return other
