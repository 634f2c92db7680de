"""Named predicates and named actions, registered by name; a duplicate name is an error at import
(so at service start-up), and ``require`` checks the registry covers every name the policy model has."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class RegistryError(Exception):
    """A name registered twice, or a policy name without an implementation (or the reverse)."""


class Registry(Generic[F]):
    """Functions by name, in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(function: F) -> F:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = function
            return function

        return add

    def __getitem__(self, name: str) -> F:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def require(self, names: Iterable[str]) -> None:
        """Every name has a function and every function a name."""
        wanted = list(names)
        missing = [n for n in wanted if n not in self._items]
        extra = [n for n in self._items if n not in wanted]
        if missing or extra:
            raise RegistryError(f"{self.kind}s: not implemented {missing}, not in the policy model {extra}")
