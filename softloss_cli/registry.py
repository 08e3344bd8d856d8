"""A name -> class registry with a one-line description per entry (used by `softloss list`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType


@dataclass(frozen=True)
class Entry:
    name: str
    obj: object
    description: str


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str = "") -> Callable:
        def wrap(obj):
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = description or (obj.__doc__ or "").strip().splitlines()[0] if (description or obj.__doc__) else ""
            self._entries[name] = Entry(name, obj, doc)
            obj.registry_name = name
            return obj

        return wrap

    def get(self, name: str):
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._entries))}")
        return self._entries[name].obj

    def entries(self) -> list[Entry]:
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def import_families(package: str, names: tuple[str, ...], namespace: dict | None = None) -> list[ModuleType]:
    """Import ``package.<name>`` for each family (they register themselves on import).

    With ``namespace`` (a package's ``globals()``), each module's ``__all__`` is re-exported
    there and appended to the namespace's ``__all__``.
    """
    modules = [import_module(f"{package}.{name}") for name in names]
    if namespace is not None:
        for module in modules:
            for attr in getattr(module, "__all__", ()):
                namespace[attr] = getattr(module, attr)
                namespace["__all__"].append(attr)
    return modules
