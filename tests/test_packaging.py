"""The configs ship inside the package: a non-editable install finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True)
    return next(out.glob("softloss_cli-*.whl"))


def test_wheel_holds_the_config_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("softloss_cli/configs/train.yaml", "softloss_cli/configs/loss/ce.yaml",
                 "softloss_cli/configs/data/ordinal_images.yaml", "softloss_cli/configs/trainer/default.yaml",
                 "softloss_cli/configs/hydra/job_logging/softloss.yaml"):
        assert path in names, path
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "softloss = softloss_cli.cli:entry" in zipfile.ZipFile(wheel).read(entry[0]).decode()


def test_installed_wheel_composes_its_config_outside_the_clone(wheel, tmp_path):
    """Install the wheel (not editable) into its own folder and run it from an empty cwd;
    PYTHONPATH puts it ahead of the clone's editable install."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                   check=True)
    env = {"PYTHONPATH": str(target), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    where = subprocess.run([sys.executable, "-c", "import softloss_cli; print(softloss_cli.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True, env=env).stdout
    assert where.startswith(str(target))
    proc = subprocess.run([sys.executable, "-m", "softloss_cli", "train", "--cfg", "job", "loss=ce"], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: softloss_cli.losses.CrossEntropyLoss" in proc.stdout
