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


#: headline metrics per task kind (bare names, in column order): the report's default
#: columns (on the test split) and the TensorBoard custom-scalars charts.
HEADLINE = {
    "multiclass": ("accuracy", "nll", "ece", "mean_max_prob"),
    "ordinal": ("accuracy", "mae", "mae_expected", "rps", "qwk", "off1_acc", "group8_sum_mae", "group_sum_mae"),
    "multilabel": ("map", "f1_micro", "f1_macro", "exact_match", "empty_fpr", "mean_active"),
    "partial": ("accuracy", "nll", "neg_violation_rate"),
}
#: scenario datasets whose question needs other columns than their task kind's defaults.
DATA_HEADLINE = {
    "routing_images": ("accuracy", "decisive_share_90", "decisive_share_99", "mean_entropy",
                       "gate_decisive_share_99", "gate_mean_entropy", "soft_route_acc", "hard_route_acc",
                       "hard_route_gap"),
    "ambiguous_images": ("accuracy", "avgk_acc_k1", "avgk_acc_k2", "avgk_acc_k3", "avgk_acc_k5",
                         "avgk_macro_acc_k3", "avgk_set_size_k3", "avgk_oracle_acc_k3"),
}


def infer_kind(names) -> str:
    """The task kind a run's metric names imply (for runs without ``task.json``)."""
    bare = {n.rsplit("/", 1)[-1] for n in names}
    if "map" in bare or "f1_micro" in bare:
        return "multilabel"
    if "neg_violation_rate" in bare:
        return "partial"
    if "mae" in bare or "qwk" in bare or "rps" in bare:
        return "ordinal"
    return "multiclass"


def headline_metrics(kind: str, data: str | None = None) -> tuple[str, ...]:
    """Bare names of the headline metrics of a task kind (or of a scenario dataset)."""
    if data in DATA_HEADLINE:
        return DATA_HEADLINE[data]
    return HEADLINE.get(kind, HEADLINE["multiclass"])
