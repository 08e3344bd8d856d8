"""Sweeps that survive failures: status.json per job, sweep.json, the failed-jobs summary and
exit code, the launcher and hparams_search configs, and the done-criterion sweep (two
losses x two seeds with the joblib launcher, one job forced to fail) down to its report."""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from softloss_cli import cli
from softloss_cli.config import catalog
from softloss_cli.config.choices import check_choices
from softloss_cli.errors import DivergedError, SoftlossError
from softloss_cli.metrics import lower_is_better
from softloss_cli.runs import sweep
from softloss_cli.runs.job import failure_reason
from softloss_cli.runs.status import RunStatus, read_status

LAUNCHERS = catalog.CONFIG_DIR / "hydra" / "launcher"
# The CLI silences Hydra's schema-matching notice for our launcher files (experiment.py); pytest
# resets warning filters per test, so the compose tests say the same here.
SCHEMA_NOTICE = r"ignore:\s*'hydra/launcher/\w+' is validated against ConfigStore schema:UserWarning"


# --------------------------------------------------------------------------- status.json and sweep.json


def test_run_status_is_written_at_start_and_at_the_end(tmp_path):
    status = RunStatus(tmp_path / "run", ["loss=ce", "seed=1"])
    first = read_status(tmp_path / "run")
    assert first["status"] == "running" and first["end"] is None and first["overrides"] == ["loss=ce", "seed=1"]
    status.finish("diverged", "non-finite loss at epoch 2, step 8")
    final = read_status(tmp_path / "run")
    assert final["status"] == "diverged" and final["reason"] == "non-finite loss at epoch 2, step 8"
    assert final["wall_s"] >= 0 and final["start"] <= final["end"]
    assert not (tmp_path / "run" / "status.json.tmp").exists()
    with pytest.raises(ValueError, match="status must be one of"):
        status.finish("exploded")
    assert read_status(tmp_path / "nowhere") is None


def _job(folder: Path, overrides: list[str], status: dict | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))


def test_summarize_sweep_orders_jobs_and_explains_missing_outcomes(tmp_path):
    _job(tmp_path / "10", ["seed=10"], {"status": "ok", "wall_s": 2.0})
    _job(tmp_path / "9", ["seed=9"], {"status": "running"})
    _job(tmp_path / "2", ["seed=2"], None)
    summary = sweep.summarize_sweep(tmp_path)
    assert [j["job"] for j in summary["jobs"]] == ["2", "9", "10"]
    # a "running" job whose record names no live process ended without a word: killed
    assert summary["counts"] == {"failed": 1, "killed": 1, "ok": 1}
    by_job = {j["job"]: j for j in summary["jobs"]}
    assert by_job["2"]["reason"] == "no status.json (the job never started)"
    assert "without recording an outcome (killed by a signal, or out of memory)" in by_job["9"]["reason"]
    assert by_job["10"]["overrides"] == ["seed=10"] and by_job["10"]["wall_s"] == 2.0


def test_summarize_sweep_finds_nested_jobs_and_skips_moved_aside_runs(tmp_path):
    _job(tmp_path / ".overwritten" / "2026-01-01_00-00-00" / "0", ["seed=7"], {"status": "ok"})
    _job(tmp_path / "ce" / "10", ["loss=ce", "seed=10"], {"status": "ok"})
    _job(tmp_path / "ce" / "2", ["loss=ce", "seed=2"], {"status": "failed", "reason": "boom"})
    _job(tmp_path / "ce" / "2" / ".overwritten" / "x", ["loss=ce", "seed=2"], {"status": "failed"})
    everything = sweep.summarize_sweep(tmp_path)
    assert [j["job"] for j in everything["jobs"]] == ["ce/2", "ce/10"]
    assert everything["counts"] == {"failed": 1, "ok": 1}
    planned = sweep.summarize_sweep(tmp_path, planned=[["loss=ce", "seed=0"]])
    assert planned["jobs"][0]["job"] == "0" and planned["jobs"][0]["status"] == "not run"


