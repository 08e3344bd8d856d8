"""torchvision's datasets, loaded whole into uint8 tensors: fake data for tests, CIFAR and MNIST.

torchvision is imported inside the builders: it costs about a second, and commands that
never build these datasets (``softloss --help``, config errors) should not pay it.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch

from softloss_cli.data.base import DATASETS, DataBundle, TensorSplit
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task


def stratified_split(targets: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Seeded split of ``range(len(targets))`` into ``[rest, part_1, ..., part_k]`` (sorted index tensors).

    Within each class, ``round(n_c * fraction_i)`` samples go to part ``i`` (rounding the
    cumulative fractions, so the parts never claim more than the class has) and the rest stay
    in ``rest``. ``targets`` are int64 class indices ``[N]``.
    """
    targets = torch.as_tensor(targets, dtype=torch.int64)
    n = len(targets)
    if n == 0:
        return [targets.new_empty(0) for _ in range(len(fractions) + 1)]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    # A stable sort of a random permutation groups samples by class in random order within each class.
    order = perm[torch.sort(targets[perm], stable=True).indices]
    labels = targets[order]
    counts = torch.bincount(labels)
    rank = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[labels]
    cumulative = torch.tensor(fractions, dtype=torch.float64).cumsum(0)
    edges = torch.floor(counts[labels, None] * cumulative + 0.5).long()  # [N, k]
    part = (rank[:, None] >= edges).sum(1)  # 0..k-1 -> part_1..part_k, k -> rest
    k = len(fractions)
    return [order[part == i].sort().values for i in (k, *range(k))]


def _to_splits(train_x, train_y, test_x, test_y, val_fraction: float, seed: int) -> dict[str, TensorSplit]:
    if not 0 <= val_fraction < 1:
        raise SoftlossError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    train_idx, val_idx = stratified_split(train_y, (val_fraction,), seed)
    return {
        "train": TensorSplit(train_x[train_idx], train_y[train_idx]),
        "val": TensorSplit(train_x[val_idx], train_y[val_idx]),
        "test": TensorSplit(test_x, test_y),
    }


@DATASETS.register("fake", "torchvision FakeData: random noise images with random labels (for tests)")
def build_fake(
    data_root: Path,
    *,
    train_size: int = 512,
    val_size: int = 128,
    test_size: int = 128,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
) -> DataBundle:
    """Random 3-channel images from torchvision's ``FakeData``, held in memory as uint8.

    FakeData seeds image ``i`` with ``i + random_offset`` (torch keeps the low 32 bits of a
    seed); seed ``s`` takes the block of images ``[s * total, (s + 1) * total)`` split into
    train, val and test, so no two splits or seeds share an image. ``data_root`` is unused.
    """
    from torchvision.datasets import FakeData
    from torchvision.transforms import PILToTensor

    sizes = {"train": int(train_size), "val": int(val_size), "test": int(test_size)}
    if min(sizes.values()) < 0 or sizes["train"] == 0:
        raise SoftlossError(f"data.train_size must be > 0 and val/test sizes >= 0, got {sizes}")
    if int(num_classes) < 1 or int(image_size) < 1:
        raise SoftlossError(
            f"data.num_classes and data.image_size must be >= 1, got {num_classes} and {image_size}"
        )
    shape = (3, int(image_size), int(image_size))
    splits, offset = {}, int(seed) * sum(sizes.values())
    for name, size in sizes.items():
        fake = FakeData(size, shape, int(num_classes), transform=PILToTensor(), random_offset=offset)
        offset += size
        items = [fake[i] for i in range(size)]  # FakeData only offers per-item access
        inputs = torch.stack([x for x, _ in items]) if items else torch.empty((0, *shape), dtype=torch.uint8)
        splits[name] = TensorSplit(inputs, torch.tensor([y for _, y in items], dtype=torch.int64))
    return DataBundle(
        name="fake",
        task=Task("multiclass", int(num_classes)),
        **splits,
        input_shape=shape,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
        augment_ok=True,
        info={"sizes": sizes, "seed": int(seed)},
    )


@dataclass(frozen=True)
class _Official:
    """How to load one of torchvision's official datasets."""

    torchvision_class: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment_ok: bool


