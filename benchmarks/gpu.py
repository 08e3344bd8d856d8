"""The GPU path: resnet18 at batch 512 on 3x32x32 images held on the device, per setting.

For each setting (precision fp32 | bf16 | fp16 + GradScaler, channels_last on/off,
``trainer.compile`` on/off) the runner (``softloss train``) and the bare loop train the same
model on the same ``fake`` tensors for several short epochs; the figure of each is the median
images/s over the epochs after the first (warm-up: cudnn autotuning, compilation), validation
included on both sides. Then the share of step time spent waiting for data: one epoch of the
runner's ``EpochLoader`` alone (index + normalise on the device, with and without the random
crop + flip), synchronised, over the time of a training epoch at the best setting.

Needs CUDA for real figures; ``--device cpu --quick`` runs the same code on a tiny config
(the tests do, so this file cannot rot on machines without a GPU).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import PYTHON, REPO, Section, median, run_timed, table
from overhead import softloss_cmd

# (precision, channels_last, compile): the precision x layout grid, then compile on the best.
SETTINGS = [("fp32", False, False), ("fp32", True, False), ("fp16", False, False), ("fp16", True, False),
            ("bf16", False, False), ("bf16", True, False), ("bf16", True, True)]
FULL = {"model": "resnet18", "batch": 512, "steps": 100, "epochs": 6, "val": 1024}
QUICK = {"model": "resnet18", "batch": 8, "steps": 2, "epochs": 2, "val": 8}
DATA_WAIT_TARGET = 0.05


def commands(setting, c: dict, device: str, data_root: Path, run_dir: Path) -> tuple[list[str], list[str]]:
    precision, channels_last, compile_ = setting
    train = c["batch"] * c["steps"]
    bare = [PYTHON, str(REPO / "benchmarks" / "bare_loop.py"), "--data", "fake", "--model", c["model"],
            "--data-root", str(data_root), "--train-size", str(train), "--val-size", str(c["val"]),
            "--test-size", str(c["val"]), "--epochs", str(c["epochs"]), "--batch-size", str(c["batch"]),
            "--device", device, "--precision", precision]
    bare += (["--channels-last"] if channels_last else []) + (["--compile"] if compile_ else [])
    runner = softloss_cmd() + [
        "train", "data=fake", f"model={c['model']}", "loss=ce", f"data.train_size={train}",
        f"data.val_size={c['val']}", f"data.test_size={c['val']}", f"data.batch_size={c['batch']}",
        f"trainer.epochs={c['epochs']}", f"trainer.device={device}", f"trainer.precision={precision}",
        f"trainer.channels_last={str(channels_last).lower()}", f"trainer.compile={str(compile_).lower()}",
        "trainer.progress=none", f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}",
    ]
    return bare, runner


def steady(rates: list[float]) -> float:
    """Median images/s over the epochs after the first (the first one warms up)."""
    return median(rates[1:] if len(rates) > 1 else rates)


def data_wait(device: str, c: dict) -> dict:
    """Seconds per epoch of the loader alone (index, normalise[, augment]) on the device."""
    import torch

    from softloss_cli.data.loaders import EpochLoader
    from softloss_cli.data.torchvision_sets import build_fake

    n = c["batch"] * c["steps"]
    data = build_fake(Path("."), train_size=n, val_size=0, test_size=0)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for augment in (False, True):
        loader = EpochLoader(data.train, batch_size=c["batch"], device=device, mean=data.mean, std=data.std,
                             shuffle=True, drop_last=True, augment=augment)
        times = []
        for epoch in range(4):
            loader.set_epoch(epoch)
            sync()
            t0 = time.perf_counter()
            for batch in loader:
                batch.inputs.contiguous(memory_format=torch.channels_last)
            sync()
            times.append(time.perf_counter() - t0)
        out["augment" if augment else "plain"] = median(times[1:])
    out["images"] = n
    return out


def measure(device: str = "cuda", quick: bool = False, settings=SETTINGS, data_root: Path | None = None) -> dict:
    c = QUICK if quick else FULL
    data_root = Path(data_root or REPO / "datasets")
    rows = []
    with tempfile.TemporaryDirectory(prefix="softloss-gpu-") as tmp:
        for i, setting in enumerate(settings):
            run_dir = Path(tmp) / f"run{i}"
            bare_cmd, runner_cmd = commands(setting, c, device, data_root, run_dir)
            _, bare = run_timed(bare_cmd)
            _, runner = run_timed(runner_cmd, env={"PYTHONUNBUFFERED": "1"})
            if bare.returncode or runner.returncode:
                failed = bare if bare.returncode else runner
                rows.append({"setting": setting, "error": (failed.stderr.strip().splitlines() or ["?"])[-1][:120]})
                continue
            bare_rates = json.loads(bare.stdout.strip().splitlines()[-1])["epoch_images_per_s"]
            history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines() if x.strip()]
            runner_rates = [h["train/images_per_s"] for h in history]
            rows.append({"setting": setting, "bare": steady(bare_rates), "runner": steady(runner_rates),
                         "bare_epochs": bare_rates, "runner_epochs": runner_rates})
    return {"config": c, "device": device, "rows": rows, "data_wait": data_wait(device, c)}


def render(m: dict) -> str:
    c = m["config"]
    rows, best = [], None
    for r in m["rows"]:
        precision, cl, comp = r["setting"]
        name = [precision + (" + GradScaler" if precision == "fp16" else ""), "channels_last" if cl else "NCHW",
                "compile" if comp else "eager"]
        if "error" in r:
            rows.append([*name, "-", "-", f"failed: {r['error']}"])
            continue
        rows.append([*name, f"{r['bare']:,.0f}", f"{r['runner']:,.0f}", f"{r['runner'] / r['bare']:.3f}"])
        if best is None or r["runner"] > best["runner"]:
            best = r
    md = [f"`{c['model']}`, batch {c['batch']}, 3x32x32 `fake` images on the device, {c['steps']} steps per epoch, "
          f"{c['epochs']} epochs; images/s = median over epochs 2..{c['epochs']} (validation of {c['val']} images "
          "included on both sides).", "",
          table(["precision", "layout", "compile", "bare loop img/s", "softloss img/s", "softloss / bare"], rows)]
    if best is not None:
        w = m["data_wait"]
        epoch_s = w["images"] / best["runner"]
        share, share_aug = w["plain"] / epoch_s, w["augment"] / epoch_s
        p, cl, comp = best["setting"]
        md += ["", f"Best setting: {p}, {'channels_last' if cl else 'NCHW'}, {'compile' if comp else 'eager'}: "
               f"{best['runner']:,.0f} img/s = **{best['runner'] / best['bare']:.1%} of the bare loop** with the same setting.",
               "", f"Waiting for data (the loader alone, synchronised, over a training epoch at the best setting): "
               f"**{share:.1%}** (index + normalise), {share_aug:.1%} with random crop + flip on the device; target "
               f"under {DATA_WAIT_TARGET:.0%}: **{'met' if max(share, 0) < DATA_WAIT_TARGET else 'missed'}**. "
               "An upper bound: in training these kernels overlap with the model's on the stream."]
    return "\n".join(md)


def verdicts(m: dict) -> list:
    ok = [r for r in m["rows"] if "error" not in r]
    if not ok:
        return [("GPU path", "failed", "-", False)]
    best = max(ok, key=lambda r: r["runner"])
    share = m["data_wait"]["plain"] / (m["data_wait"]["images"] / best["runner"])
    return [("GPU best setting, runner / bare", f"{best['runner'] / best['bare']:.1%}", "report", None),
            ("GPU waiting for data", f"{share:.1%}", f"< {DATA_WAIT_TARGET:.0%}", share < DATA_WAIT_TARGET)]


def run(quick: bool = False, device: str = "cuda") -> Section:
    m = measure(device, quick, SETTINGS[:1] if quick else SETTINGS)
    m["verdicts"] = verdicts(m)
    return Section("GPU path", render(m), m)
