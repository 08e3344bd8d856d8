"""Remake the TensorBoard screenshots of docs/tensorboard.md from a real sweep.

    python docs/screenshots/make_screenshots.py     # 5 min on the 2-core CPU, shared with other work

What it does: trains a small 2-job sweep (``-m loss=ce,rps`` on ``ordinal_images``, 6 epochs
of 3,000 images) into a temporary folder, starts TensorBoard on a loopback port, opens each
tab in a headless Chromium and saves ``docs/images/tensorboard_<tab>.png``; then stops
TensorBoard and removes the folder (``--keep`` keeps it and prints where).

Needs a Chromium (``apt install chromium``, or ``--chromium PATH``). Chromium runs with a
fresh profile and no network besides the loopback TensorBoard (flags below), so it also
works as root in a container.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SWEEP = ["-m", "loss=ce,rps", "seed=0", "data=ordinal_images", "trainer.epochs=6", "data.train_size=3000",
         "data.val_size=1000", "data.test_size=1000", "trainer.progress=plain", "trainer.device=cpu"]
#: (file name, URL fragment after the host, window size, milliseconds of page time to wait)
#: ``forceSVG``: TensorBoard draws its line charts with WebGL, which a headless Chromium
#: without a GPU renders blank; this TensorBoard option draws them as SVG instead.
SHOTS = [
    ("timeseries", "/?forceSVG=true#timeseries", (1500, 1000), 15000),
    ("timeseries_images", "/?forceSVG=true&tagFilter=test%2F#timeseries", (1500, 1000), 40000),
    ("scalars", "/?forceSVG=true#scalars", (1500, 1000), 15000),
    ("custom_scalars", "/?forceSVG=true#custom_scalars", (1500, 1000), 15000),
    ("images", "/#images", (1500, 1400), 20000),
    ("hparams", "/#hparams", (1800, 800), 15000),
    ("text", "/#text", (1500, 1000), 15000),
]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def find_chromium(given: str | None) -> str:
    for name in ([given] if given else ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]):
        path = shutil.which(name) if name else None
        if path:
            return path
    sys.exit("no Chromium found: apt install chromium (or pass --chromium PATH)")


def train_sweep(folder: Path) -> Path:
    sweep = folder / "sweep"
    cmd = [sys.executable, "-m", "softloss_cli", "train", *SWEEP, f"hydra.sweep.dir={sweep}",
           f"paths.data_root={folder / 'datasets'}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return sweep


def wait_for_tensorboard(url: str, runs: int, timeout_s: float = 120.0) -> None:
    """Until TensorBoard lists ``runs`` runs (it loads the event files in the background)."""
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as r:
                if len(json.loads(r.read())) >= runs:
                    time.sleep(3)  # let it finish reading the files it listed
                    return
        except OSError:
            pass
        time.sleep(1)
    sys.exit(f"TensorBoard did not answer on {url} within {timeout_s:.0f}s")


def screenshot(chromium: str, url: str, out: Path, size: tuple[int, int], budget_ms: int, profile: Path) -> None:
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
           f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="where the PNGs go")
    p.add_argument("--port", type=int, default=6199, help="TensorBoard's port on 127.0.0.1")
    p.add_argument("--chromium", help="path of the Chromium binary (default: found on PATH)")
    p.add_argument("--logdir", type=Path, help="screenshot this sweep instead of training one")
    p.add_argument("--keep", action="store_true", help="keep the temporary sweep folder")
    args = p.parse_args()
    chromium = find_chromium(args.chromium)
    folder = Path(tempfile.mkdtemp(prefix="softloss-screens-"))
    tensorboard = None
    try:
        logdir = args.logdir or train_sweep(folder)
        url = f"http://127.0.0.1:{args.port}"
        tensorboard = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                                        "--host", "127.0.0.1", "--port", str(args.port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_tensorboard(url, runs=2)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, path, size, budget in SHOTS:
            screenshot(chromium, url + path, args.out / f"tensorboard_{name}.png", size, budget,
                       folder / f"profile-{name}")
    finally:
        if tensorboard is not None:
            tensorboard.terminate()
            tensorboard.wait(timeout=30)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
