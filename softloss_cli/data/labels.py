"""Which classes a user's data has, in which order, and whether that order is ordinal.

Shared by ``data=image_folder`` (class folder names) and ``data=manifest`` (label names):

- ``data.classes: [...]`` fixes the class list and its order; a label outside it is refused;
- otherwise, when every name is a number (``0``, ``7``, ``12.5``, ``-3``) the classes are
  sorted **numerically** (``0, 1, 2, ..., 10``, never ``0, 1, 10, 2``); else in text order;
- ``data.task=auto`` makes all-numeric names an **ordinal** task whose label values are
  those numbers, any other names multiclass; ``data.task=ordinal`` forces ordinal (label
  values = the numbers, or ``0..C-1`` for names), ``data.task=multiclass`` forces multiclass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from softloss_cli.errors import SoftlossError

TASK_CHOICES = ("auto", "multiclass", "ordinal")


@dataclass(frozen=True)
class LabelOrder:
    """classes: names in label order; kind: multiclass | ordinal; values: ordinal label values
    (None: 0..C-1); order: ``numeric`` | ``text`` | ``given`` (data.classes)."""

    classes: tuple[str, ...]
    kind: str
    values: tuple[float, ...] | None
    order: str

    def describe(self) -> str:
        """One line for the run's log: ``ordinal, 30 classes in numeric order: 0, 1, ..., 28, 29 (label values: these numbers)``."""
        shown = _shorten(list(self.classes))
        text = f"{self.kind}, {len(self.classes)} classes in {self.order} order: {shown}"
        if self.kind == "ordinal":
            text += " (label values: these numbers)" if self.values else " (label values 0..C-1)"
        return text


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _shorten(names: list[str], keep: int = 6) -> str:
    if len(names) <= 2 * keep:
        return ", ".join(names)
    return ", ".join(names[:keep]) + ", ..., " + ", ".join(names[-2:])


def numeric_value(name: str) -> float | None:
    """The number a class name spells (``'07'`` -> 7.0), or None (also for nan/inf)."""
    try:
        value = float(name)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def class_list(classes) -> list[str] | None:
    """``data.classes`` as a list of names (numbers written as YAML numbers become their text)."""
    if classes is None:
        return None
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise SoftlossError(f"data.classes must be a list of class names, e.g. data.classes=[cat,dog], got {classes!r}")
    names = [_number(c) if isinstance(c, float) else str(c) for c in classes]
    seen = set()
    for name in names:
        if name in seen:
            raise SoftlossError(f"data.classes names '{name}' twice")
        seen.add(name)
    return names


def resolve_label_order(found, task: str = "auto", classes=None, where: str = "the data") -> LabelOrder:
    """The class order and task kind for the label names ``found`` (see the module docstring).

    ``where`` names the source in messages (``data.root /x``). Refuses: an unknown
    ``data.task``; a found name missing from ``data.classes``; fewer than 2 classes; two names
    with the same number (``1`` and ``01``); a given order of numbers that is not increasing
    for an ordinal task.
    """
    if task not in TASK_CHOICES:
        raise SoftlossError(f"data.task must be one of {', '.join(TASK_CHOICES)}, got {task!r}")
    given = class_list(classes)
    found = sorted(set(found))
    if given is not None:
        unknown = [n for n in found if n not in given]
        if unknown:
            raise SoftlossError(f"{where} has class '{unknown[0]}' that is not in data.classes "
                                f"({', '.join(given)})")
        names, order = given, "given"
    else:
        names, order = found, "text"
    numbers = [numeric_value(n) for n in names]
    numeric = bool(names) and all(v is not None for v in numbers)
    if numeric:
        by_number = {}
        for name, value in zip(names, numbers):
            if value in by_number:
                raise SoftlossError(f"{where} has classes '{by_number[value]}' and '{name}' with the same number")
            by_number[value] = name
        if given is None:
            names = sorted(names, key=numeric_value)
            numbers = sorted(numbers)
            order = "numeric"
    if len(names) < 2:
        raise SoftlossError(f"{where} has {len(names)} class{'es' if len(names) != 1 else ''}"
                            f"{' (' + names[0] + ')' if names else ''}: a classifier needs at least 2")
    kind = "ordinal" if task == "ordinal" or (task == "auto" and numeric) else "multiclass"
    values = None
    if kind == "ordinal" and numeric:
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise SoftlossError(f"data.classes of an ordinal task with numeric names must be in increasing "
                                f"order, got {', '.join(names)}")
        values = tuple(float(v) for v in numbers)
    return LabelOrder(tuple(names), kind, values, order)
