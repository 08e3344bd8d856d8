"""The CLI surface: help, list, Hydra pass-through, fast start-up without torch."""

from __future__ import annotations

import subprocess
import sys

from softloss_cli.config import catalog


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, softloss_cli.cli; assert 'torch' not in sys.modules and 'hydra' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_the_commands(cli):
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("train", "list", "eval", "report", "predict"):
        assert f"  {command}" in proc.stdout


def test_unknown_command_is_one_line_and_exit_2(cli):
    proc = cli("trian")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "softloss: error: unknown command 'trian'; choose one of: train, list, eval, report, predict (softloss --help)"


def test_train_help_shows_config_groups_and_choices(cli):
    proc = cli("train", "--help")
    assert proc.returncode == 0
    for group in ("data", "model", "loss", "optim", "sched", "trainer"):
        assert f"{group}:" in proc.stdout
    assert "ordinal_images" in proc.stdout and "small_cnn" in proc.stdout
    assert proc.stdout.startswith("softloss train [OVERRIDES] [-m]: train one run")
    assert "powered by Hydra" not in proc.stdout and "softloss train --hydra-help" in proc.stdout


def test_cfg_job_prints_the_composed_config_without_training(cli, tmp_path):
    proc = cli("train", "--cfg", "job", "loss=ce", "trainer.epochs=7", "optim.lr=0.123", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 7" in proc.stdout and "lr: 0.123" in proc.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_list_shows_every_choice_with_a_description(cli):
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    for group in ("data", "model", "loss"):
        for name in catalog.choices(group):
            assert name in proc.stdout
            assert catalog.describe(group, name), f"configs/{group}/{name}.yaml has no description comment"
    assert "multiclass" in proc.stdout  # task kinds column of the losses


def test_list_unknown_section(cli):
    proc = cli("list", "nope")
    assert proc.returncode == 2
    assert "unknown list 'nope'" in proc.stderr
