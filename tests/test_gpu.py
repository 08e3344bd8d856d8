"""The fast GPU path: bf16/fp16 autocast, channels_last, torch.compile, NCCL DDP, the GPU benchmark.

Tests marked ``gpu`` need CUDA and are skipped cleanly without it (``make gpu-test`` runs
them on a CUDA machine). The unmarked ones check on the CPU what must not break there:
``trainer.compile`` (with the ``aot_eager`` backend: dynamo + AOTAutograd, no C++ build)
and the refusals of GPU-only settings.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GPU = [a for a in TINY if not a.startswith(("trainer.device", "trainer.precision"))] + [
    "trainer.device=cuda", "data=fake", "model=resnet18", "data.batch_size=32"]


def _finite_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics and all(math.isfinite(v) for v in metrics.values() if v is not None)
    return metrics


# --------------------------------------------------------------------------- on the CPU


@pytest.mark.slow
def test_compile_runs_on_cpu(tiny_train):
    proc, run_dir = tiny_train("model=small_cnn", "trainer.compile=aot_eager")
    _finite_metrics(run_dir)


@pytest.mark.slow
def test_bad_compile_backend_and_fp16_on_cpu_are_refused(cli, tmp_path, data_root):
    proc = cli("train", *TINY, "trainer.compile=nope", f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path}/a")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("softloss: error: trainer.compile must be true, false or a torch.compile backend "
                                   "(inductor, aot_eager, eager, cudagraphs...), got 'nope'")
    proc = cli("train", *TINY, "trainer.precision=fp16", "trainer.sync_bn=true", f"paths.data_root={data_root}",
               f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "softloss: error: trainer.precision=fp16 needs a CUDA device; on the CPU use fp32 or bf16"


def test_bf16_autocast_forward_on_cpu_keeps_losses_finite():
    """The CPU also has bf16 autocast (trainer.precision=bf16): the model runs in bf16, the loss
    in float32 (SoftmaxLoss turns autocast off), the gradient is finite."""
    from softloss_cli.losses import CrossEntropyLoss
    from softloss_cli.models import SmallCNN
    from softloss_cli.train.precision import Precision

    torch.manual_seed(0)
    model = SmallCNN((1, 16, 16), 5)
    precision = Precision("bf16", torch.device("cpu"))
    with precision.autocast():
        logits = model(torch.randn(8, 1, 16, 16))
    assert logits.dtype == torch.bfloat16
    loss = CrossEntropyLoss()(logits, torch.arange(8) % 5)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_autocast_runs(tiny_train, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    proc, run_dir = tiny_train(*GPU, f"trainer.precision={precision}")
    _finite_metrics(run_dir)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["scaler"] if precision == "fp16" else not state["scaler"]  # GradScaler only for fp16


@pytest.mark.gpu
@needs_cuda
def test_channels_last_gives_the_same_predictions():
    from softloss_cli.models import ResNet18

    torch.manual_seed(0)
    model = ResNet18((3, 32, 32), 10).cuda().eval()
    x = torch.randn(16, 3, 32, 32, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        a = model(x)
        model = model.to(memory_format=torch.channels_last)
        b = model(x.contiguous(memory_format=torch.channels_last))
    assert model.features.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_channels_last_auto_and_compile_run(tiny_train):
    proc, run_dir = tiny_train(*GPU, "trainer.precision=auto", "trainer.compile=true", "trainer.epochs=2")
    _finite_metrics(run_dir)
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[-1]["train/images_per_s"] > 0


@pytest.mark.gpu
@needs_cuda
def test_ddp_with_nccl_on_one_gpu(tmp_path, data_root):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "softloss_cli",
         "train", *GPU, "trainer.strategy=ddp", "trainer.sync_bn=true", f"paths.data_root={data_root}",
         f"hydra.run.dir={tmp_path}/run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _finite_metrics(tmp_path / "run")


@pytest.mark.gpu
@needs_cuda
def test_gpu_benchmark_runs(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu

        m = gpu.measure("cuda", quick=True, settings=gpu.SETTINGS[:2], data_root=tmp_path)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert all("error" not in r and r["runner"] > 0 and r["bare"] > 0 for r in m["rows"]), m["rows"]
    assert "Best setting" in gpu.render(m)
