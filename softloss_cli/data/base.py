"""What a dataset builder returns: a task and three splits.

A split is either a ``TensorSplit`` (the whole split as tensors, moved once to the
training device and sliced into batches there) or any ``torch.utils.data.Dataset``
returning ``(image_tensor, target)`` (data on disk, read by a DataLoader with workers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from softloss_cli.errors import SoftlossError
from softloss_cli.registry import Registry
from softloss_cli.tasks import Task

#: name -> builder ``f(data_root: Path, **params) -> DataBundle``; see ``softloss_cli/data/__init__.py``.
DATASETS = Registry("dataset")


@dataclass
class TensorSplit:
    """One split held as tensors.

    inputs: ``[N, C, H, W]`` uint8 images (0..255) or float32 ``[N, ...]`` already scaled;
    targets: int64 ``[N]`` (multiclass/ordinal), float ``[N, C]`` (multilabel) or int64
    ``[N, 2]`` (partial); posterior: optional true ``p(y|x)`` ``[N, C]``;
    extras: optional per-sample tensors (``[N, ...]``) carried into evaluation.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    posterior: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.inputs)
        if len(self.targets) != n:
            raise ValueError(f"{n} inputs but {len(self.targets)} targets")
        for name, t in {"posterior": self.posterior, **self.extras}.items():
            if t is not None and len(t) != n:
                raise ValueError(f"{name} has {len(t)} rows for {n} samples")

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, index: torch.Tensor) -> TensorSplit:
        """Rows ``index`` of every tensor (used by splitters and the DDP shard)."""
        return TensorSplit(
            self.inputs[index],
            self.targets[index],
            None if self.posterior is None else self.posterior[index],
            {k: v[index] for k, v in self.extras.items()},
        )


@dataclass
class DataBundle:
    """A dataset ready for training.

    input_shape: per-sample shape (``(C, H, W)`` or ``(D,)``); mean/std: per-channel
    normalisation applied to uint8 images on the device (ignored for float inputs);
    augment_ok: whether random crop + flip keeps the label (False for counting data);
    info: dataset facts worth logging (sizes, generator parameters, oracle values).
    """

    name: str
    task: Task
    train: TensorSplit | torch.utils.data.Dataset
    val: TensorSplit | torch.utils.data.Dataset
    test: TensorSplit | torch.utils.data.Dataset
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    augment_ok: bool = True
    info: dict = field(default_factory=dict)

    def split(self, name: str):
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self, name)


def check_targets(task: Task, split_name: str, targets: torch.Tensor) -> None:
    """Refuse labels outside ``[0, num_classes)`` (one line naming the split and the bad value)."""
    kind = task.kind if split_name == "train" else task.eval_kind
    if kind in ("multiclass", "ordinal", "partial"):
        labels = targets[:, 0] if kind == "partial" else targets
        if labels.numel() and (labels.min() < 0 or labels.max() >= task.num_classes):
            bad = labels[(labels < 0) | (labels >= task.num_classes)][0].item()
            raise SoftlossError(
                f"{split_name} split has label {bad} outside [0, {task.num_classes}) "
                f"for a {kind} task with {task.num_classes} classes"
            )
    elif kind == "multilabel" and (targets.ndim != 2 or targets.shape[-1] != task.num_classes):
        raise SoftlossError(f"{split_name} split: multilabel targets must be [N, {task.num_classes}]")
