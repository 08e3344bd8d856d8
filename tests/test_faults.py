"""Faults a careless user, a cluster scheduler and a flaky disk cause, and what softloss
guarantees for each (docs/faults.md): a run is never lost, mixed or silently wrong.

Unit tests first (locks, checkpoints, preflight checks, divergence, signals, the submitit
hook), then tiny end-to-end runs (``slow``): concurrent starts on one directory, reruns into
finished run and sweep directories, refused resumes that change no byte, corrupt checkpoints,
SIGTERM then resume, a finite blow-up, a killed sweep job.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, run_cli

from softloss_cli.errors import DivergedError, SoftlossError
from softloss_cli.runs import ownership
from softloss_cli.train import checkpoint as ckpt


def _error_line(proc, code: int) -> str:
    """The one stderr line of a refused command (its exit code asserted, no traceback)."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("softloss: warning:")]
    assert len(lines) == 1 and lines[0].startswith("softloss: error: "), proc.stderr
    return lines[0].removeprefix("softloss: error: ")


def _hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (the lock excepted: it lives only while a run does)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ownership.LOCK_NAME}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- ownership


def test_a_locked_directory_is_refused_naming_its_owner(tmp_path):
    lock = ownership.RunLock.acquire(tmp_path, "run")
    record = ownership.read_lock(tmp_path)
    assert record["pid"] == os.getpid() and record["host"] and record["start"]
    # another process: refused in one line naming the owner (flock is per open file, so a child)
    code = ("import sys; from softloss_cli.runs.ownership import RunLock\n"
            f"try: RunLock.acquire({str(tmp_path)!r}, 'run', hint='choose another hydra.run.dir')\n"
            "except Exception as e: print(e); sys.exit(2)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stdout.strip() == (f"{tmp_path} is in use by another run (pid {os.getpid()} on {record['host']} since "
                                   f"{record['start']}); choose another hydra.run.dir")
    lock.release()
    assert not (tmp_path / ownership.LOCK_NAME).exists()  # released: gone
    lock.release()  # idempotent


def test_a_stale_lock_is_taken_over_with_a_warning_and_another_hosts_is_not(tmp_path):
    import socket

    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "start": "then"}
    (tmp_path / ownership.LOCK_NAME).write_text(json.dumps(stale))
    with pytest.warns(UserWarning, match=rf"taking over the stale lock of {tmp_path} \(pid {stale['pid']} .*not running"):
        lock = ownership.RunLock.acquire(tmp_path)
    assert ownership.read_lock(tmp_path)["pid"] == os.getpid()
    lock.release()
    (tmp_path / ownership.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "start": "then"}))
    with pytest.raises(SoftlossError, match=r"is locked by pid 1 on elsewhere since then, another host: if that run "
                                            r"is no longer running, delete .*\.lock"):
        ownership.RunLock.acquire(tmp_path)
    # a requeued Slurm job takes over its own earlier incarnation's lock, wherever it ran
    (tmp_path / ownership.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "cluster_job": "77"}))
    os.environ["SLURM_JOB_ID"] = "77"
    try:
        with pytest.warns(UserWarning, match="a requeued run of the same Slurm job"):
            ownership.RunLock.acquire(tmp_path).release()
    finally:
        del os.environ["SLURM_JOB_ID"]


def test_default_names_are_unique_under_concurrent_starts(tmp_path):
    base = tmp_path / "ordinal_images-ce" / "2026-12-04_15-19-17"
    code = ("import sys; from pathlib import Path; from softloss_cli.runs.ownership import reserve_unique\n"
            f"print(reserve_unique(Path({str(base)!r})))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    names = sorted(p.communicate()[0].strip() for p in procs)
    assert names == sorted(str(base) + s for s in ("", "-1", "-2", "-3"))


def _make_run(folder: Path, status: str = "ok", last: bool = True) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "status.json").write_text(json.dumps({"status": status, "end": "then"}))
    if status == "ok":
        (folder / "metrics.json").write_text("{}")
    if last:
        ckpt.save_atomic({"epoch": 0}, folder / "checkpoints" / "last.pt")


