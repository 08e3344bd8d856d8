"""Batches on the training device.

In-memory splits (``TensorSplit``) are moved to the device once and sliced by index:
no DataLoader, no workers, no host copies per step. Splits on disk (a torch Dataset)
go through a DataLoader with workers, pinned memory and non-blocking copies. Both give
the same order for the same (seed, epoch), so a resumed run sees the batches an
uninterrupted one would, and both can shard for DDP (rank r takes every world-th sample).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from softloss_cli.data.augment import random_crop_flip
from softloss_cli.data.base import TensorSplit


@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    extras: dict[str, torch.Tensor]


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, salt): order and augmentation."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + salt) % (2**63))


#: an in-memory uint8 split whose float32 copy is at most this size is normalised once, when
#: its loader is made, instead of batch by batch (on the CPU that is ~1% of a small CNN's
#: step); a larger one stays uint8 on the device (a quarter of the memory).
NORMALIZE_ONCE_MAX_BYTES = 1 << 30


class Normalizer:
    """uint8 images -> float ``(x / 255 - mean) / std``; float inputs pass unchanged."""

    def __init__(self, mean, std, device):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x.float()
        return (x.float().div_(255.0) - self.mean) / self.std

    def all(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """A whole split normalised at once, ``chunk`` rows at a time (peak memory: the
        float32 result plus two chunks). Elementwise, so every batch sliced from it holds
        the very bits that normalising the batch gives."""
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        for start in range(0, len(x), chunk):
            out[start : start + chunk] = self(x[start : start + chunk])
        return out


class EpochLoader:
    """Iterates one split in batches on ``device``; call ``set_epoch`` before each epoch.

    Args:
        split: a TensorSplit (device-resident batching) or a torch Dataset (DataLoader).
        batch_size: per-process batch size.
        shuffle: draw a new order each epoch from (seed, epoch); else stored order.
        drop_last: drop the last incomplete batch (training only).
        augment: random crop + flip on the device (images only).
        rank, world_size: DDP sharding; rank r takes positions r, r + world, ...
        num_workers: DataLoader workers for Dataset splits.
    """

    def __init__(self, split, *, batch_size, device, mean, std, shuffle=False, drop_last=False,
                 augment=False, seed=0, rank=0, world_size=1, num_workers=0):
        self.split = split
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_workers = num_workers
        self.epoch = 0
        self.normalize = Normalizer(mean, std, self.device)
        self.in_memory = isinstance(split, TensorSplit)
        if self.in_memory:
            self.inputs = split.inputs.to(self.device)
            if self.inputs.dtype == torch.uint8 and 4 * self.inputs.numel() <= NORMALIZE_ONCE_MAX_BYTES:
                self.inputs = self.normalize.all(self.inputs)
            self.targets = split.targets.to(self.device)
            self.extras = {k: v.to(self.device) for k, v in split.extras.items()}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.split)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.drop_last:  # equal shards so every rank takes the same number of steps
                order = order[: n - n % self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self._order()) if self.world_size > 1 else len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self._order()
        # Each DDP rank draws its own crops and flips (rank 0 keeps the single-process draws).
        aug_gen = epoch_generator(self.seed, self.epoch, salt=1 + self.rank) if self.augment else None
        batches = self._tensor_batches(order) if self.in_memory else self._loader_batches(order)
        for x, y, extras in batches:
            x = self.normalize(x)
            if aug_gen is not None and x.ndim == 4:
                x = random_crop_flip(x, aug_gen)
            yield Batch(x, y, extras)

    def _tensor_batches(self, order):
        order = order.to(self.device)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.inputs[idx], self.targets[idx], {k: v[idx] for k, v in self.extras.items()}

    def _loader_batches(self, order):
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.split,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for item in loader:  # (images, targets) or (images, targets, {name: per-sample extras})
            x, y = item[0], item[1]
            extras = {k: v.to(self.device, non_blocking=True) for k, v in item[2].items()} if len(item) > 2 else {}
            yield (x.to(self.device, non_blocking=True), torch.as_tensor(y).to(self.device, non_blocking=True), extras)
