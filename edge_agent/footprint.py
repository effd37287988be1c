"""The agent process's memory footprint: thread pools, the C allocator, start-up pages.

A gateway has 1 GB of RAM for years on end, so the agent keeps its resident set small and
flat. Three levers outside Python's own objects, each measured by
``bench/agent_footprint.py`` (README, "Edge agent", footprint table):

* :func:`limit_thread_pools` before numpy is imported: numpy's OpenBLAS starts one worker
  thread per extra core at import (three idle threads on a Pi 4) for matrix work the agent
  never does; onnxruntime's pools are set to one thread by the scorer itself.
* :func:`tune_allocator`: glibc malloc with at most two arenas (one per thread by default,
  each holding freed memory of its own), applied from inside so it holds however the agent
  was started. (A fixed mmap threshold was measured too and made no difference: dropped.)
* :func:`release_startup_memory` once the model is loaded: onnxruntime's session set-up
  touches some 20 MB of its library's code once (kernel registration, graph
  optimisers) and never again. Those pages are clean copies of the file on disk, so asking
  the kernel to drop them now (``MADV_PAGEOUT``) costs nothing; what scoring really uses is
  read back on first use and stays. Writable or dirty mappings are left alone, so nothing
  goes to swap. ``malloc_trim`` returns the heap freed by model parsing.

Everything here is best effort: on a C library without these calls (musl) or a kernel
before 5.4 the call reports that nothing was released and the agent runs as before.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

__all__ = [
    "THREAD_POOL_VARIABLES",
    "limit_thread_pools",
    "tune_allocator",
    "release_startup_memory",
    "trim_heap",
    "Released",
    "memory_breakdown",
]

THREAD_POOL_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_M_ARENA_MAX = -8
_MADV_PAGEOUT = 21
_ARENA_MAX = 2


def limit_thread_pools() -> list[str]:
    """One thread for BLAS/OpenMP pools unless the environment already says otherwise.

    Must run before numpy is imported (the pools size themselves at import); returns the
    variables it set.
    """
    set_now = []
    for name in THREAD_POOL_VARIABLES:
        if name not in os.environ:
            os.environ[name] = "1"
            set_now.append(name)
    return set_now


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mallopt, libc.malloc_trim, libc.madvise  # noqa: B018  (glibc on Linux: all three or nothing)
    except (OSError, AttributeError):
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def tune_allocator() -> bool:
    """Bound glibc's malloc arenas for this process; False if not glibc.

    ``MALLOC_ARENA_MAX`` in the environment (the systemd unit sets it) only works if it is
    there when the process starts; this applies the same limit from inside, before the
    agent starts its threads, whoever started it.
    """
    libc = _libc()
    if libc is None:
        return False
    return libc.mallopt(_M_ARENA_MAX, _ARENA_MAX) == 1


def trim_heap() -> bool:
    """Give free heap memory back to the kernel (``malloc_trim``); False if nothing was returned."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


@dataclass(frozen=True)
class Released:
    """What :func:`release_startup_memory` gave back, in bytes of resident memory."""

    heap: int
    file_pages: int

    @property
    def total(self) -> int:
        return self.heap + self.file_pages


def _clean_file_mappings() -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of read-only file mappings that hold no private copies."""
    out = []
    current: list | None = None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                if current is not None and current[3]:
                    out.append(tuple(current[:3]))
                start, end = (int(x, 16) for x in head[0].split("-"))
                perms = head[1]
                path = head[5].strip() if len(head) > 5 else ""
                # writable or non-file (heap, stacks, anonymous) mappings are not ours to drop
                current = [start, end, 0, path.startswith("/") and "w" not in perms and perms[3] == "p"]
            elif current is not None and head[0] == "Rss:":
                current[2] = int(head[1]) * 1024
            elif (
                current is not None
                and head[0] in ("Anonymous:", "Private_Dirty:", "Shared_Dirty:")
                and int(head[1]) > 0
            ):
                current[3] = False  # relocated or written pages: dropping them would mean swap
    if current is not None and current[3]:
        out.append(tuple(current[:3]))
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_startup_memory() -> Released:
    """Return the heap freed by start-up and drop clean library pages from the resident set.

    Call once the model is loaded and self-tested (and again after a model swap): pages of
    code that scoring uses are read back on first use, the rest of start-up's stay on disk.
    """
    libc = _libc()
    if libc is None:
        return Released(0, 0)
    before = _rss_bytes()
    libc.malloc_trim(0)
    after_trim = _rss_bytes()
    try:
        mappings = _clean_file_mappings()
    except OSError:
        return Released(max(0, before - after_trim), 0)
    for start, end, _ in mappings:
        if libc.madvise(start, end - start, _MADV_PAGEOUT) != 0:
            break  # EINVAL: a kernel before 5.4 has no MADV_PAGEOUT; nothing else will work either
    return Released(max(0, before - after_trim), max(0, after_trim - _rss_bytes()))


def memory_breakdown(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of a process in MB: ``rss``, ``pss``, ``anon`` (private heap, stacks,
    copied library pages), ``file`` (pages of files on disk, reclaimable by the kernel) and
    ``shared`` (pages other processes map too, e.g. a library another program has loaded)."""
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":"):
                fields[parts[0][:-1]] = int(parts[1]) / 1024
    rss, anon = fields.get("Rss", 0.0), fields.get("Anonymous", 0.0)
    return {
        "rss": round(rss, 1),
        "pss": round(fields.get("Pss", 0.0), 1),
        "anon": round(anon, 1),
        "file": round(rss - anon, 1),
        "shared": round(fields.get("Shared_Clean", 0.0) + fields.get("Shared_Dirty", 0.0), 1),
    }
