"""DDP (``trainer.strategy=ddp``): the pieces of ``train/distributed.py`` and whole runs under
``torchrun --nproc_per_node=2`` with the gloo backend on the CPU.

Tolerance of the DDP-vs-one-process comparison. Both train the same MLP (no BatchNorm, whose
statistics are per rank) on the same global batches with one thread per process; they differ
only in the order of float32 additions (the gradient is the mean of two half-batch means,
all-reduced, instead of one mean). SGD amplifies that rounding step after step: when this
was written the first epoch's validation NLL differed by 3e-10 (relative), the final
metrics after two epochs at a constant lr of 0.05 by up to 2e-4. So: validation metrics of
the first epoch within 1e-6 relative, final val/test metrics within 1e-3 relative (absolute
below 1), predictions' logits within 1e-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softloss_cli.errors import SoftlossError
from softloss_cli.train import distributed
from softloss_cli.train.distributed import DistEnv, first_host, interleave, launcher_env

REPO = Path(__file__).resolve().parents[1]
FIRST_EPOCH_RTOL, FINAL_RTOL = 1e-6, 1e-3
TINY_DDP = [
    "model=mlp", "sched=constant", "trainer.device=cpu", "trainer.precision=fp32", "trainer.progress=none",
    "data.train_size=512", "data.val_size=130", "data.test_size=131", "data.batch_size=64", "data.eval_batch_size=32",
    "trainer.threads=1",  # as torchrun's processes (OMP_NUM_THREADS=1): the same kernels on both sides
    # A second head that loss=ce never reads (as the Average-K preset's ce baseline): DDP must
    # find its unused parameters, or the first backward stops the run.
    "model.heads=two",
]


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 12])
def test_interleave_restores_stored_order(world, n):
    full = torch.arange(n * 3).view(n, 3) if n else torch.empty(0, 3, dtype=torch.long)
    rows = -(-n // world)
    parts = []
    for r in range(world):
        shard = full[r::world]  # what EpochLoader gives rank r (positions r, r + W, ...)
        pad = torch.full((rows - len(shard), 3), -1, dtype=full.dtype)
        parts.append(torch.cat([shard, pad]))
    assert torch.equal(interleave(parts, n), full)


def test_eval_loader_shards_are_what_interleave_expects():
    from softloss_cli.data.base import TensorSplit
    from softloss_cli.data.loaders import EpochLoader

    split = TensorSplit(torch.arange(11, dtype=torch.float32).view(11, 1), torch.arange(11))
    shards = []
    for r in range(3):
        loader = EpochLoader(split, batch_size=2, device="cpu", mean=(0.0,), std=(1.0,), rank=r, world_size=3)
        shards.append(torch.cat([b.targets for b in loader]))
    rows = max(len(s) for s in shards)
    padded = [torch.cat([s, s.new_zeros(rows - len(s))]) for s in shards]
    assert torch.equal(interleave(padded, 11), torch.arange(11))


@pytest.mark.parametrize("nodelist, host", [
    ("gpu[07-09,12],cpu1", "gpu07"), ("node1", "node1"), ("a[3,1]", "a3"), ("n-2[010-011]", "n-2010"),
    ("login01,login02", "login01"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID", "SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST")


@pytest.fixture
def clean_env(monkeypatch):
    """A copy of the environment without launcher variables (launcher_env writes to it)."""
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS})


def test_launcher_env_torchrun_and_slurm(monkeypatch, clean_env):
    assert launcher_env() is None
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert launcher_env() is None  # a one-task Slurm job is a single process
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[03-06]")
    assert launcher_env() == {"rank": 5, "local_rank": 1, "world_size": 8}
    assert os.environ["MASTER_ADDR"] == "gpu03"
    assert os.environ["MASTER_PORT"] == str(20000 + 123456 % 20000)
    assert (os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == ("5", "1", "8")
    assert not distributed.is_main_process()
    monkeypatch.setenv("RANK", "0")  # torchrun's variables win
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert launcher_env() == {"rank": 0, "local_rank": 0, "world_size": 2}
    assert distributed.is_main_process()


def test_setup_refuses_mismatched_launch(monkeypatch, clean_env):
    with pytest.raises(SoftlossError, match=r"trainer.strategy must be one of single, ddp, got 'fsdp'"):
        distributed.setup("fsdp", "cpu")
    with pytest.raises(SoftlossError, match=r"trainer.strategy=ddp needs one process per device .* torchrun"):
        distributed.setup("ddp", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SoftlossError, match=r"one of 2 started by torchrun but trainer.strategy=single"):
        distributed.setup("single", "cpu")


def test_single_process_env_is_a_no_op():
    env = distributed.setup("single", "cpu")
    assert env.is_main and not env.distributed and env.world_size == 1
    model = torch.nn.Linear(2, 2)
    assert env.wrap(model) is model
    x = torch.tensor([1.0, 2.0])
    assert env.mean(x) is x
    pred = {"logits": torch.ones(3, 2)}
    assert env.gather_outputs(pred, 3) is pred
    assert env.all_objects("a") == ["a"]
    with pytest.raises(SoftlossError, match="trainer.sync_bn=true needs trainer.strategy=ddp on CUDA"):
        env.sync_bn(model)
    assert env.per_rank_batch(64) == 64
    with pytest.raises(SoftlossError, match="must be divisible by the 3 processes"):
        DistEnv("ddp", torch.device("cpu"), world_size=3).per_rank_batch(64)


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    env = DistEnv("ddp", torch.device("cpu"), rank, rank, world)
    results = {}
    for n in (0, 1, 5, 6):
        full = {"logits": torch.arange(n * 4, dtype=torch.float32).view(n, 4), "targets": torch.arange(n) * 10,
                "extra/flag": torch.arange(n) % 3 == 0}
        mine = {k: v[rank::world] for k, v in full.items()}
        if len(mine["targets"]) == 0:
            mine = {}  # a rank whose shard is empty produced no batches at all
        got = env.gather_outputs(mine, n)
        results[n] = all(torch.equal(got[k], full[k]) and got[k].dtype == full[k].dtype for k in full) if n else got == {}
    results["mean"] = env.mean(torch.tensor([float(rank)])).item()
    results["objects"] = env.all_objects({"rank": rank, "t": torch.tensor([rank])})[1]["rank"]
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({str(k): v for k, v in results.items()}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_outputs_with_gloo(tmp_path):
    """Two real gloo processes: every rank gets the whole split in stored order, dtypes kept
    (bool included), and a rank with no rows (n=1) still takes part."""
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"0": True, "1": True, "5": True, "6": True, "mean": 0.5, "objects": 1}


# --------------------------------------------------------------------------- whole runs


def torchrun(*args: str, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SOFTLOSS_DEBUG", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "softloss_cli", "train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _assert_one_set_of_outputs(run_dir: Path, epochs: int, launches: int = 1) -> None:
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts)
    # One TensorBoard events file per launch (rank 0's; a resumed run adds its own file).
    assert len([f for f in files if f.startswith("tb/")]) == launches, files
    # last.prev.pt: the checkpoint last.pt replaced, kept (train/checkpoint.py)
    assert [f for f in files if f.startswith("checkpoints/")] == ["checkpoints/best.pt", "checkpoints/last.prev.pt",
                                                                  "checkpoints/last.pt"]
    assert [f for f in files if f.startswith("predictions/")] == ["predictions/test.npz", "predictions/val.npz"]
    assert not [f for f in files if f.endswith(".tmp")], files
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines() if x.strip()]
    assert [h["epoch"] for h in history] == list(range(epochs))  # rank 0 alone wrote it
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]  # no second run dir


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A 2-epoch DDP run with 2 gloo processes (shared by the tests below)."""
    root = tmp_path_factory.mktemp("ddp")
    run_dir = root / "out" / "run"
    proc = torchrun(*TINY_DDP, "trainer.epochs=2", "trainer.strategy=ddp", f"paths.data_root={root / 'data'}",
                    f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, run_dir


@pytest.mark.slow
def test_ddp_matches_one_process_with_the_same_global_batch(ddp_run, cli):
    root, ddp_dir = ddp_run
    _assert_one_set_of_outputs(ddp_dir, 2)
    single_dir = root / "single"
    proc = cli("train", *TINY_DDP, "trainer.epochs=2", f"paths.data_root={root / 'data'}", f"hydra.run.dir={single_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, single = _metrics(ddp_dir), _metrics(single_dir)
    assert sorted(ddp) == sorted(single)
    assert {k for k in ddp if k.startswith("test/")}  # the test split was scored (on gathered outputs)
    far = {k: (ddp[k], single[k]) for k in ddp if abs(ddp[k] - single[k]) > FINAL_RTOL * max(1.0, abs(single[k]))}
    assert not far
    first = [json.loads((d / "history.jsonl").read_text().splitlines()[0]) for d in (ddp_dir, single_dir)]
    val = [k for k in first[1] if k.startswith("val/")]
    assert len(val) > 5
    far = {k: (first[0][k], first[1][k]) for k in val
           if abs(first[0][k] - first[1][k]) > FIRST_EPOCH_RTOL * max(1.0, abs(first[1][k]))}
    assert not far
    # The predictions hold the whole splits in stored order (gathered, padding dropped).
    import numpy as np

    for split, n in (("val", 130), ("test", 131)):
        a, b = np.load(ddp_dir / "predictions" / f"{split}.npz"), np.load(single_dir / "predictions" / f"{split}.npz")
        assert a["logits"].shape == (n, 30) and np.array_equal(a["targets"], b["targets"])
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-2)


@pytest.mark.slow
def test_ddp_resume_is_bitwise(ddp_run):
    root, ddp_dir = ddp_run
    run_dir = root / "resumed" / "run"
    common = [*TINY_DDP, "trainer.strategy=ddp", f"paths.data_root={root / 'data'}", f"hydra.run.dir={run_dir}"]
    first = torchrun(*common, "trainer.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2  # every rank's generators are kept
    second = torchrun(*common, "trainer.epochs=2", "trainer.resume=true")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run_dir / "metrics.json").read_bytes() == (ddp_dir / "metrics.json").read_bytes()
    _assert_one_set_of_outputs(run_dir, 2, launches=2)


@pytest.mark.slow
def test_ddp_without_a_launcher_is_refused(cli, tmp_path, data_root):
    proc = cli("train", *TINY_DDP, "trainer.strategy=ddp", f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path}/r")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("softloss: error: trainer.strategy=ddp needs one process per device started by a "
                                   "launcher: torchrun --nproc_per_node=N -m softloss_cli train ... (or "
                                   "hydra/launcher=submitit_slurm)")


@pytest.mark.slow
def test_torchrun_with_single_strategy_and_odd_batch_are_refused(tmp_path, data_root):
    proc = torchrun(*TINY_DDP, f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path}/a")
    assert proc.returncode != 0
    assert ("softloss: error: this process is one of 2 started by torchrun but trainer.strategy=single "
            "(each would train the same run); add trainer.strategy=ddp, or start one process") in proc.stderr
    proc = torchrun(*TINY_DDP, "trainer.strategy=ddp", "data.batch_size=63", f"paths.data_root={data_root}",
                    f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode != 0
    assert ("softloss: error: data.batch_size=63 (the global batch) must be divisible by the 2 processes of this "
            "DDP run") in proc.stderr
