"""CPU training keeps freed tensor memory (collapse_ray/train/cpu_allocator.py): a tensor bigger
than glibc's mmap threshold, freed and allocated again, is served from the heap instead of fresh
pages the kernel must map and zero. Each case runs in a fresh process: the thresholds are
process-wide and this test process may have set them already."""
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

ROOT = Path(__file__).resolve().parents[1]

# Page faults of a second 48 MiB block after the first was freed (the first faults in any case).
# 48 MiB: above the most glibc's own threshold adapts to (32 MiB), so by default always mmapped.
# Plain malloc, not a torch tensor: torch's aligned allocation asks for a little more than the
# block it freed, so whether it lands on the same pages depends on the heap's layout.
FAULTS_OF_A_REALLOCATION = """
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def faults() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(48 * 2**20)
    ctypes.memset(block, 1, 48 * 2**20)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
"""


def run(setup: str) -> dict:
    code = textwrap.dedent(setup) + FAULTS_OF_A_REALLOCATION + "print(json.dumps({'faults': faults(), **result}))"
    done = subprocess.run([sys.executable, "-c", "import json\nresult = {}\n" + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_freed_large_tensor_is_reused_instead_of_faulted_in_again():
    default = run("")
    kept = run("""
        from collapse_ray.train.cpu_allocator import keep_freed_memory
        result['took'] = keep_freed_memory()
    """)
    assert kept["took"] is True
    assert kept["faults"] * 4 < max(default["faults"], 1), (default, kept)


def test_the_in_process_trainer_keeps_freed_memory(train_llama, tmp_path):
    kept = run(f"""
        from collapse_ray.config import TrainingConfig
        from collapse_ray.datatypes import ModelRef
        from collapse_ray.train.local import LocalTrainer
        from tests.ray_training import TEXTS
        LocalTrainer(TrainingConfig(max_steps=2, batch_size=4)).train(
            ModelRef({str(train_llama)!r}), TEXTS, {str(tmp_path / "model")!r}, seed=0)
    """)
    default = run("")
    assert kept["faults"] * 4 < max(default["faults"], 1), (default, kept)
