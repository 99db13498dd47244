"""A named registry: one table drives the Python API, the CLI choices and the contract tests."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from medexplain.errors import MedexplainError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name and free-form metadata (category, what it needs, ...)."""

    name: str
    obj: T
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to objects (factories, classes, functions) of one kind, e.g. ``"explainer"``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **metadata: Any) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("gradcam", category="cam")``."""

        def add(obj: T) -> T:
            self.add(name, obj, **metadata)
            return obj

        return add

    def add(self, name: str, obj: T, **metadata: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, obj, dict(metadata))

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name``; an unknown name raises a :class:`MedexplainError` listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise MedexplainError(self._unknown_message(name)) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def available(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[name] for name in self.available())

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: str) -> str:
        known = self.available()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listing = ", ".join(known) if known else "none registered yet"
        return f"unknown {self.kind} {name!r}{hint}; available: {listing}"