def test_a_launcher_error_still_writes_sweep_json(monkeypatch, tmp_path, capsys):
    """A joblib worker killed by the OS raises in the launching process and Hydra skips the
    end-of-sweep callback: the CLI still records the jobs that ran, then fails in one line."""

    from softloss_cli.runs import job as experiment

    def launcher_dies():
        sweep.CURRENT_SWEEP.update(dir=tmp_path, overrides=["seed=0,1"])
        _job(tmp_path / "0", ["seed=0"], {"status": "ok"})
        _job(tmp_path / "1", ["seed=1"], {"status": "running"})
        raise RuntimeError("A worker process managed by the executor was unexpectedly terminated.")

    monkeypatch.setattr(experiment, "train", launcher_dies)
    code = cli.main(["train", "seed=0,1"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("softloss: error: RuntimeError: A worker process managed by the executor")
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert summary["stopped"].startswith("RuntimeError: A worker process")
    assert summary["counts"] == {"ok": 1, "killed": 1}
    assert "killed by a signal, or out of memory" in summary["jobs"][1]["reason"]
    assert read_status(tmp_path / "1")["status"] == "killed"  # recorded in the job's own status.json too
    assert "sweep: 1/2 jobs ok" in out and sweep.CURRENT_SWEEP == {}


def test_sweep_plans_expand_presets_and_name_the_jobs_that_cannot_be_composed():
    from softloss_cli.runs.sweep_plan import check_sweep_jobs, planned_jobs

    jobs = planned_jobs(["experiment=negatives_ordinal", "trainer.epochs=1"])
    assert len(jobs) == 27 and jobs[0][:3] == ["loss=positives_only", "data.negatives.fraction=0.25", "seed=0"]
    assert check_sweep_jobs(["loss=ce,rps", "seed=0,1", "data=ordinal_images"]) == []
    assert planned_jobs(["hparams_search=optuna", "data=digits"]) is None  # Optuna picks its own jobs
    assert check_sweep_jobs(["model=small_cnn,mlp", "model.channels=[8]", "hydra.sweep.dir=/x"]) == [
        "job 1 of the sweep (model=mlp model.channels=[8]) cannot be composed and will be recorded as failed: "
        "unknown config key 'model.channels'; keys under model: _target_, dropout, head, head_link, heads, hidden"]
    # the first job itself: named too (the rest cannot be planned without its config)
    assert check_sweep_jobs(["model=mlp,small_cnn", "model.channels=[8]"])[0].startswith(
        "job 0 of the sweep (model=mlp model.channels=[8]) cannot be composed and will be recorded as failed: ")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_job_that_cannot_be_composed_fails_alone(cli, tmp_path, data_root, launcher):
    """A value that only one job's config rejects at composition (mlp has no channels): that job
    is recorded as failed (status.json, its overrides) and the other one runs, with either launcher."""
    if launcher == "joblib":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    proc = cli("train", "-m", f"hydra/launcher={launcher}", "model=small_cnn,mlp", "model.channels=[8]", "data=fake",
               *TINY, f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reason = "cannot be composed: unknown config key 'model.channels'; keys under model: _target_, dropout, head, head_link, heads, hidden"
    assert "softloss: warning: job 1 of the sweep (model=mlp model.channels=[8] " in proc.stderr  # told up front
    assert "Traceback" not in proc.stderr
    status = _statuses(sweep_dir)
    assert status["0"]["status"] == "ok" and status["1"]["status"] == "failed"
    assert status["1"]["reason"] == reason and status["1"]["overrides"][:2] == ["model=mlp", "model.channels=[8]"]
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 1}
    assert f"  job 1 failed: {reason}" in proc.stdout


def test_an_optuna_search_over_a_key_the_loss_lacks_is_refused_before_it_starts(capsys):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from softloss_cli.runs.sweep_plan import check_sweep_jobs

    assert check_sweep_jobs(["hparams_search=optuna", "data=digits", "model=mlp"]) == []  # ce has label_smoothing
    assert check_sweep_jobs(["hparams_search=optuna_scale", "loss=rps", "data=ordinal_images"]) == []
    assert check_sweep_jobs(["hparams_search=optuna_scale", "loss=sord", "loss.alpha=interval(1, 8)"]) == []
    assert cli.main(["train", "hparams_search=optuna", "loss=rps", "data=ordinal_images"]) == 2
    err = capsys.readouterr().err
    assert err == ("softloss: error: the search space tunes loss.label_smoothing, which loss=rps does not have; "
                   "keys under loss: logit_scale, penalty, penalty_weight (hparams_search=optuna_scale searches "
                   "optim.lr and loss.logit_scale, which every softmax loss has); search one of them on the "
                   "command line, e.g. 'loss.<key>=interval(a, b)'\n")


def test_failure_reasons_are_one_line():
    from hydra.errors import InstantiationException

    try:
        try:
            raise ValueError("Invalid learning rate: -1")
        except ValueError as cause:
            raise InstantiationException("Error in call to target 'torch.optim.sgd.SGD':\nValueError(...)") from cause
    except InstantiationException as exc:
        assert failure_reason(exc) == "invalid config (torch.optim.sgd.SGD): Invalid learning rate: -1"
    assert failure_reason(SoftlossError("data.root /x does not exist")) == "data.root /x does not exist"
    assert failure_reason(DivergedError("non-finite loss")) == "non-finite loss"
    assert failure_reason(RuntimeError("CUDA out of memory.\nTried to allocate")) == "RuntimeError: CUDA out of memory."


# --------------------------------------------------------------------------- launcher and hparams_search configs


def _fields(conf) -> set[str]:
    return {f.name for f in dataclasses.fields(conf)}


@pytest.mark.filterwarnings(SCHEMA_NOTICE)
def test_joblib_launcher_config_is_ours_complete_and_instantiates(compose_cfg):
    from hydra.utils import instantiate
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    own = yaml.safe_load((LAUNCHERS / "joblib.yaml").read_text())
    # Every key the plugin reads is in our file, so it works without Hydra's schema matching.
    assert set(own) == _fields(JobLibLauncherConf)
    cfg = compose_cfg(["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"], return_hydra_config=True)
    # softloss's subclass of the plugin's launcher (each job in its own process: runs/launchers.py)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.softloss_launchers.isolated_joblib.IsolatedJoblibLauncher"
    assert JobLibLauncherConf._target_.endswith(".JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 3 and own["n_jobs"] == 2
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "IsolatedJoblibLauncher" and launcher.joblib["n_jobs"] == 3
    assert "JoblibLauncher" in [c.__name__ for c in type(launcher).__mro__]


@pytest.mark.filterwarnings(SCHEMA_NOTICE)
@pytest.mark.parametrize("name", ["submitit_local", "submitit_slurm"])
def test_submitit_launcher_configs_are_complete(compose_cfg, name):
    config = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config")
    schema = {"submitit_local": config.LocalQueueConf, "submitit_slurm": config.SlurmQueueConf}[name]
    own = yaml.safe_load((LAUNCHERS / f"{name}.yaml").read_text())
    assert set(own) == _fields(schema)
    cfg = compose_cfg([f"hydra/launcher={name}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == schema._target_
    assert cfg.hydra.launcher.submitit_folder.endswith("/.submitit/%j")
    if name == "submitit_slurm":
        assert {"partition", "timeout_min", "gpus_per_node", "account"} <= set(own)


def test_missing_launcher_or_sweeper_extra_is_one_line(monkeypatch):
    from softloss_cli.config import choices

    monkeypatch.setattr(choices, "_module_exists", lambda name: False)
    with pytest.raises(SoftlossError) as info:
        check_choices(["hydra/launcher=submitit_slurm"])
    assert str(info.value) == ("hydra/launcher=submitit_slurm needs the 'submitit' extra: "
                               "pip install 'softloss-cli[submitit]'")
    with pytest.raises(SoftlossError) as info:
        check_choices(["-m", "hparams_search=optuna"])
    assert str(info.value) == ("hparams_search=optuna needs the 'optuna' extra (hydra/sweeper=optuna): "
                               "pip install 'softloss-cli[optuna]'")
    with pytest.raises(SoftlossError, match=r"^unknown hparams_search 'nope'; choose one of: optuna, optuna_scale"):
        check_choices(["hparams_search=nope"])


# optuna tunes CE's label_smoothing; optuna_scale the logit scale every softmax loss has.
@pytest.mark.parametrize(("name", "loss"), [("optuna", "ce"), ("optuna_scale", "ce"), ("optuna_scale", "rps")])
def test_hparams_search_presets_compose_and_name_a_consistent_metric(compose_cfg, name, loss):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    assert catalog.describe("hparams_search", name)
    assert set(catalog.choices("hparams_search")) == {"optuna", "optuna_scale"}
    cfg = compose_cfg([f"hparams_search={name}", f"loss={loss}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.optimized_metric.startswith("val/")
    assert sweeper.direction == ("minimize" if lower_is_better(cfg.optimized_metric) else "maximize")
    assert "optim.lr" in sweeper.params and len(sweeper.params) == 2
    for key in sweeper.params:  # every tuned key exists in the composed config (else no trial could start)
        assert key.split(".")[0] in cfg and key.split(".")[1] in cfg[key.split(".")[0]], key


# --------------------------------------------------------------------------- end to end


def _statuses(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/status.json")}


@pytest.mark.slow
def test_failed_and_diverged_jobs_are_recorded_and_the_sweep_goes_on(cli, tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    proc = cli("train", "-m", "optim.lr=0.05,-1,1e30", "data=fake", *TINY, f"paths.data_root={data_root}",
               f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 1, proc.stderr
    status = _statuses(sweep_dir)
    assert {job: s["status"] for job, s in status.items()} == {"0": "ok", "1": "failed", "2": "diverged"}
    assert status["1"]["reason"] == "optim.lr must be a finite number >= 0, got -1"
    assert status["2"]["reason"].startswith("non-finite loss at epoch 1, step ")
    assert all(s["wall_s"] >= 0 and s["end"] for s in status.values())
    assert (sweep_dir / "0" / "metrics.json").is_file() and not (sweep_dir / "2" / "metrics.json").exists()
    assert "Traceback" in (sweep_dir / "1" / "error.log").read_text()  # the full story, kept for the user
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert f"sweep: 1/3 jobs ok; results in {sweep_dir} (softloss report {sweep_dir})" in lines
    assert any(line.startswith("  job 1 failed: optim.lr must be a finite number >= 0") for line in lines)
    assert any(line.startswith("  job 2 diverged: non-finite loss") for line in lines)
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 1, "diverged": 1}
    assert [j["overrides"][0] for j in summary["jobs"]] == ["optim.lr=0.05", "optim.lr=-1", "optim.lr=1e+30"]
    assert "optim.lr=0.05,-1,1e30" in summary["overrides"]


@pytest.mark.slow
def test_done_criterion_joblib_sweep_with_one_forced_failure_and_its_report(cli, tmp_path, data_root):
    """Two losses x two seeds with hydra/launcher=joblib; job 3 (rps, seed 1) is forced to fail
    by a file where its checkpoints folder should go. Expect 3 good runs, 1 recorded failure,
    exit 1, and a report whose numbers are the runs' own."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "3").mkdir(parents=True)
    (sweep_dir / "3" / "checkpoints").write_text("not a folder")
    proc = cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss=ce,rps", "seed=0,1",
               "data=ordinal_images", *TINY, f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["counts"] == {"ok": 3, "failed": 1}
    jobs = {j["job"]: j for j in summary["jobs"]}
    assert jobs["3"]["overrides"][:2] == ["loss=rps", "seed=1"] and jobs["3"]["status"] == "failed"
    assert jobs["3"]["reason"].startswith("FileExistsError: ")
    assert "sweep: 3/4 jobs ok" in proc.stdout and "  job 3 failed: FileExistsError" in proc.stdout

    ok_runs = [sweep_dir / j for j in ("0", "1", "2")]
    names = {"0": "loss=ce,seed=0", "1": "loss=ce,seed=1", "2": "loss=rps,seed=0"}
    from tensorboard.plugins.hparams import metadata as hp_metadata

    for run in ok_runs:
        ea = EventAccumulator(str(run / "tb" / names[run.name]), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        ea.Reload()
        assert {"train/loss", "val/accuracy", "headline/val_mae", "summary/test_accuracy"} <= set(ea.Tags()["scalars"])
        # the job's session, and the sweep's columns written into it when the sweep ended
        assert len(ea.PluginTagToContent("hparams")) == 3 and "test/confusion_matrix" in ea.Tags()["images"]
        experiment = hp_metadata.parse_experiment_plugin_data(ea.PluginTagToContent("hparams")[hp_metadata.EXPERIMENT_TAG])
        columns = {h.name: h for h in experiment.hparam_infos}
        assert {"loss", "seed"} <= set(columns) and "data" not in columns  # what varies, not what is constant
        assert {v.string_value for v in columns["loss"].domain_discrete.values} == {"ce", "rps"}
        assert "summary/test_mae" in {m.name.tag for m in experiment.metric_infos}
    assert not (sweep_dir / "hparams").exists()

    report = cli("report", str(sweep_dir))
    assert report.returncode == 0, report.stderr
    metrics = {r.name: json.loads((r / "metrics.json").read_text()) for r in ok_runs}
    rows = {r["group"]: r for r in csv.DictReader((sweep_dir / "report.csv").open())}
    assert list(rows) == ["loss=ce", "loss=rps"]
    assert (rows["loss=ce"]["runs_ok"], rows["loss=rps"]["runs_ok"], rows["loss=rps"]["runs_total"]) == ("2", "1", "2")
    for name in ("test/accuracy", "test/mae", "test/rps"):
        ce = [metrics["0"][name], metrics["1"][name]]
        assert float(rows["loss=ce"][f"{name}_mean"]) == pytest.approx(statistics.fmean(ce), rel=1e-12)
        assert float(rows["loss=ce"][f"{name}_std"]) == pytest.approx(statistics.stdev(ce), rel=1e-12)
        assert float(rows["loss=rps"][f"{name}_mean"]) == metrics["2"][name]
        assert rows["loss=rps"][f"{name}_std"] == "" and rows["loss=rps"][f"{name}_n"] == "1"
    md = (sweep_dir / "report.md").read_text()
    assert "| loss=ce | 2/2 |" in md and "| loss=rps | 1/2 |" in md
    assert "`3` **failed**: FileExistsError" in md
    assert (sweep_dir / "plots" / "bar_test_mae.png").is_file()
    assert (sweep_dir / "plots" / "curve_val_accuracy.png").is_file()


@pytest.mark.slow
def test_optuna_search_runs_its_trials_and_records_a_failed_trial(cli, tmp_path, data_root):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "search"
    # The search space lets a trial draw a learning rate that diverges: recorded, and the search goes on.
    proc = cli("train", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "data=fake", *TINY,
               "hydra.sweeper.sampler.n_startup_trials=3", "optim.lr=choice(0.05,1e30)",
               "hydra.sweeper.sampler.seed=0", f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep_dir}")
    status = _statuses(sweep_dir)
    # The seeded sampler draws 1e30, 0.05, 1e30: two diverged trials, one good one.
    assert sorted(s["status"] for s in status.values()) == ["diverged", "diverged", "ok"], proc.stdout
    assert proc.returncode == 1 and "sweep: 1/3 jobs ok" in proc.stdout, proc.stderr
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optim.lr", "loss.label_smoothing"}
    best = [json.loads((sweep_dir / j / "metrics.json").read_text())["val/accuracy"]
            for j, s in status.items() if s["status"] == "ok"]
    assert results["best_value"] == max(best)
