"""Checks of a run's config that need neither data nor a model, made before anything is
written: a refused run changes no file, and the message names the key.

- ``eval.checkpoint``: best | last (else the run would train, then fail to evaluate);
- ``data.*_size``: whole numbers >= 1 (``data.train_size=nan`` names the key instead of
  "cannot convert float NaN to integer"); ``data.num_workers``: a whole number >= 0;
- memory: the in-memory datasets need at least ``samples x image_size^2`` bytes (one uint8
  channel: a lower bound); a size that cannot fit in the available memory is refused with
  both numbers instead of a raw ``MemoryError`` minutes later.
"""

from __future__ import annotations

import math
import os

from softloss_cli.errors import SoftlossError

EVAL_CHECKPOINTS = ("best", "last")
#: the data keys that count samples (the memory estimate adds them up).
SAMPLE_KEYS = ("train_size", "val_size", "test_size")


def check_config(cfg) -> None:
    """Raise ``SoftlossError`` for a config value that would fail later (see the module doc)."""
    which = (cfg.get("eval") or {}).get("checkpoint", "best")
    if which not in EVAL_CHECKPOINTS:
        raise SoftlossError(f"eval.checkpoint must be one of {', '.join(EVAL_CHECKPOINTS)}, got {which!r}")
    data = cfg.get("data") or {}
    for key in data:
        if str(key).endswith("_size") and not str(key).endswith("batch_size") and data[key] is not None:
            whole_number(f"data.{key}", data[key], minimum=1)
    if data.get("num_workers") is not None:
        whole_number("data.num_workers", data["num_workers"], minimum=0)
    check_memory(data)


def whole_number(key: str, value, minimum: int) -> int:
    """``value`` as an int, or ``SoftlossError`` naming ``key`` (NaN, fractions, text, too small)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise SoftlossError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise SoftlossError(f"{key} must be >= {minimum}, got {value!r}")
    return int(value)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(data, available: int | None = None) -> None:
    """Refuse sample counts whose images cannot fit in memory (a lower bound, so a run that
    fits is never refused)."""
    sizes = {k: data.get(k) for k in SAMPLE_KEYS if isinstance(data.get(k), (int, float))}
    side = data.get("image_size")
    if not sizes or not isinstance(side, (int, float)):
        return
    need = int(sum(sizes.values()) * side * side)
    available = available_memory() if available is None else available
    if available is not None and need > available:
        keys = ", ".join(f"data.{k}={int(v)}" for k, v in sizes.items())
        raise SoftlossError(f"{keys} with data.image_size={int(side)} needs at least {need / 2**30:.1f} GiB of memory "
                            f"for the images; {available / 2**30:.1f} GiB is available: reduce data.train_size")
