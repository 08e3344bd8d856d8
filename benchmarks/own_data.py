"""Own data: training images/s on a folder of PNG files against the same images held in memory.

A generated ``data=image_folder`` tree (``N`` RGB PNGs of 32x32 in 10 class folders) is built
with a fresh data root, so the first epoch pays for decoding every file into the uint8 cache
(``softloss_cli/data/image_cache.py``); later epochs train from that cache in memory. The
same decoded images are also wrapped as a plain in-memory ``TensorSplit`` (what the built-in
sets are), and epochs of both are timed alternately with the runner's own ``EpochLoader``,
``small_cnn`` and SGD at batch 256, fp32 on the CPU. Figures:

- first epoch: train images / (building the data from the files + one epoch);
- later epochs: median images/s of the cached folder and of the in-memory set, and their
  ratio (target >= 0.9);
- a second run's start: building the data again reads the cache instead of the files;
- for scale: one epoch read from disk per batch (``data.cache_max_gb=0``, DataLoader workers),
  i.e. what decoding every epoch would cost.

With a GPU (``--gpu on`` or auto) the same is measured on it, data on the device, with 20,000 images.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Section, median, spread, table

TARGET = 0.9
FULL = {"images": 3000, "size": 32, "batch": 256, "device": "cpu", "workers": 2}
QUICK = {"images": 300, "size": 32, "batch": 64, "device": "cpu", "workers": 2}
# On a GPU an epoch of 2,400 images is a handful of steps: 20,000 images, batch 512, 8 workers.
GPU = {"images": 20000, "size": 32, "batch": 512, "device": "cuda", "workers": 8}


def make_folder(root: Path, count: int, size: int) -> None:
    """``count`` random RGB PNGs of ``size``x``size`` (each class its own mean colour) in 10 folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        c = i % 10
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(25 * c, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def _epoch(model, optimizer, loader, epoch: int) -> float:
    """Seconds of one training epoch (forward, CE, backward, SGD step over every batch)."""
    import torch
    import torch.nn.functional as F

    loader.set_epoch(epoch)
    model.train()
    t0 = time.perf_counter()
    for batch in loader:
        loss = F.cross_entropy(model(batch.inputs), batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if loader.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(c: dict, repeats: int) -> dict:
    import torch

    from softloss_cli.data import build_data
    from softloss_cli.data.base import TensorSplit
    from softloss_cli.data.loaders import EpochLoader
    from softloss_cli.models import SmallCNN

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="softloss-own-data-") as tmp:
        folder, data_root = Path(tmp) / "images", Path(tmp) / "datasets"
        make_folder(folder, c["images"], c["size"])
        cfg = {"name": "image_folder", "root": str(folder), "image_size": c["size"], "val_fraction": 0.1,
               "test_fraction": 0.1}

        def loader(split, workers=0):
            return EpochLoader(split, batch_size=c["batch"], device=c["device"], mean=bundle.mean, std=bundle.std,
                               shuffle=True, drop_last=True, num_workers=workers)

        def fresh():
            model = SmallCNN(input_shape=[3, c["size"], c["size"]], num_classes=10).to(c["device"])
            return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        if c["device"] == "cuda":
            torch.backends.cudnn.benchmark = True

        t0 = time.perf_counter()
        bundle = build_data(cfg, data_root)
        build_s = time.perf_counter() - t0
        n = len(bundle.train) // c["batch"] * c["batch"]  # images trained per epoch (last batch dropped)
        cached = loader(bundle.train)
        memory = loader(TensorSplit(bundle.train.inputs.clone(), bundle.train.targets.clone()))
        model, optimizer = fresh()
        first_s = _epoch(model, optimizer, cached, 0)
        if c["device"] == "cuda":  # cudnn autotuning happens in the first epoch; count it there, not later
            _epoch(model, optimizer, memory, 0)
        cached_rates, memory_rates = [], []
        for i in range(repeats):  # alternate, so a drifting background load favours neither
            for name in (("cached", "memory") if i % 2 == 0 else ("memory", "cached")):
                rates = cached_rates if name == "cached" else memory_rates
                rates.append(n / _epoch(model, optimizer, cached if name == "cached" else memory, i + 1))
        t0 = time.perf_counter()
        again = build_data(cfg, data_root)
        hit_s = time.perf_counter() - t0
        streamed = build_data({**cfg, "cache_max_gb": 0}, data_root)
        disk_s = _epoch(model, optimizer, loader(streamed.train, workers=c["workers"]), 99)
    return {"images": c["images"], "train_images": len(bundle.train), "build_s": build_s, "first_epoch_s": first_s,
            "first_rate": n / (build_s + first_s), "cached_rates": cached_rates, "memory_rates": memory_rates,
            "ratio": median(cached_rates) / median(memory_rates), "cache_hit_s": hit_s,
            "hit_source": again.info["cache"], "second_start_rate": n / (hit_s + n / median(cached_rates)),
            "disk_rate": n / disk_s}


def run(repeats: int, quick: bool, gpu: bool = False) -> Section:
    c = QUICK if quick else (GPU if gpu else FULL)
    if gpu and quick:
        c = {**QUICK, "device": "cuda"}
    m = measure(c, repeats)
    ok = m["ratio"] >= TARGET
    rows = [
        ["first epoch: decode every file into the cache + train", f"{m['first_rate']:,.0f}",
         f"decode + cache write {m['build_s']:.1f} s, epoch {m['first_epoch_s']:.1f} s"],
        ["later epochs, cached folder (median)", f"{median(m['cached_rates']):,.0f}", spread(m["cached_rates"])],
        ["later epochs, the same images as an in-memory set (median)", f"{median(m['memory_rates']):,.0f}",
         spread(m["memory_rates"])],
        ["a second run's first epoch (cache hit)", f"{m['second_start_rate']:,.0f}",
         f"reading the cache {m['cache_hit_s']:.2f} s"],
        [f"for scale: decoding from disk every epoch ({c['workers']} workers)", f"{m['disk_rate']:,.0f}",
         "data.cache_max_gb=0"],
    ]
    text = (
        f"`data=image_folder` on {m['images']:,} generated 32x32 RGB PNGs in 10 class folders "
        f"({m['train_images']:,} train images), `small_cnn`, CE, SGD, batch {c['batch']}, "
        f"fp32 on the {'GPU, data on the device' if c['device'] == 'cuda' else 'CPU'}; {repeats} epochs of each kind, "
        f"alternated. Run: `python benchmarks/run_all.py --only own_data --gpu {'on' if gpu else 'off'} "
        "--out /tmp/own.md`.\n\n"
        + table(["epoch", "images/s", "detail"], rows)
        + f"\n\nLater epochs of the cached folder run at **{m['ratio']:.2f}x** the in-memory set "
        f"(target >= {TARGET}x: {'**met**' if ok else '**missed**'}): once decoded, a folder of files is an "
        "in-memory set. The first epoch pays for decoding once per file list, image size and channels."
    )
    where = "GPU" if c["device"] == "cuda" else "CPU"
    verdicts = [(f"own data, {where}: later epochs vs in-memory", f"{m['ratio']:.2f}x", f">= {TARGET}x", ok)]
    return Section(f"Own data: image folder vs in-memory set ({where})", text, {**m, "verdicts": verdicts})
