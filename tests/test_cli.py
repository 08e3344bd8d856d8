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


EXIT_NOW_SCRIPT = """
import atexit, sys, threading, time
from softloss_cli.cli import exit_now

atexit.register(lambda: open(sys.argv[1], "w").write("atexit ran"))

def worker():
    time.sleep(0.3)
    open(sys.argv[2], "w").write("thread finished")

threading.Thread(target=worker).start()
print("buffered, no newline", end="")
print("on stderr", end="", file=sys.stderr)
exit_now(3)
print("not reached")
"""


def test_exit_now_keeps_what_the_normal_shutdown_would_finish(tmp_path):
    """The console script's exit: the code given, a non-daemon thread waited for, atexit
    functions run, buffered stdout/stderr (a pipe, PYTHONUNBUFFERED unset) flushed."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    marks = tmp_path / "atexit.txt", tmp_path / "thread.txt"
    proc = subprocess.run([sys.executable, "-c", EXIT_NOW_SCRIPT, *map(str, marks)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "buffered, no newline"
    assert proc.stderr == "on stderr"
    assert marks[0].read_text() == "atexit ran"
    assert marks[1].read_text() == "thread finished"


def test_console_entry_exit_code_and_buffered_output(tmp_path):
    """``python -m softloss_cli`` through ``entry``: output written before the quick exit
    reaches a pipe, and a refused command keeps its exit code."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    ok = subprocess.run([sys.executable, "-m", "softloss_cli", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "rps" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "softloss_cli", "trian"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("softloss: error: unknown command")