def test_a_directory_that_holds_a_run_is_refused_resumed_or_moved_aside(tmp_path):
    run = tmp_path / "run"
    _make_run(run)
    before = _hashes(run)
    with pytest.raises(SoftlossError, match=rf"^{run} already holds a run \(status ok, then\); add trainer.resume=true "
                                            rf"to continue it, trainer.overwrite=true to move it aside into "
                                            rf"{run}/.overwritten/, or choose another hydra.run.dir$"):
        ownership.claim_run_dir(run, resume=False, overwrite=False, in_sweep=False)
    assert _hashes(run) == before and not (run / ownership.LOCK_NAME).exists()
    with pytest.raises(SoftlossError, match="contradict"):
        ownership.claim_run_dir(run, resume=True, overwrite=True, in_sweep=False)
    lock, plan = ownership.claim_run_dir(run, resume=True, overwrite=False, in_sweep=False)
    assert plan == "resume"
    lock.release()
    # a sweep re-run with resume: an ok job is left as it is, one without a checkpoint starts anew
    lock, plan = ownership.claim_run_dir(run, resume=True, overwrite=False, in_sweep=True)
    assert plan == "done"
    lock.release()
    _make_run(tmp_path / "failed", status="failed", last=False)
    lock, plan = ownership.claim_run_dir(tmp_path / "failed", resume=True, overwrite=False, in_sweep=True)
    assert plan == "overwrite"
    lock.release()
    lock, plan = ownership.claim_run_dir(run, resume=False, overwrite=True, in_sweep=False)
    moved = ownership.move_aside(run)
    lock.release()
    assert plan == "overwrite" and moved.parent == run / ".overwritten"
    assert _hashes(moved) == before and not ownership.holds_run(run)  # nothing lost, nothing mixed


# --------------------------------------------------------------------------- checkpoints


def _state() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    return {"model": model.state_dict(), "rng": ckpt.rng_state(), "epoch": 1, "step": 8, "best": 0.5}