# Per-channel mean/std of the official train sets on the 0..1 scale. CIFAR's std is the
# per-pixel one (the often copied 0.2023/0.1994/0.2010 are stds of per-image means).
OFFICIAL = {
    "cifar10": _Official("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": _Official("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    # Flips and crops turn digits into other shapes (a flipped 2 is no 2): no augmentation.
    "mnist": _Official("MNIST", (0.1307,), (0.3081,), False),
    "fashion_mnist": _Official("FashionMNIST", (0.2860,), (0.3530,), False),
}


def _read_official(name: str, folder: Path, train: bool, download: bool):
    """One split of a torchvision dataset as ``(uint8 [N, C, H, W], int64 [N], class names)``."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, OFFICIAL[name].torchvision_class)
    try:
        ds = cls(str(folder), train=train, download=download)
    except RuntimeError as e:
        if download:
            raise SoftlossError(f"could not download {name} to {folder}: {_one_line(e)}") from None
        # torchvision's "Dataset not found or corrupted": files missing or with a wrong checksum.
        raise SoftlossError(
            f"{name} not found under {folder}: put torchvision's files there or pass data.download=true"
        ) from None
    except URLError as e:
        raise SoftlossError(f"could not download {name} to {folder}: {_one_line(e)}") from None
    except (OSError, ValueError, AssertionError, EOFError, pickle.UnpicklingError) as e:
        raise SoftlossError(
            f"cannot read {name} under {folder} ({type(e).__name__}: {_one_line(e)}): "
            "replace the files with torchvision's or delete them and pass data.download=true"
        ) from None
    images = torch.as_tensor(ds.data)
    # MNIST-like sets are [N, H, W]; CIFAR is [N, H, W, C] (numpy, channels last).
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64), tuple(ds.classes)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_official(name: str, data_root: Path, download: bool, val_fraction: float, seed: int) -> DataBundle:
    """Official train/test files of ``name`` under ``data_root/name``; val is a seeded stratified
    ``val_fraction`` of the official train set, test the official test set."""
    folder = Path(data_root) / name
    train_x, train_y, classes = _read_official(name, folder, True, bool(download))
    test_x, test_y, _ = _read_official(name, folder, False, bool(download))
    splits = _to_splits(train_x, train_y, test_x, test_y, float(val_fraction), int(seed))
    spec = OFFICIAL[name]
    return DataBundle(
        name=name,
        task=Task("multiclass", len(classes), class_names=classes),
        **splits,
        input_shape=tuple(train_x.shape[1:]),
        mean=spec.mean,
        std=spec.std,
        augment_ok=spec.augment_ok,
        info={"sizes": {k: len(v) for k, v in splits.items()}, "folder": str(folder), "seed": int(seed)},
    )


@DATASETS.register(
    "cifar10", "CIFAR-10: 32x32 colour images, 10 classes (torchvision files under <data_root>/cifar10)"
)
def build_cifar10(
    data_root: Path, *, download: bool = False, val_fraction: float = 0.1, seed: int = 0
) -> DataBundle:
    """CIFAR-10 (50k train, 10k test); see ``load_official`` for the val split."""
    return load_official("cifar10", data_root, download, val_fraction, seed)


@DATASETS.register(
    "cifar100", "CIFAR-100: 32x32 colour images, 100 fine classes (files under <data_root>/cifar100)"
)
def build_cifar100(
    data_root: Path, *, download: bool = False, val_fraction: float = 0.1, seed: int = 0
) -> DataBundle:
    """CIFAR-100 with its 100 fine labels (50k train, 10k test); see ``load_official``."""
    return load_official("cifar100", data_root, download, val_fraction, seed)


@DATASETS.register("mnist", "MNIST: 28x28 handwritten digits, 10 classes (files under <data_root>/mnist)")
def build_mnist(
    data_root: Path, *, download: bool = False, val_fraction: float = 0.1, seed: int = 0
) -> DataBundle:
    """MNIST (60k train, 10k test); see ``load_official`` for the val split."""
    return load_official("mnist", data_root, download, val_fraction, seed)


@DATASETS.register(
    "fashion_mnist",
    "Fashion-MNIST: 28x28 clothing images, 10 classes (files under <data_root>/fashion_mnist)",
)
def build_fashion_mnist(
    data_root: Path, *, download: bool = False, val_fraction: float = 0.1, seed: int = 0
) -> DataBundle:
    """Fashion-MNIST (60k train, 10k test); see ``load_official`` for the val split."""
    return load_official("fashion_mnist", data_root, download, val_fraction, seed)
