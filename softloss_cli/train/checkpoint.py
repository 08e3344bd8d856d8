"""Checkpoints written atomically and read with ``weights_only=True``; RNG state for exact resume."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def save_atomic(state: dict, path: Path) -> None:
    """``torch.save`` to ``path.tmp`` then rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary pickles)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) generator states, as weights-only-safe values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


#: keys a resumed run may change: how long it trains and how it shows or runs, not what it learns.
RESUME_MAY_CHANGE = ("trainer.epochs", "trainer.resume", "trainer.progress", "trainer.log_every",
                     "trainer.threads", "trainer.compile")


def run_files(run_dir: Path) -> dict[str, str]:
    """The texts of the run's ``.hydra/{config,overrides}.yaml``, kept in ``last.pt`` so that a
    refused resume (another config) can put back what Hydra overwrote on start."""
    files = {}
    for name in ("config.yaml", "overrides.yaml"):
        path = run_dir / ".hydra" / name
        if path.is_file():
            files[name] = path.read_text()
    return files


def config_differences(saved_yaml: str, cfg) -> list[str]:
    """``key: saved -> now`` for every leaf where ``cfg`` differs from the run's saved config,
    leaving out ``RESUME_MAY_CHANGE``, ``paths.*`` and ``hydra.*``."""
    from omegaconf import OmegaConf

    def flat(node, prefix=""):
        out = {}
        for key, value in node.items():
            name = f"{prefix}{key}"
            out.update(flat(value, name + ".") if isinstance(value, dict) else {name: value})
        return out

    saved = flat(OmegaConf.to_container(OmegaConf.create(saved_yaml), resolve=False))
    now = flat(OmegaConf.to_container(cfg, resolve=False))
    skip = lambda k: k in RESUME_MAY_CHANGE or k.startswith(("paths.", "hydra."))  # noqa: E731
    return [f"{k}: {saved.get(k, '(absent)')} -> {now.get(k, '(absent)')}"
            for k in sorted(saved.keys() | now.keys()) if not skip(k) and saved.get(k) != now.get(k)]
