"""Checkpoints that are never silently wrong.

Writing: ``torch.save`` to ``<name>.tmp``, flushed to disk (fsync), read back and checked,
then renamed over ``<name>``; the checkpoint it replaces is kept as ``<stem>.prev.pt``
(``keep_previous``). A crash, a full disk or a kill -9 at any point leaves the previous
checkpoint as it was.

Every checkpoint carries ``softloss_sha256``: a SHA-256 of its *content* (each tensor's
dtype, shape and bytes, every other value, in order), stored inside the file so that it
travels with it (copied, renamed, moved back from ``.prev``) and a plain ``torch.load``
still reads it. ``load`` recomputes it after a ``weights_only=True`` read: a zeroed
block, random bytes, a truncated or empty file is refused with ``CheckpointError`` naming
the file, and the state is never handed to a model. Checkpoints written before checksums
existed load unverified. RNG state helpers for an exact resume live here too.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from softloss_cli.errors import SoftlossError, one_line

#: the key of a checkpoint's content checksum (hex SHA-256 of ``content_digest``).
CHECKSUM_KEY = "softloss_sha256"


class CheckpointError(SoftlossError):
    """A checkpoint that cannot be read or whose content does not match its checksum (exit 2)."""


class CheckpointWriteError(SoftlossError):
    """A checkpoint could not be written (disk full, I/O error); the previous one is intact (exit 1)."""

    exit_code = 1


def content_digest(state) -> str:
    """Hex SHA-256 over a checkpoint's content, walked in order: for a tensor its dtype, shape
    and raw bytes (on the CPU); for a dict its items; for a list/tuple its elements; for any
    other value its type and ``repr``. Independent of the file's layout, so a re-saved or
    copied checkpoint keeps its digest; any changed byte of a tensor changes it."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(b"%s%d" % (b"L" if isinstance(obj, list) else b"U", len(obj)))
        for value in obj:
            _feed(h, value)
    else:
        text = f"{type(obj).__name__}:{obj!r}".encode()
        h.update(b"V%d:" % len(text) + text)


def previous_path(path: Path) -> Path:
    """Where ``save_atomic(keep_previous=True)`` keeps the checkpoint it replaced: ``last.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_atomic(state: dict, path: Path, keep_previous: bool = False) -> None:
    """Write ``state`` (plus its ``softloss_sha256``) to ``path`` so that ``path`` always holds
    a complete, verified checkpoint: temporary file, fsync, read back and verified, rename.

    ``keep_previous``: the checkpoint being replaced stays as ``<stem>.prev.pt`` (a hard link,
    or a copy where links are not supported). A failed write (disk full...) removes the
    temporary file and raises ``CheckpointWriteError``; ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    payload[CHECKSUM_KEY] = content_digest(payload)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        load(tmp)  # what is on disk gives back the content, or CheckpointError
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError, CheckpointError)):
            kept = f"{path} is unchanged" if path.exists() else "no checkpoint was written"
            raise CheckpointWriteError(f"could not write checkpoint {path}: {_reason(exc)}; {kept}") from exc
        raise
    if keep_previous and path.exists():
        prev = previous_path(path)
        prev_tmp = prev.with_name(prev.name + ".tmp")
        prev_tmp.unlink(missing_ok=True)
        try:
            os.link(path, prev_tmp)
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(path, prev_tmp)
        os.replace(prev_tmp, prev)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = one_line(exc)
    return text[len("could not write checkpoint "):] if text.startswith("could not write checkpoint ") else text


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: Path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary pickles) and verify its checksum.

    Raises ``CheckpointError`` (one line naming the file and what is wrong: empty, unreadable,
    checksum mismatch) for a damaged file; ``FileNotFoundError`` when it does not exist.
    The returned state no longer holds the checksum key.
    """
    path = Path(path)
    size = path.stat().st_size  # FileNotFoundError for a missing file, as before
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is corrupt (empty file)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    except Exception:  # noqa: BLE001 - truncated zip, random bytes, a refused pickle: torch's words mislead here
        raise CheckpointError(f"checkpoint {path} is corrupt (unreadable: truncated or not a PyTorch checkpoint)") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt (holds a {type(state).__name__}, not a checkpoint)")
    expected = state.pop(CHECKSUM_KEY, None)
    if expected is not None and content_digest(state) != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt (its content does not match its checksum)")
    return state


def is_intact(path: Path) -> bool:
    """Whether ``path`` exists and loads with a matching checksum."""
    try:
        load(path)
    except (OSError, CheckpointError):
        return False
    return True


def load_for_resume(path: Path, map_location="cpu") -> dict:
    """``last.pt`` for ``trainer.resume=true``: missing or damaged is refused in one line; for a
    damaged one the line names the previous checkpoint (``last.prev.pt``) when that is intact."""
    path = Path(path)
    if not path.exists():
        raise SoftlossError(f"trainer.resume=true but {path} does not exist; pass hydra.run.dir=<the run to resume>")
    try:
        return load(path, map_location)
    except CheckpointError as exc:
        prev = previous_path(path)
        raise corrupt_with_alternative(exc, [(prev, f"resume from it with: mv {prev} {path}")]) from None


def corrupt_with_alternative(error: CheckpointError, alternatives: list[tuple[Path, str]]) -> CheckpointError:
    """``error`` extended with the first intact checkpoint of ``alternatives`` ((path, how to use
    it) pairs), or with "no intact checkpoint" when none is."""
    for alt, how in alternatives:
        if is_intact(alt):
            return CheckpointError(f"{error}; {alt} is intact: {how}")
    return CheckpointError(f"{error}; no intact checkpoint to use instead")


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
RESUME_MAY_CHANGE = ("trainer.epochs", "trainer.resume", "trainer.overwrite", "trainer.progress", "trainer.log_every",
                     "trainer.threads", "trainer.compile", "trainer.diverge_factor", "trainer.diverge_limit")


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