def _zero_block(data: bytes) -> bytes:
    """One 4 KiB block zeroed inside the largest tensor's storage (the file stays a valid zip)."""
    import io
    import struct
    import zipfile

    info = max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + min(4096, info.file_size // 4)
    return data[:start] + bytes(4096) + data[start + 4096:]


@pytest.mark.parametrize(("damage", "what"), [
    (_zero_block, "its content does not match its checksum"),
    (lambda b: os.urandom(len(b)), "unreadable: truncated or not a PyTorch checkpoint"),
    (lambda b: b[: len(b) // 2], "unreadable: truncated or not a PyTorch checkpoint"),
    (lambda b: b"", "empty file"),
], ids=["zeroed_4k_block", "random_bytes", "truncated", "empty"])
def test_each_checkpoint_corruption_is_refused_naming_the_file_and_the_way_out(tmp_path, damage, what):
    last = tmp_path / "checkpoints" / "last.pt"
    ckpt.save_atomic(_state(), last, keep_previous=True)
    ckpt.save_atomic({**_state(), "epoch": 2}, last, keep_previous=True)
    prev = ckpt.previous_path(last)
    assert prev.name == "last.prev.pt" and ckpt.load(prev)["epoch"] == 1 and ckpt.load(last)["epoch"] == 2
    last.write_bytes(damage(last.read_bytes()))
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load_for_resume(last)
    assert str(info.value) == (f"checkpoint {last} is corrupt ({what}); {prev} is intact: resume from it with: "
                               f"mv {prev} {last}")
    os.replace(prev, last)  # the way out works: the checksum travels inside the file
    assert ckpt.load_for_resume(last)["epoch"] == 1


def test_a_checkpoint_without_a_good_alternative_says_so(tmp_path):
    last = tmp_path / "last.pt"
    ckpt.save_atomic(_state(), last)
    last.write_bytes(_zero_block(last.read_bytes()))
    with pytest.raises(ckpt.CheckpointError, match=r"corrupt \(its content does not match its checksum\); no intact"):
        ckpt.load_for_resume(last)


def test_a_full_disk_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    ckpt.save_atomic(_state(), last, keep_previous=True)
    before = last.read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(ckpt.CheckpointWriteError) as info:
        ckpt.save_atomic({**_state(), "epoch": 2}, last, keep_previous=True)
    assert str(info.value) == f"could not write checkpoint {last}: No space left on device; {last} is unchanged"
    assert info.value.exit_code == 1
    assert last.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """The child saves epoch 1, then starts epoch 2's and is killed once its bytes are on the
    way to disk (inside fsync, before the rename)."""
    last = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import os, sys, time, torch
        from pathlib import Path
        from softloss_cli.train import checkpoint as ckpt
        state = {{"model": torch.nn.Linear(256, 256).state_dict(), "epoch": 1}}
        ckpt.save_atomic(state, Path({str(last)!r}), keep_previous=True)
        def stuck(fd):
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = stuck
        ckpt.save_atomic({{**state, "epoch": 2}}, Path({str(last)!r}), keep_previous=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.load(last)["epoch"] == 1  # intact and verified
    assert (tmp_path / "last.pt.tmp").exists()  # the interrupted write, never read
    ckpt.save_atomic({"epoch": 3}, last, keep_previous=True)  # the next save goes through
    assert ckpt.load(last)["epoch"] == 3 and not (tmp_path / "last.pt.tmp").exists()


# --------------------------------------------------------------------------- checks before anything is written


@pytest.mark.parametrize(("override", "message"), [
    ("data.train_size=nan", "data.train_size must be a whole number >= 1, got nan"),
    ("data.val_size=12.5", "data.val_size must be a whole number >= 1, got 12.5"),
    ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
    ("eval.checkpoint=middle", "eval.checkpoint must be one of best, last, got 'middle'"),
])
def test_config_values_are_refused_naming_the_key(compose_cfg, override, message):
    from softloss_cli.runs.preflight import check_config

    with pytest.raises(SoftlossError) as info:
        check_config(compose_cfg([override]))
    assert str(info.value) == message


def test_sizes_that_cannot_fit_in_memory_are_refused_with_both_numbers(compose_cfg):
    from softloss_cli.runs.preflight import check_memory

    cfg = compose_cfg(["data.train_size=100000000"])
    with pytest.raises(SoftlossError) as info:
        check_memory(cfg.data, available=8 * 2**30)
    assert str(info.value) == ("data.train_size=100000000, data.val_size=5000, data.test_size=5000 with "
                               "data.image_size=32 needs at least 95.4 GiB of memory for the images; 8.0 GiB is "
                               "available: reduce data.train_size")
    check_memory(compose_cfg([]).data, available=8 * 2**30)  # the shipped sizes fit


# --------------------------------------------------------------------------- divergence and preemption


def test_finite_divergence_names_the_epoch():
    from softloss_cli.train.divergence import check_divergence

    ref = check_divergence({"val/nll": 2.3}, None, 0, 100, 1e6, "none")
    assert ref == 2.3 and check_divergence({"val/nll": 9.0}, ref, 1, 100, 1e6, "x") == 2.3  # overfitting is fine
    with pytest.raises(DivergedError, match=r"^val/nll grew to 250 at epoch 3, more than trainer.diverge_factor=100 "
                                            r"times its first-epoch value 2.3: the run diverged; the last good "
                                            r"checkpoint is best.pt$"):
        check_divergence({"val/nll": 250.0}, ref, 2, 100, 1e6, "best.pt")
    with pytest.raises(DivergedError, match=r"^val/nll = 2.3e\+12 at epoch 1 is beyond trainer.diverge_limit=1e\+06"):
        check_divergence({"val/nll": 2.3e12}, None, 0, 100, 1e6, "none")
    assert check_divergence({"val/nll": 2.3e12}, None, 0, None, None, "none") == 2.3e12  # both off
    # no validation NLL (multilabel): the training loss is watched
    with pytest.raises(DivergedError, match="^train/epoch_loss grew to"):
        check_divergence({"train/epoch_loss": 500.0}, 1.0, 1, 100, None, "x")


def test_preemption_signals_set_a_flag_and_handlers_are_restored():
    from softloss_cli.train.preemption import PreemptionGuard

    before = signal.getsignal(signal.SIGTERM)
    with PreemptionGuard() as guard:
        assert not guard.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert guard.requested and guard.name() == "SIGUSR1" and guard.previous_handler() is None
        os.kill(os.getpid(), signal.SIGTERM)  # the first signal is the one reported
        time.sleep(0.01)
        assert guard.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_requeued_job_resumes_by_itself(tmp_path, monkeypatch):
    """submitit's checkpoint hook (or Slurm itself) requeues a preempted job with its original
    overrides, under the same job id: the job continues from its checkpoint instead of being
    refused by its own directory."""
    from softloss_cli.runs.status import RunStatus

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    run = tmp_path / "job"
    RunStatus(run, ["seed=1"]).finish("preempted", "preempted by SIGUSR2", epoch=2, step=9)
    ckpt.save_atomic({"epoch": 1}, run / "checkpoints" / "last.pt")
    lock, plan = ownership.claim_run_dir(run, resume=False, overwrite=False, in_sweep=True)
    lock.release()
    assert plan == "resume"
    monkeypatch.setenv("SLURM_JOB_ID", "4243")  # another job: the directory is not its own
    with pytest.raises(SoftlossError, match="already holds a run"):
        ownership.claim_run_dir(run, resume=False, overwrite=False, in_sweep=True)


def test_joblib_runs_each_job_in_its_own_process():
    """hydra/launcher=joblib is softloss's subclass of the plugin's launcher (nothing patched),
    found by Hydra's plugin scan and running each job through execute_job_isolated."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra_plugins.hydra_joblib_launcher import _core
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    from omegaconf import OmegaConf

    from hydra_plugins.softloss_launchers import IsolatedJoblibLauncher

    # (Hydra's plugin scan re-executes plugin modules, so classes are compared by name)
    qualified = [f"{c.__module__}.{c.__name__}" for c in IsolatedJoblibLauncher.__mro__]
    assert f"{JoblibLauncher.__module__}.{JoblibLauncher.__name__}" in qualified
    assert qualified[0] in {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert _core.execute_job.__module__ == _core.__name__  # the plugin is left as it is
    cfg = OmegaConf.load(REPO / "softloss_cli" / "configs" / "hydra" / "launcher" / "joblib.yaml")
    assert cfg._target_ == "hydra_plugins.softloss_launchers.isolated_joblib.IsolatedJoblibLauncher"


# --------------------------------------------------------------------------- end to end

SMALL = [*TINY, "data.train_size=512", "data.val_size=160", "data.test_size=160", "trainer.threads=1"]


def _train(data_root, *args, env=None):
    return run_cli("train", *args, f"paths.data_root={data_root}", env=env)


@pytest.mark.slow
def test_concurrent_starts_never_share_a_directory(tmp_path, data_root):
    """Two launches at once with the default name: each its own directory (more starts:
    ``test_default_names_are_unique_under_concurrent_starts``); two launches on one explicit
    directory: one runs, the other is refused naming it (or the run it finds there)."""
    env = {**os.environ, "SOFTLOSS_RUNS_ROOT": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    shared = tmp_path / "shared"
    cmd = [sys.executable, "-m", "softloss_cli", "train", *TINY, "data=fake", f"paths.data_root={data_root}"]
    procs = [subprocess.Popen([*cmd, f"seed={s}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    procs += [subprocess.Popen([*cmd, f"seed={s}", f"hydra.run.dir={shared}"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (4, 5)]
    results = [(p.wait(), *p.communicate()) for p in procs]
    assert [r[0] for r in results[:2]] == [0, 0], results
    runs = sorted((tmp_path / "runs" / "fake-ce").iterdir())
    assert len(runs) == 2
    seeds = sorted(json.loads((r / "status.json").read_text())["overrides"][-1] for r in runs)
    assert seeds == ["seed=1", "seed=2"]
    for run in runs:  # one run per directory, its files its own
        assert len((run / "history.jsonl").read_text().splitlines()) == 1
        assert len(list((run / "tb").iterdir())) == 1
    codes = sorted(r[0] for r in results[2:])
    assert codes == [0, 2], results[2:]
    loser = next(r for r in results[2:] if r[0] == 2)
    message = loser[2].strip().splitlines()[-1]
    assert message.startswith(f"softloss: error: {shared} ")
    assert "is in use by another run (pid " in message or "already holds a run" in message
    assert len((shared / "history.jsonl").read_text().splitlines()) == 1
    winner = json.loads((shared / "status.json").read_text())["overrides"][-1]
    assert (shared / ".hydra" / "overrides.yaml").read_text().endswith(f"- {winner}\n")  # the same run's files


@pytest.mark.slow
def test_reruns_and_refused_resumes_change_no_byte_and_overwrite_moves_aside(tmp_path, data_root):
    run = tmp_path / "run"
    args = [*SMALL, "data=fake", f"hydra.run.dir={run}"]
    assert _train(data_root, *args).returncode == 0
    before = _hashes(run)
    refused = {
        "rerun": ([], f"{run} already holds a run (status ok, "),
        "other lr": (["trainer.resume=true", "optim.lr=0.5"],
                     "trainer.resume=true with another config than the run's (optim.lr: 0.05 -> 0.5)"),
        "bad monitor": (["trainer.overwrite=true", "trainer.monitor=val/acc"],
                        "trainer.monitor=val/acc is not a validation metric of this run; choose one of: val/accuracy"),
    }
    for name, (extra, start) in refused.items():
        message = _error_line(_train(data_root, *args, *extra), 2)
        assert message.startswith(start), (name, message)
        assert _hashes(run) == before, name  # status.json, .hydra/*, checkpoints: byte for byte
    assert not (run / ".overwritten").exists()
    proc = _train(data_root, *args, "trainer.overwrite=true", "seed=7")
    assert proc.returncode == 0, proc.stderr
    (moved,) = (run / ".overwritten").iterdir()
    assert _hashes(moved) == before  # the earlier run, whole
    assert "seed=7" in (run / ".hydra" / "overrides.yaml").read_text()
    assert len(list((run / "tb").iterdir())) == 1  # TensorBoard sees one run here, not two mixed
    report = run_cli("report", str(run))
    assert report.returncode == 0 and "(1 runs: 1 ok" in report.stdout, report.stdout  # the moved-aside run is not mixed in


@pytest.mark.slow
def test_corrupt_checkpoints_are_refused_by_resume_and_eval(tmp_path, data_root):
    run = tmp_path / "run"
    args = [*SMALL, "data=fake", "sched=constant", f"hydra.run.dir={run}"]
    assert _train(data_root, *args, "trainer.epochs=2").returncode == 0
    last, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    prev = run / "checkpoints" / "last.prev.pt"
    last.write_bytes(_zero_block(last.read_bytes()))
    before = _hashes(run)
    message = _error_line(_train(data_root, *args, "trainer.epochs=3", "trainer.resume=true"), 2)
    assert message == (f"checkpoint {last} is corrupt (its content does not match its checksum); {prev} is intact: "
                       f"resume from it with: mv {prev} {last}")
    assert _hashes(run) == before
    best.write_bytes(b"")
    message = _error_line(run_cli("eval", str(run)), 2)
    assert message == f"checkpoint {best} is corrupt (empty file); no intact checkpoint to use instead"
    os.replace(prev, last)
    message = _error_line(run_cli("eval", str(run)), 2)
    assert message == (f"checkpoint {best} is corrupt (empty file); {last} is intact: softloss eval {run} "
                       f"--checkpoint last")


@pytest.mark.slow
def test_sigterm_checkpoints_marks_preempted_and_resume_equals_uninterrupted(tmp_path, data_root):
    from test_resume import _same_outputs

    args = [*SMALL, "model=small_cnn", "data.train_size=1024", "trainer.epochs=2"]
    assert _train(data_root, *args, f"hydra.run.dir={tmp_path / 'straight'}").returncode == 0
    run = tmp_path / "preempted"
    proc = subprocess.Popen([sys.executable, "-m", "softloss_cli", "train", *args, f"paths.data_root={data_root}",
                             f"hydra.run.dir={run}"], cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "tb").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    if proc.returncode == 0:
        pytest.skip("the run ended before the signal arrived (machine too fast for this size)")
    assert proc.returncode == 128 + signal.SIGTERM, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("softloss: error: preempted by SIGTERM at epoch ") and "trainer.resume=true" in line
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "preempted" and status["epoch"] >= 1 and status["step"] >= 1
    assert not (run / ownership.LOCK_NAME).exists()  # released on this exit path too
    resumed = _train(data_root, *args, "trainer.resume=true", f"hydra.run.dir={run}")
    assert resumed.returncode == 0, resumed.stderr
    _same_outputs(tmp_path / "straight", run)


@pytest.mark.slow
def test_a_finite_blow_up_is_marked_diverged_and_reported(tmp_path, data_root):
    run = tmp_path / "run"
    message = _error_line(_train(data_root, *TINY, "optim.lr=30", f"hydra.run.dir={run}"), 3)
    assert message.startswith("val/nll = ") and "at epoch 1 is beyond trainer.diverge_limit=1e+06: the run diverged" in message
    assert json.loads((run / "status.json").read_text())["status"] == "diverged"
    report = run_cli("report", str(run))
    assert "diverged" in report.stdout, report.stdout


@pytest.mark.slow
def test_a_killed_sweep_job_is_accounted_for_and_resume_finishes_it(tmp_path, data_root):
    """joblib, two workers, three jobs; job 0's process is killed with SIGKILL while it trains.
    The others finish; the summary says killed; the sweep directory is then refused for a plain
    rerun, and a rerun with trainer.resume=true runs job 0 only."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2", "data=fake", *TINY,
            "data.train_size=1024", "trainer.epochs=2", "trainer.threads=1", f"paths.data_root={data_root}",
            f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "softloss_cli", "train", *args], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    status_file = sweep / "0" / "status.json"
    deadline = time.monotonic() + 180
    pid = None
    while pid is None and proc.poll() is None and time.monotonic() < deadline:
        if status_file.exists():
            record = json.loads(status_file.read_text())
            pid = record["pid"] if record["status"] == "running" else -1
        time.sleep(0.01)
    if pid in (None, -1):
        proc.kill()
        pytest.skip("job 0 ended before it could be killed (machine too fast for this size)")
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    summary = json.loads((sweep / "sweep.json").read_text())
    states = {j["job"]: j["status"] for j in summary["jobs"]}
    assert states == {"0": "killed", "1": "ok", "2": "ok"}, summary
    assert summary["jobs"][0]["reason"] == "the job's process was killed by SIGKILL before it recorded an outcome"
    assert "sweep: 2/3 jobs ok" in out and "  job 0 killed: the job's process was killed by SIGKILL" in out
    assert not (sweep / "0" / ownership.LOCK_NAME).exists()
    ok_before = _hashes(sweep / "1")

    message = _error_line(run_cli("train", *args), 2)
    assert message.startswith(f"{sweep} already holds a sweep (3 jobs: 1 killed, 2 ok); add trainer.resume=true "
                              "to finish the jobs that are not ok")
    again = run_cli("train", *args, "trainer.resume=true")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "job 1 ok (finished in an earlier launch; left as it is)" in again.stdout
    # left as it is: only its TensorBoard folder gains the sweep's HPARAMS columns, which the end
    # of every sweep writes into each finished job (train.logger.write_sweep_hparams)
    def untouched(hashes):
        return {k: v for k, v in hashes.items() if not k.startswith("tb/")}

    assert untouched(_hashes(sweep / "1")) == untouched(ok_before)
    summary = json.loads((sweep / "sweep.json").read_text())
    assert summary["counts"] == {"ok": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert json.loads((sweep / "0" / "status.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("value", ["runs/lit/a", "/tmp/x-y_z.1", "${now:%Y}", "'quoted dir'", "a,b"])
def test_a_literal_run_dir_is_what_composing_gives_and_anything_else_is_composed(value, monkeypatch, tmp_path):
    from softloss_cli.runs import launch_dir

    monkeypatch.chdir(tmp_path)
    literal = launch_dir._literal_run_dir(["loss=ce", f"hydra.run.dir={value}"])
    if value in ("runs/lit/a", "/tmp/x-y_z.1"):
        cfg = launch_dir._compose(["loss=ce", f"hydra.run.dir={value}"], multirun=False)
        assert literal == Path(str(launch_dir._select(cfg, "hydra.run.dir"))).absolute()
    else:
        assert literal is None
    assert launch_dir._literal_run_dir(["loss=ce"]) is None
    assert launch_dir._literal_run_dir(["hydra.run.dir=a", "hydra.run.dir=b"]) == tmp_path / "b"
    assert launch_dir._literal_run_dir(["hydra.run.dir=a", "~hydra.run.dir"]) is None
