"""Keep freed tensor memory in a CPU-training process instead of handing it back to the kernel.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB once it has
adapted) with a fresh ``mmap`` and unmaps it on free. A training step on CPU allocates and frees
tensors bigger than that every step (the logits of a batch: batch x length x vocabulary floats,
64 MiB for the embedded model's 16 x 256 x 4,096), so every step the kernel maps and zeroes
those pages again: on this project's 2-core VM a vulnerability job spent 6.1 of its 28.6 s in
the kernel (benchmarks/cpu_allocator.py; docs/BENCHMARKS.md, "CPU allocator"). Raising the mmap
threshold above the step's largest tensor, and the trim threshold above what a step frees, keeps
the memory in the heap, where the next step reuses it: 0.78-0.88 of the wall time. The heap kept
is bounded by the trim threshold (measured: peak RSS up to 0.18 GB higher, grid/memory.py).

Only for CPU training: on GPU the tensors live in CUDA's caching allocator already. A libc
without ``mallopt`` (musl, macOS) is left as it is. The thresholds only help a thread on glibc's
main arena: another thread's arena has heaps of at most 64 MiB, so Ray Train's workers, which
train in a thread, are started on one arena (train/worker_group.py, CPU_WORKER_ENV).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1   # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024   # above any one tensor of the embedded sizes' steps
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Set this process's malloc thresholds (idempotent); whether the libc took them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. Setting either threshold also stops glibc adapting them.
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim_threshold))
