"""Decode a list of image files once into one uint8 tensor, cached under the data root.

``decode_all(paths, image_size, channels, cache_dir, ...)`` returns ``[N, C, S, S]`` uint8
(row i = ``load_image(paths[i])``) and the files that could not be read. The result is
stored as ``<cache_dir>/images-<key>.npy`` (+ ``.json``, what it holds), where ``<key>`` is a
digest of the file list with every file's size and modification time, the image size,
the channel count and the decoder's version: touching, replacing, adding or removing a
file, or asking another size, makes a new key, so a stale cache is never read. Old
entries are left in place (``rm -r <data root>/image_cache`` frees them).

Decoding runs in a thread pool (PIL releases the GIL while decoding and resizing).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softloss_cli.data.cache import atomic_write
from softloss_cli.data.images import load_image
from softloss_cli.errors import SoftlossError
from softloss_cli.progress import step

DECODER_VERSION = 2  # bump when load_image's output changes: every old cache entry is then ignored
ON_BAD_IMAGE = ("fail", "skip")


@dataclass
class Decoded:
    """What ``decode_all`` found: ``images`` ``[N, C, S, S]`` uint8 (None when streamed from disk),
    ``bad`` (index -> reason) for files that could not be read (their rows are zeros), and
    ``source``: ``hit`` (read from the cache), ``decoded`` (decoded now) or ``disk`` (too big to cache)."""

    images: torch.Tensor | None
    bad: dict[int, str] = field(default_factory=dict)
    source: str = "decoded"
    path: str | None = None


def cache_bytes(n: int, image_size: int, channels: int) -> int:
    """Bytes the decoded cache of ``n`` images takes: ``n * channels * image_size**2``."""
    return n * channels * image_size * image_size


def cache_key(paths: list[str], image_size: int, channels: int) -> str:
    """20 hex digits over (decoder version, size, channels, every file's path, size and mtime)."""
    digest = hashlib.sha256(json.dumps([DECODER_VERSION, int(image_size), int(channels)]).encode())
    for path in paths:
        st = os.stat(path)
        digest.update(f"\0{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _decode_one(args):
    path, image_size, channels = args
    try:
        return load_image(path, image_size, channels), None
    except SoftlossError as exc:
        return None, str(exc)


def decode_all(paths: list[str], image_size: int, channels: int, cache_dir: Path | None, *,
               max_gb: float = 8.0, workers: int | None = None) -> Decoded:
    """Every image of ``paths`` decoded once (see the module docstring).

    ``max_gb``: above this size (``cache_bytes``) nothing is decoded here (``source='disk'``):
    the caller streams the files instead. ``cache_dir`` None: decode without storing.
    """
    if cache_bytes(len(paths), image_size, channels) > float(max_gb) * 1e9:
        return Decoded(None, source="disk")
    key = cache_key(paths, image_size, channels)
    npy = Path(cache_dir) / f"images-{key}.npy" if cache_dir is not None else None
    if npy is not None and npy.is_file():
        try:
            meta = json.loads(npy.with_suffix(".json").read_text())
            images = torch.from_numpy(np.load(npy, allow_pickle=False))
            if images.shape == (len(paths), channels, image_size, image_size):
                return Decoded(images, {int(k): v for k, v in meta.get("bad", {}).items()}, "hit", str(npy))
        except (OSError, ValueError):
            pass  # unreadable entry: decode again and overwrite it
    images = torch.zeros((len(paths), channels, image_size, image_size), dtype=torch.uint8)
    bad: dict[int, str] = {}
    workers = workers or min(8, os.cpu_count() or 1)
    jobs = ((p, image_size, channels) for p in paths)
    where = f", cached in {cache_dir}" if cache_dir is not None else ""
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            step(f"decoding {len(paths):,} images at {image_size}px{where}", total=len(paths)) as bar:
        for i, (image, error) in enumerate(pool.map(_decode_one, jobs, chunksize=16)):
            if error is None:
                images[i] = image
            else:
                bad[i] = error
            bar.advance()
    if npy is not None:
        meta = {"files": len(paths), "image_size": image_size, "channels": channels, "decoder": DECODER_VERSION,
                "bad": {str(k): v for k, v in bad.items()}, "first_file": paths[0] if paths else None}
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            # The .json first: a reader finding the .npy always finds its list of bad files too.
            atomic_write(npy.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
            atomic_write(npy, lambda f: np.save(f, images.numpy()))
        except OSError as e:
            warnings.warn(f"could not cache decoded images under {cache_dir}: {e}", stacklevel=2)
    return Decoded(images, bad, "decoded", str(npy) if npy is not None else None)


def check_on_bad_image(value: str) -> str:
    if value not in ON_BAD_IMAGE:
        raise SoftlossError(f"data.on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, got {value!r}")
    return value
