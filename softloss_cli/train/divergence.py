"""Divergence beyond NaN: a run whose losses stay finite but blow up is stopped and recorded
``diverged``, not reported "ok" with chance-level numbers.

Checked once per epoch, on the validation NLL (``val/nll``; the training epoch loss for tasks
without one, e.g. multilabel):

- **growth**: more than ``trainer.diverge_factor`` times its first-epoch value (default 100;
  overfitting raises a validation NLL by a few times, not by two orders of magnitude);
- **absurd**: above ``trainer.diverge_limit`` in absolute value (default 1e6; a mean NLL of
  1e6 needs logits of that size, whatever the data), which also catches a run that is
  already broken in its first epoch.

Either one off with ``null``. The first-epoch value travels in ``last.pt`` so that a resumed
run compares with the same reference.
"""

from __future__ import annotations

import math

from softloss_cli.errors import DivergedError

#: the validation losses looked for, in order; the training epoch loss when none is there.
LOSS_KEYS = ("val/nll", "train/epoch_loss")


def watched_loss(values: dict[str, float]) -> tuple[str, float] | None:
    """``(name, value)`` of the loss the divergence check watches, or None."""
    for key in LOSS_KEYS:
        if key in values:
            return key, float(values[key])
    return None


def check_divergence(values: dict[str, float], reference: float | None, epoch: int, factor, limit,
                     last_good: str) -> float | None:
    """Raise ``DivergedError`` naming the epoch (1-based, as printed) when the watched loss is
    beyond ``limit`` or above ``factor`` x ``reference`` (its first-epoch value); return the
    reference to keep (this epoch's value when there was none yet)."""
    found = watched_loss(values)
    if found is None:
        return reference
    name, value = found
    where = f"at epoch {epoch + 1}"
    if limit is not None and not abs(value) <= float(limit):
        raise DivergedError(f"{name} = {value:.4g} {where} is beyond trainer.diverge_limit={float(limit):g}: "
                            f"the run diverged; the last good checkpoint is {last_good}")
    if reference is None or not math.isfinite(reference):
        return value
    if factor is not None and reference > 0 and value > float(factor) * reference:
        raise DivergedError(f"{name} grew to {value:.4g} {where}, more than trainer.diverge_factor={float(factor):g} "
                            f"times its first-epoch value {reference:.4g}: the run diverged; the last good "
                            f"checkpoint is {last_good}")
    return reference
