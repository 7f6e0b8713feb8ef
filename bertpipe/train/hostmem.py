"""Keep freed memory in the process heap, so a CPU training step stops paying page faults.

Purpose: glibc's ``malloc`` serves large blocks (above a threshold that starts at 128 KiB
and adapts up to 32 MiB) with ``mmap`` and gives them back with ``munmap`` when freed. A
training step allocates the same large activations and gradients every step (the MLM head's
(N, V) logits and their gradient are tens of MB at V = 30522), so every step the kernel
maps and zeroes those pages again: measured on the ``bertpipe bench train`` model (hidden
256, 4 layers, length 128, batch 32, bf16, one thread) 63k minor page faults per step, 260
MB, 75 ms of system time in a 480 ms step. With the thresholds raised once per process the
same step has under 1k faults and no system time, and runs 12% faster; results are
unchanged (only where the memory comes from changes).

Trade-off: memory freed by the step stays in the heap instead of going back to the
operating system, so the process keeps its peak footprint while it trains. Where shapes
change from step to step (padded batches of varying length, fine-tuning), the heap also
fragments: a MiniLM continued pretraining grew by 25 MB a step, thresholds raised or not
(glibc raises its mmap threshold by itself after large frees), and reached 7 GB at 300 steps.
``trim_if_grown``, called every step, gives the free heap back (``malloc_trim``, about 0.1 s
for 2 GB) whenever the resident set has grown by ``TRIM_GROWTH`` since the last trim: static
shapes never reach it, varying ones stay within about that much of their working set. ``kept_freed_memory``
(what pretraining and fine-tuning use) does so only for the duration of a training: afterwards
glibc's default thresholds are back and the free heap is trimmed. A process that trains
many models in a row (a sweep's flow run: pretrainings and fine-tunings of other shapes)
otherwise grew by fragmentation until the kernel killed it (23 GB of a 24 GB machine after
five MiniLM trainings). ``keep_freed_memory`` sets the thresholds for the rest of the process
(the benchmarks, which measure one shape). Nothing happens on a C library without
``mallopt`` (musl, macOS, Windows) or under ``BERTPIPE_KEEP_FREED_MEMORY=0`` (where the
heap is still trimmed, every malloc arena of it, when a training ends).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Serve every block up to 1 GiB from the heap, and keep up to 2 GiB of free heap top instead
# of trimming it: both far above any single activation of the models trained here on a CPU.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 31
DEFAULT_THRESHOLD = 128 << 10  # glibc's starting values of both
TRIM_GROWTH = 1 << 30  # trim_if_grown: bytes of resident growth since the last trim that trigger one
_done = False
_depth = 0  # nesting of kept_freed_memory
_trimmed_at: int | None = None  # the resident set after the last trim (None: not measured yet)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "mallopt") else None
    except OSError:
        return None


def _raise_thresholds() -> bool:
    if os.environ.get("BERTPIPE_KEEP_FREED_MEMORY", "1") == "0" or (libc := _libc()) is None:
        return False
    # glibc before 2.35 refuses an mmap threshold above 32 MiB: then the largest it accepts
    mmap = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) or bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    ok = mmap and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("malloc thresholds raised: %s", ok)
    return ok


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for the rest of this process (once). True if set."""
    global _done
    if _done:
        return False
    _done = True
    return _raise_thresholds()


@contextmanager
def kept_freed_memory() -> Iterator[bool]:
    """The raised thresholds while the block runs (nested blocks share them); afterwards glibc's
    defaults again and the free heap given back (``malloc_trim``), unless ``keep_freed_memory``
    set them for the whole process. Yields whether they are raised."""
    global _depth
    raised = _done or (_depth > 0) or _raise_thresholds()
    _depth += 1
    try:
        yield raised
    finally:
        _depth -= 1
        if _depth == 0 and not _done and (libc := _libc()) is not None:
            gc.collect()  # the training's objects caught in reference cycles, before the heap is trimmed
            if raised:
                libc.mallopt(_M_MMAP_THRESHOLD, DEFAULT_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, DEFAULT_THRESHOLD)
            libc.malloc_trim(0)  # every arena: a thread pool's tasks each leave theirs holding freed memory


def _resident() -> int | None:
    """This process's resident set in bytes (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def trim_if_grown(growth: int = TRIM_GROWTH) -> bool:
    """Give the free heap back when the resident set has grown by ``growth`` bytes since the
    last trim (or the first call); cheap otherwise (one read of ``/proc/self/statm``). True if it trimmed."""
    global _trimmed_at
    if (rss := _resident()) is None:
        return False
    if _trimmed_at is None or rss < _trimmed_at:
        _trimmed_at = rss
    if rss - _trimmed_at < growth or (libc := _libc()) is None:
        return False
    libc.malloc_trim(0)
    _trimmed_at = _resident() or rss
    log.debug("heap trimmed: resident %d -> %d MiB", rss >> 20, _trimmed_at >> 20)
    return True
