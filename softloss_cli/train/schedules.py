"""Learning-rate schedules stepped once per optimiser step (``_target_`` of ``configs/sched``)."""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def _warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    return int(total_steps * warmup_fraction)


def cosine(optimizer, total_steps: int, warmup_fraction: float = 0.0, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to ``min_lr_ratio * lr``."""
    warmup = _warmup_steps(total_steps, warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer, total_steps: int, warmup_fraction: float = 0.0) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of the steps, then the base learning rate."""
    warmup = _warmup_steps(total_steps, warmup_fraction)
    return LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup else 1.0)
