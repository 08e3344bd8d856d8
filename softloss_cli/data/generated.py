"""Shared assembly of the generated (synthetic) datasets: split sizes, cached arrays, tensors.

Every synthetic builder normalises its split sizes, generates its arrays once per
parameter set (cached under ``data_root`` by ``cache.cached_arrays``; the cache key holds
``{split}_size`` for each split, then the builder's own parameters), and wraps the
arrays ``{split}_x`` / ``{split}_y`` (plus named per-sample extras ``{split}_{name}``)
into one ``TensorSplit`` a split. Pixel statistics are measured on the train split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from softloss_cli.data.base import TensorSplit
from softloss_cli.data.cache import cached_arrays

__all__ = ["SPLITS", "cached_splits", "pixel_stats", "split_sizes"]

SPLITS = ("train", "val", "test")


def split_sizes(train_size, val_size, test_size) -> dict[str, int]:
    """``{"train": n, "val": n, "test": n}`` as ints (so that 100 and 100.0 share one cache file)."""
    return {"train": int(train_size), "val": int(val_size), "test": int(test_size)}


def cached_splits(
    data_root: Path,
    name: str,
    version: int,
    sizes: dict[str, int],
    params: dict,
    generate: Callable[[], dict[str, np.ndarray]],
    *,
    extras: Sequence[str] = (),
) -> tuple[dict[str, TensorSplit], dict[str, np.ndarray]]:
    """The splits of a generated dataset, and its arrays (for the builder's own metadata).

    The arrays come from ``cached_arrays(data_root, name, version, {"{split}_size": ...,
    **params}, generate)``. Split ``s`` is ``TensorSplit({s}_x, {s}_y)`` with
    ``extras[e] = {s}_{e}`` for each name in ``extras``. Tensors share memory with the arrays.
    """
    key = {f"{s}_size": n for s, n in sizes.items()}
    key.update(params)
    arrays = cached_arrays(data_root, name, version, key, generate)
    splits = {}
    for s in SPLITS:
        splits[s] = TensorSplit(
            torch.from_numpy(arrays[f"{s}_x"]),
            torch.from_numpy(arrays[f"{s}_y"]),
            extras={e: torch.from_numpy(arrays[f"{s}_{e}"]) for e in extras},
        )
    return splits, arrays


def pixel_stats(split: TensorSplit, *, per_channel: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a split's uint8 images on the 0..1 scale: one value over all pixels,
    or one per channel (over samples and pixels) with ``per_channel``."""
    x = split.inputs.float().div_(255)
    if per_channel:
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).tolist())
    return (x.mean().item(),), (x.std().item(),)
