"""Who owns a run (or sweep) directory: one live run at a time, never two runs mixed in one.

- **A lock**: ``<dir>/.lock`` holds the owner's pid, host, start time (and Slurm job id),
  and an exclusive ``flock`` for as long as the owner lives; ``release`` removes it on every
  exit path. A second run on a locked directory is refused in one line naming the owner. A
  lock file whose owner died without releasing it (kill -9, out of memory) is *stale*: on
  the same host (the pid is not running) or in the same Slurm job (a requeued job), it is
  taken over with a warning; a lock of another host is refused (its owner may be alive).
- **A directory that holds a run** (its status, metrics, history, saved config or
  checkpoints) is refused unless ``trainer.resume=true`` (continue it) or
  ``trainer.overwrite=true``, which moves its contents aside into
  ``<dir>/.overwritten/<time>/`` first: nothing is deleted, nothing is mixed.
- **Unique default names**: ``reserve_unique`` takes ``<name>``, else ``<name>-1``,
  ``<name>-2``... with an atomic ``mkdir``, so runs started in the same second get their
  own directories.

The lock is taken before anything is written: a refusal changes no file.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from datetime import datetime
from pathlib import Path

from softloss_cli.errors import SoftlossError
from softloss_cli.runs.status import cluster_job, read_status

LOCK_NAME = ".lock"
#: where ``trainer.overwrite=true`` moves an earlier run's files (inside the directory, hidden).
ASIDE_NAME = ".overwritten"
#: files that say a directory holds a run (finished or not).
RUN_MARKERS = ("status.json", "metrics.json", "history.jsonl", ".hydra/config.yaml", "checkpoints/last.pt",
               "checkpoints/best.pt")

try:  # POSIX advisory locks; elsewhere the pid/host record alone decides
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def _host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def read_lock(folder: Path) -> dict | None:
    """The owner recorded in ``<folder>/.lock`` (None when there is none or it is unreadable)."""
    try:
        record = json.loads((Path(folder) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_owner(owner: dict | None) -> str:
    if not owner:
        return "another process"
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('start')}"


class RunLock:
    """An exclusive lock on a directory, held by this process until ``release``.

    ``what``: "run" or "sweep", for the messages.
    """

    def __init__(self, folder: Path, fd: int, what: str):
        self.folder, self.path, self._fd, self.what = Path(folder), Path(folder) / LOCK_NAME, fd, what

    @classmethod
    def acquire(cls, folder: Path, what: str = "run", hint: str = "") -> RunLock:
        """Lock ``folder`` (which must exist) or raise ``SoftlossError`` naming its live owner.

        ``hint``: how to go elsewhere, appended to the refusal (e.g. "choose another hydra.run.dir").
        """
        folder = Path(folder)
        path = folder / LOCK_NAME
        for _ in range(5):  # retried only when the owner released (unlinked) the file under us
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise cls._refusal(folder, read_lock(folder), what, hint) from None
                if os.fstat(fd).st_ino != os.stat(path).st_ino:  # unlinked by its releasing owner
                    os.close(fd)
                    continue
                previous = cls._previous_owner(fd)
                if previous:
                    cls._take_over(folder, previous, what, hint)
                record = {"pid": os.getpid(), "host": _host(),
                          "start": datetime.now().astimezone().isoformat(timespec="seconds")}
                if cluster_job():
                    record["cluster_job"] = cluster_job()
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
                os.fsync(fd)
                return cls(folder, fd, what)
            except BaseException:
                try:
                    os.close(fd)
                except OSError:
                    pass
                raise
        raise SoftlossError(f"{folder}: could not take its lock {path} (it keeps changing); try again")

    @staticmethod
    def _previous_owner(fd: int) -> dict | None:
        size = os.fstat(fd).st_size
        try:
            record = json.loads(os.pread(fd, size, 0).decode() or "null") if size else None
        except ValueError:
            return None
        return record if isinstance(record, dict) and record.get("pid") != os.getpid() else None

    @staticmethod
    def _refusal(folder: Path, owner: dict | None, what: str, hint: str) -> SoftlossError:
        return SoftlossError(f"{folder} is in use by another {what} ({describe_owner(owner)})"
                             + (f"; {hint}" if hint else ""))

    @classmethod
    def _take_over(cls, folder: Path, owner: dict, what: str, hint: str) -> None:
        """An owner recorded but not holding the lock: stale when provably gone, else refused."""
        same_host = owner.get("host") == _host()
        same_job = owner.get("cluster_job") is not None and owner.get("cluster_job") == cluster_job()
        if same_host and pid_alive(owner.get("pid", -1)) and not same_job:
            # Alive but not holding the flock: a filesystem without locks, or a reused pid. Be safe.
            raise cls._refusal(folder, owner, what, hint)
        if not same_host and not same_job:
            raise SoftlossError(f"{folder} is locked by {describe_owner(owner)}, another host: if that {what} "
                                f"is no longer running, delete {folder / LOCK_NAME}" + (f"; {hint}" if hint else ""))
        why = "a requeued run of the same Slurm job" if same_job else "that process is not running"
        warnings.warn(f"taking over the stale lock of {folder} ({describe_owner(owner)}; {why})", stacklevel=3)

    def release(self) -> None:
        """Remove the lock file and let go of it (idempotent)."""
        if self._fd is None:
            return
        try:
            if read_lock(self.folder) and read_lock(self.folder).get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run, finished or not (any of ``RUN_MARKERS``)."""
    folder = Path(folder)
    return any((folder / marker).is_file() for marker in RUN_MARKERS)


