"""Cache generated arrays under the data root, keyed by the generator's parameters.

A generator run is stored as ``<name>-<hash>.npz`` plus ``<name>-<hash>.json`` (generator
name, version and every parameter), where ``<hash>`` is a short digest of that manifest.
Generators are seeded, so a missing or unreadable file is simply generated again, bit for
bit; bumping ``version`` invalidates old files when a generator changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from softloss_cli.progress import step


def cache_key(name: str, version: int, params: dict) -> str:
    """File stem ``<name>-<10 hex digits>`` for these parameters (order of keys does not matter)."""
    manifest = json.dumps({"generator": name, "version": version, "params": params}, sort_keys=True)
    return f"{name}-{hashlib.sha256(manifest.encode()).hexdigest()[:10]}"


def cached_arrays(
    data_root: Path,
    name: str,
    version: int,
    params: dict,
    generate: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Arrays of ``generate()`` for ``params``: loaded from the cache, or generated and stored.

    ``params`` must be JSON-serialisable (it is written to the manifest as is). A cache
    that cannot be written (read-only data root) only warns: the data is still returned.
    """
    stem = cache_key(name, version, params)
    path = Path(data_root) / f"{stem}.npz"
    arrays = _load(path)
    if arrays is not None:
        return arrays
    sizes = ", ".join(f"{k[:-5]} {v:,}" for k, v in params.items() if k.endswith("_size") and isinstance(v, int))
    with step(f"generating {name} ({sizes or 'first use'}), cached in {Path(data_root)}"):
        arrays = generate()
    manifest = {"generator": name, "version": version, "params": params, "arrays": sorted(arrays)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The .npz is the cache hit test, so it is written last: a reader never sees it without its manifest.
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(manifest, indent=2).encode()))
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        warnings.warn(f"could not cache {name} data under {data_root}: {e}", stacklevel=2)
    return arrays


def _load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # unreadable (e.g. a disk filled mid-copy): regenerate and overwrite


def atomic_write(path: Path, write: Callable) -> None:
    """Write through a temporary file in the same folder, then rename (concurrent runs stay safe)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
