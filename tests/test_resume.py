"""Resume: a run continued from ``checkpoints/last.pt`` ends bitwise identical on the CPU to an
uninterrupted one (``metrics.json`` byte for byte, predictions array for array), whether it
stopped at an epoch's end or was killed in the middle of one; and the final evaluation's
reuse of the validation outputs gives exactly what a fresh pass over best.pt gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY

SMALL = [*TINY, "data.train_size=512", "data.val_size=160", "data.test_size=160", "trainer.threads=1"]


def _same_outputs(a: Path, b: Path) -> None:
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    for split in ("val", "test"):
        x, y = np.load(a / "predictions" / f"{split}.npz"), np.load(b / "predictions" / f"{split}.npz")
        assert sorted(x.files) == sorted(y.files)
        for name in x.files:
            assert np.array_equal(x[name], y[name]), (split, name)
    epochs = [[json.loads(line)["epoch"] for line in (d / "history.jsonl").read_text().splitlines()] for d in (a, b)]
    assert epochs[0] == epochs[1]  # the resumed history holds each epoch once


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("data=ambiguous_images", "loss=two_head", "loss.threshold=running", "model.heads=two")],
                         ids=["ce", "two_head_running_threshold"])
def test_one_epoch_then_resume_equals_two_epochs(tiny_train, tmp_path, extra):
    # A constant learning rate: the 1-epoch run's schedule is then the 2-epoch run's first half.
    # two_head with a running threshold carries state in the loss: the checkpoint must hold it.
    straight, _ = tiny_train(*SMALL, *extra, "sched=constant", "trainer.epochs=2", run_dir=tmp_path / "straight")
    resumed_dir = tmp_path / "resumed"
    tiny_train(*SMALL, *extra, "sched=constant", "trainer.epochs=1", run_dir=resumed_dir)
    assert json.loads((resumed_dir / "history.jsonl").read_text())["epoch"] == 0
    if not extra:
        # Resuming with another config is refused in one line, and the run's .hydra/ (which
        # Hydra overwrites on start) is put back as it was.
        saved = {n: (resumed_dir / ".hydra" / n).read_text() for n in ("config.yaml", "overrides.yaml")}
        proc, _ = tiny_train(*SMALL, "sched=constant", "trainer.epochs=2", "trainer.resume=true", "optim.lr=0.5",
                             run_dir=resumed_dir, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().startswith(
            "softloss: error: trainer.resume=true with another config than the run's (optim.lr: 0.05 -> 0.5)")
        assert {n: (resumed_dir / ".hydra" / n).read_text() for n in saved} == saved
    tiny_train(*SMALL, *extra, "sched=constant", "trainer.epochs=2", "trainer.resume=true", run_dir=resumed_dir)
    _same_outputs(tmp_path / "straight", resumed_dir)
    assert len(list((resumed_dir / "tb").iterdir())) == 2  # one events file per launch


@pytest.mark.slow
def test_killed_mid_epoch_then_resumed_equals_uninterrupted(tiny_train, tmp_path, data_root):
    """SIGKILL once epoch 1's checkpoint exists (so in epoch 2 or 3), then resume: cosine
    schedule, the configuration unchanged, as after a pre-empted cluster job."""
    args = [*SMALL, "model=small_cnn", "data.train_size=1024", "trainer.epochs=3"]
    tiny_train(*args, run_dir=tmp_path / "straight")
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "softloss_cli", "train", *args, f"paths.data_root={data_root}",
                             f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if finished or (run_dir / "metrics.json").exists():
        pytest.skip("the run ended before it could be killed (machine too fast for this size)")
    assert torch.load(last, weights_only=True)["epoch"] in (0, 1)
    tiny_train(*args, "trainer.resume=true", run_dir=run_dir)
    _same_outputs(tmp_path / "straight", run_dir)


@pytest.mark.slow
def test_resume_without_a_checkpoint_is_refused(cli, tmp_path, data_root):
    proc = cli("train", *SMALL, "trainer.resume=true", f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path}/none")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"softloss: error: trainer.resume=true but {tmp_path}/none/checkpoints/last.pt does "
                                   "not exist; pass hydra.run.dir=<the run to resume>")


def test_final_evaluation_reuses_val_outputs_exactly(compose_cfg, tmp_path, data_root):
    """What the loop caches for best.pt (val metrics + outputs of that epoch) equals a fresh
    evaluation of best.pt: the reuse saves a pass and changes no bit."""
    from softloss_cli.train import checkpoint as ckpt
    from softloss_cli.train.loop import build_setup, evaluate, final_evaluation, make_loader
    from softloss_cli.train.precision import Precision

    cfg = compose_cfg([*SMALL, "model=mlp", f"paths.data_root={data_root}"])
    device = torch.device("cpu")
    precision = Precision("fp32", device)
    ckpt.seed_everything(0)
    data, loss_fn, model = build_setup(cfg, device)
    cached = evaluate(model, make_loader(cfg, data, "val", device), loss_fn, precision, "val", data.task, False)
    ckpt.save_atomic({"model": model.state_dict()}, tmp_path / "a" / "checkpoints" / "best.pt")
    ckpt.save_atomic({"model": model.state_dict()}, tmp_path / "b" / "checkpoints" / "best.pt")
    with torch.no_grad():  # other weights in memory: best.pt must be what is evaluated
        for p in model.parameters():
            p.add_(1.0)
    fresh, fresh_out = final_evaluation(cfg, data, model, loss_fn, precision, tmp_path / "a", False, device)
    reused, reused_out = final_evaluation(cfg, data, model, loss_fn, precision, tmp_path / "b", False, device,
                                          val_cache=cached)
    assert fresh == reused
    assert torch.equal(fresh_out["val"].logits, reused_out["val"].logits)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