def sweep_jobs(folder: Path) -> list[Path]:
    """The job directories of an earlier sweep in ``folder`` (``.hydra/overrides.yaml`` or
    ``status.json`` below it, outside moved-aside folders)."""
    folder = Path(folder)
    found = set()
    for marker in ("status.json", ".hydra/overrides.yaml"):
        for hit in folder.glob(f"**/{marker}"):
            job = hit.parent.parent if marker.startswith(".hydra") else hit.parent
            if job != folder and ASIDE_NAME not in job.relative_to(folder).parts:
                found.add(job)
    return sorted(found)


def holds_sweep(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) an earlier sweep: ``sweep.json`` or a job directory."""
    folder = Path(folder)
    return (folder / "sweep.json").is_file() or bool(sweep_jobs(folder))


def move_aside(folder: Path) -> Path | None:
    """Move everything in ``folder`` (except its lock and earlier moved-aside runs) into
    ``<folder>/.overwritten/<time>/``; return that folder (None when there was nothing)."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if p.name not in (LOCK_NAME, ASIDE_NAME)]
    if not entries:
        return None
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    target = folder / ASIDE_NAME / stamp
    n = 1
    while target.exists():
        target = folder / ASIDE_NAME / f"{stamp}-{n}"
        n += 1
    target.mkdir(parents=True)
    for entry in entries:
        os.replace(entry, target / entry.name)
    return target


def reserve_unique(base: Path) -> Path:
    """Create and return ``base``, or ``base-1``, ``base-2``... when taken (atomic ``mkdir``):
    concurrent starts in the same second each get their own directory."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise SoftlossError(f"no free run directory name next to {base}")


def refuse_existing(folder: Path, what: str, dir_key: str, detail: str = "") -> SoftlossError:
    """The one-line refusal for a directory that already holds a run or sweep."""
    resume = "finish the jobs that are not ok" if what == "sweep" else "continue it"
    return SoftlossError(f"{folder} already holds a {what}{detail}; add trainer.resume=true to {resume}, "
                         f"trainer.overwrite=true to move it aside into {Path(folder) / ASIDE_NAME}/, "
                         f"or choose another {dir_key}")


#: what a job does with its directory (``claim_run_dir``).
PLANS = ("fresh", "resume", "overwrite", "done")


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool, in_sweep: bool) -> tuple[RunLock, str]:
    """Lock a job's directory and decide what the job does there: ``(lock, plan)``.

    plan: ``fresh`` (an empty directory), ``resume`` (continue ``checkpoints/last.pt``),
    ``overwrite`` (move the earlier run aside when the run starts, then start anew) or, in a
    sweep re-run with ``trainer.resume=true``, ``done`` (the job already ended ok: left as it
    is). A sweep re-run also starts anew, moving the earlier files aside, a job that stopped
    before its first checkpoint. A job requeued by its scheduler (the same Slurm job id as the
    run's ``status.json``) resumes without being asked. Without resume or overwrite a directory that holds a run is
    refused (``SoftlossError``) and the lock released: nothing changed.
    """
    if resume and overwrite:
        raise SoftlossError("trainer.resume=true and trainer.overwrite=true contradict each other; choose one")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = "hydra.sweep.dir" if in_sweep else "hydra.run.dir"
    lock = RunLock.acquire(run_dir, "run", hint=f"wait for it to end or choose another {key}")
    try:
        if not holds_run(run_dir):
            return lock, "resume" if resume and not in_sweep else "fresh"
        if overwrite:
            return lock, "overwrite"
        status = read_status(run_dir) or {}
        requeued = status.get("cluster_job") is not None and status.get("cluster_job") == cluster_job()
        if requeued and status.get("status") != "ok":  # our own job, requeued by the scheduler: continue it
            resume = True
        if resume:
            if in_sweep and status.get("status") == "ok" and (run_dir / "metrics.json").is_file():
                return lock, "done"
            if in_sweep and not (run_dir / "checkpoints" / "last.pt").is_file():
                return lock, "overwrite"
            return lock, "resume"
        state = status.get("status", "unknown")
        when = status.get("end") or status.get("start")
        raise refuse_existing(run_dir, "run", key, f" (status {state}" + (f", {when})" if when else ")"))
    except BaseException:
        lock.release()
        raise
