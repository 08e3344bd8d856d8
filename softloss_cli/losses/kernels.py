"""Hand-written CPU kernels of the row functions: build once, load with ctypes, launch over rows.

``cpu_kernels.cpp`` holds one function per row function (``cdf_rows``, ``cdw_rows``, ...) that
reads each row of the logits once and writes its loss value and gradient in the same pass. It
has no torch headers: ``g++ -O3 -march=native`` builds it in about a second, the first time a
kernel is wanted, into a per-user cache (``$SOFTLOSS_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/softloss/kernels``, else ``~/.cache/softloss/kernels``), keyed by the source,
the flags, the compiler and the CPU's feature flags (``-march=native`` code must not run on
another CPU). The build is written to a temporary file and renamed, so processes that race to
build it (pytest workers, sweep jobs) each see a whole library.

``launch(name, rows, *args)`` calls a kernel on the rows ``[0, rows)``: tensors are passed by
their data pointers (the caller makes them contiguous, of the right dtype, on the CPU), other
arguments as C ints/floats; ``ROWS`` in ``args`` marks where the row range goes. ctypes releases
the GIL during the call, so with ``torch.get_num_threads() > 1`` large inputs are split into
row blocks run on a small thread pool, as torch's own CPU kernels split them.

The eager row functions (pure torch) stay the reference: the kernels are tested against them on
random and extreme logits (tests/test_losses_fused.py), and ``fused.call`` falls back to them
when no compiler is found.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import torch

__all__ = ["ROWS", "SOURCE", "KernelUnavailable", "available", "cache_dir", "index", "launch", "library",
           "values_and_grad"]

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
#: where ``launch`` puts the row range ``r0, r1``.
ROWS = object()
#: a thread block gets at least this many logits (below, threads cost more than they save).
MIN_BLOCK_ELEMENTS = 1 << 15

_P, _I, _F, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
#: each kernel's C signature (inputs, C, r0, r1, outputs), as in cpu_kernels.cpp.
SIGNATURES = {
    "cdf_rows": (_P, _P, _P, _I, _I, _I, _P, _P),
    "cdw_rows": (_P, _P, _P, _C, _I, _I, _I, _P, _P),
    "nl_rows": (_P, _P, _P, _F, _I, _I, _I, _P, _P, _P, _P),
    "two_head_ce_rows": (_P, _P, _I, _I, _I, _P, _P, _P),
    "bce_rows": (_P, _P, _I, _I, _I, _P, _P),
    "bce_one_hot_rows": (_P, _P, _F, _F, _I, _I, _I, _P, _P),
    "focal_rows": (_P, _P, _F, _F, _F, _I, _I, _I, _P, _P),
    "asl_rows": (_P, _P, _F, _F, _F, _C, _I, _I, _I, _P, _P),
    "kl_rows": (_P, _P, _P, _P, _P, _C, _I, _I, _I, _I, _P, _P),
    "ev_l1_rows": (_P, _P, _P, _F, _I, _I, _I, _P, _P, _P, _P),
    "binary_rows": (_P, _P, _P, _C, _I, _I, _I, _P, _P),
    "kappa_stats": (_P, _P, _P, _P, _P, _I, _I, _I, _P, _P, _P, _P, _P),
    "kappa_grad": (_P, _P, _P, _P, _F, _F, _F, _P, _P, _P, _P, _I, _I, _I),
    "kappa_expected": (_P, _I, _P, _I, _P),
    "epr_stats": (_P, _P, _I, _I, _I, _P, _P, _P, _P),
    "epr_grad": (_P, _P, _F, _F, _P, _I, _I, _I),
    "batch_pseudo_labels": (_P, _P, _I, _I, _I, _P, _P),
    "pseudo_select": (_P, _P, _I, _I, _I, _P, _P),
    "pseudo_bce_rows": (_P, _P, _P, _I, _I, _I, _I, _I, _P, _P),
}


class KernelUnavailable(RuntimeError):
    """The kernels cannot be built or loaded here (no C++ compiler, a failed build...)."""


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None
_pool = None


def _forget_pool_after_fork() -> None:
    """A forked child has none of the parent's pool threads: it makes its own pool when needed
    (the parent's would queue work that no thread ever runs)."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else ``g++``/``c++``/``clang++`` on the PATH."""
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_dir() -> Path:
    """Where built kernels live (see the module docstring)."""
    if os.environ.get("SOFTLOSS_KERNEL_CACHE"):
        return Path(os.environ["SOFTLOSS_KERNEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "softloss" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_key(cxx: str) -> str:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), version.encode(), _cpu_flags().encode(),
                 platform.machine().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _build() -> ctypes.CDLL:
    cxx = compiler()
    if cxx is None:
        raise KernelUnavailable("no C++ compiler on the PATH (set CXX, or install g++)")
    target = cache_dir() / f"softloss_kernels_{_build_key(cxx)}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            done = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(tmp), "-lm"], capture_output=True, text=True,
                                  timeout=300)
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["(no output)"])[0]
                raise KernelUnavailable(f"building {SOURCE.name} failed: {first[:200]}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    lib = ctypes.CDLL(str(target))
    for name, argtypes in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int64  # 0, or the first row with a bad label + 1
    return lib


def library() -> ctypes.CDLL:
    """The loaded kernel library, built on first use; raises KernelUnavailable (every call,
    with the first failure's reason) where it cannot be built."""
    global _lib, _error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            if _error is not None:
                raise KernelUnavailable(_error)
            try:
                _lib = _build()
            except (OSError, subprocess.SubprocessError, KernelUnavailable) as exc:
                _error = str(exc) if isinstance(exc, KernelUnavailable) else f"{type(exc).__name__}: {exc}"
                raise KernelUnavailable(_error) from None
    return _lib


def available() -> bool:
    """Whether the kernels are (or can be) built and loaded on this machine."""
    try:
        library()
        return True
    except KernelUnavailable:
        return False


def index(t: torch.Tensor) -> torch.Tensor:
    """``t`` as contiguous int64 (labels and class indices for the kernels, which check their range)."""
    return t.to(torch.int64).contiguous()


def _arg(value):
    if isinstance(value, torch.Tensor):
        return value.data_ptr()
    if isinstance(value, bool):
        return int(value)
    return value


def threads_for(rows: int, elements_per_row: int) -> int:
    """How many threads ``launch`` splits ``rows`` over: ``torch.get_num_threads()``, fewer where
    a block would hold under ``MIN_BLOCK_ELEMENTS`` logits."""
    return min(torch.get_num_threads(), max(1, rows * elements_per_row // MIN_BLOCK_ELEMENTS), rows)


def launch(name: str, rows: int, *args, elements_per_row: int = 1,
           labels: tuple[torch.Tensor, int, str] | None = None, threads: int | None = None) -> None:
    """Run kernel ``name`` over the rows ``[0, rows)``; ``ROWS`` in ``args`` stands for the range
    (two arguments, ``r0, r1``; a kernel without it runs once, on the whole input). Splits the
    rows over ``threads`` (default ``threads_for(rows, elements_per_row)``) equal blocks: two
    passes that hand data over in a per-block layout (kappa_stats, kappa_grad) give both the same.

    ``labels=(index, bound, what)``: the label tensor the kernel reads rows with; a kernel checks
    every label is in ``[0, bound)`` before it reads a row and returns the first bad row, which
    raises IndexError here, as torch's ``gather`` would (``what`` names it: "target", "label").
    """
    global _pool
    fn = getattr(library(), name)
    c_args = [_arg(a) for a in args]
    at = next((i for i, a in enumerate(args) if a is ROWS), None)
    threads = threads_for(rows, elements_per_row) if threads is None else max(1, min(threads, rows))
    if at is None:  # a kernel over the whole input at once
        codes = [fn(*c_args)]
    elif threads <= 1:
        codes = [fn(*c_args[:at], 0, rows, *c_args[at + 1:])]
    else:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            with _lock:
                if _pool is None:
                    _pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                               thread_name_prefix="softloss-kernel")
        bounds = [rows * i // threads for i in range(threads + 1)]
        blocks = list(zip(bounds, bounds[1:]))
        futures = [_pool.submit(fn, *c_args[:at], r0, r1, *c_args[at + 1:]) for r0, r1 in blocks[1:]]
        codes = [fn(*c_args[:at], *blocks[0], *c_args[at + 1:])]  # the calling thread takes the first block
        codes += [f.result() for f in futures]
    bad = min((c for c in codes if c), default=0)
    if bad:
        index, bound, what = labels if labels is not None else (None, 0, "label")
        value = int(index.reshape(-1)[bad - 1]) if index is not None else "?"
        raise IndexError(f"{what} {value} is out of bounds for {bound} classes")


def values_and_grad(name: str, z: torch.Tensor, labels: torch.Tensor | None, *params, want_grad: bool,
                    bound: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(values [B], grad [B, C] or None)`` from a kernel of the common form
    ``name(z, labels, *params, C, r0, r1, values, grad)``: ``z`` as contiguous float32, ``labels``
    as contiguous int64 checked against ``[0, bound)`` (default ``C``), tensors among ``params``
    as contiguous float32."""
    z = z.float().contiguous()
    b, c = z.shape
    labels = None if labels is None else index(labels)
    params = tuple(p.float().contiguous() if isinstance(p, torch.Tensor) else p for p in params)
    values = z.new_empty(b)
    grad = torch.empty_like(z) if want_grad else None
    launch(name, b, z, labels, *params, c, ROWS, values, grad, elements_per_row=c,
           labels=None if labels is None else (labels, c if bound is None else bound, "target"))
    return values, grad
