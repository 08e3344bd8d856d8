"""Shared fixtures: the shipped config tree composed with Hydra, a shared data cache,
and a helper that runs the real ``softloss`` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny settings every end-to-end run starts from (CPU, float32, plain progress, few samples).
TINY_TRAINER = [
    "trainer.device=cpu",
    "trainer.precision=fp32",
    "trainer.progress=none",
    "trainer.epochs=1",
]
TINY = [
    *TINY_TRAINER,
    "data.train_size=256",
    "data.val_size=128",
    "data.test_size=128",
    "data.batch_size=64",
]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """One data root per test session, so generated datasets are built once and reused."""
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def compose_cfg():
    """``compose_cfg(overrides)`` -> the composed training config (Hydra state cleared after)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from softloss_cli.config.catalog import CONFIG_DIR

    def _compose(overrides=(), return_hydra_config=False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m softloss_cli ARGS`` and return the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("SOFTLOSS_DEBUG", None)
    if env and "SOFTLOSS_DEBUG" in env:
        full_env["SOFTLOSS_DEBUG"] = env["SOFTLOSS_DEBUG"]
    return subprocess.run(
        [sys.executable, "-m", "softloss_cli", *args],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def tiny_train(tmp_path, data_root):
    """``tiny_train(*overrides)`` runs one tiny ``softloss train`` into ``tmp_path/run``."""

    def _train(*overrides: str, run_dir: Path | None = None, check: bool = True, sized_data: bool = True):
        """``sized_data=False`` for datasets without train/val/test size keys (digits...)."""
        run_dir = run_dir or tmp_path / "run"
        proc = run_cli("train", *(TINY if sized_data else TINY_TRAINER), f"paths.data_root={data_root}", f"hydra.run.dir={run_dir}", *overrides)
        if check and proc.returncode != 0:
            raise AssertionError(f"softloss train failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc, run_dir

    return _train
