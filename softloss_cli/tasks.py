"""What a label means: the task a dataset declares and a loss accepts.

Kinds:
    multiclass  one int64 class index per sample.
    ordinal     one int64 class index whose order matters; ``label_values`` gives
                the value of each class (default 0..C-1), strictly increasing.
    multilabel  float multi-hot targets ``[N, C]``.
    partial     training targets ``[N, 2]`` int64: (class index, is_positive); a row
                with is_positive = 0 only says "the answer is not this class".
                Evaluation splits keep the ``base_kind`` targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASK_KINDS = ("multiclass", "ordinal", "multilabel", "partial")


@dataclass(frozen=True)
class Task:
    kind: str
    num_classes: int
    class_names: tuple[str, ...] = ()
    label_values: tuple[float, ...] | None = None
    base_kind: str | None = None  # for partial: the kind of the evaluation targets
    has_posterior: bool = False  # the generator knows p(y | x) for every sample
    extras: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.class_names:
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(self.num_classes)))
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.label_values is not None:
            values = tuple(float(v) for v in self.label_values)
            if len(values) != self.num_classes:
                raise ValueError(f"{len(values)} label values for {self.num_classes} classes")
            if any(b <= a for a, b in zip(values, values[1:])):
                raise ValueError("label values must be strictly increasing")
            object.__setattr__(self, "label_values", values)
        if self.kind == "partial" and self.base_kind not in ("multiclass", "ordinal"):
            raise ValueError("a partial task needs base_kind 'multiclass' or 'ordinal'")

    @property
    def eval_kind(self) -> str:
        """The kind of the validation/test targets (partial tasks evaluate on true labels)."""
        return self.base_kind if self.kind == "partial" else self.kind

    @property
    def values(self) -> tuple[float, ...]:
        """Ordinal label values (0..C-1 when the dataset declares none)."""
        return self.label_values or tuple(float(i) for i in range(self.num_classes))
