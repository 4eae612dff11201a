"""gloo_groups.share_one_gloo_device: one-member gloo groups share one device (one polling thread);
groups of several members still work. Each case runs in its own Python, as the patch is process-wide."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SINGLE_RANK = textwrap.dedent("""
    import json, socket, sys
    import torch, torch.distributed as dist
    from pathlib import Path
    from collapse_ray.generate.gloo_groups import share_one_gloo_device
    if sys.argv[1] == "patched":
        assert share_one_gloo_device() and share_one_gloo_device()   # idempotent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    groups = [dist.new_group([0], backend="gloo") for _ in range(12)]   # as many as vLLM 0.32 builds
    x = torch.ones(3)
    for group in (None, groups[0], groups[-1]):
        dist.all_reduce(x, group=group)
    dist.barrier(group=groups[5])
    threads = [(t / "comm").read_text().strip() for t in Path("/proc/self/task").iterdir()]
    print(json.dumps({"loops": threads.count("gloo_tcp_loop"), "sum": x.tolist()}))
""")

TWO_RANKS = textwrap.dedent("""
    import json, socket, sys
    import torch, torch.distributed as dist, torch.multiprocessing as mp
    def rank_main(rank, port, out):
        from collapse_ray.generate.gloo_groups import share_one_gloo_device
        share_one_gloo_device()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        both = dist.new_group([0, 1], backend="gloo")
        alone = [dist.new_group([r], backend="gloo") for r in (0, 1)]
        x = torch.full((2,), float(rank + 1))
        dist.all_reduce(x, group=both)
        y = torch.ones(1)
        dist.all_reduce(y, group=alone[rank])
        out.put((rank, x.tolist(), y.tolist()))
        dist.destroy_process_group()
    if __name__ == "__main__":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        ctx = mp.get_context("spawn"); out = ctx.Queue()
        mp.start_processes(rank_main, args=(port, out), nprocs=2, start_method="spawn", join=False).join(60)
        print(json.dumps(sorted(out.get(timeout=10) for _ in range(2))))
""")


def _run(tmp_path, script: str, *args: str) -> object:
    path = tmp_path / "case.py"   # a file, not -c: spawned ranks import their function from it
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("side, loops", [("torch", 13), ("patched", 1)])
def test_one_member_groups_share_one_polling_thread_and_still_reduce(tmp_path, side, loops):
    result = _run(tmp_path, SINGLE_RANK, side)
    assert result == {"loops": loops, "sum": [1.0, 1.0, 1.0]}


def test_groups_of_two_members_still_reduce_across_processes(tmp_path):
    assert _run(tmp_path, TWO_RANKS) == [[0, [3.0, 3.0], [1.0]], [1, [3.0, 3.0], [1.0]]]


def test_a_torch_without_the_private_pieces_it_builds_with_is_left_as_it_is(monkeypatch):
    import torch.distributed.distributed_c10d as c10d

    from collapse_ray.generate.gloo_groups import share_one_gloo_device

    class GlooWithoutOptions:   # as a torch that renamed the private _Options would look
        create_default_device = staticmethod(lambda: None)

    monkeypatch.setattr(c10d, "ProcessGroupGloo", GlooWithoutOptions)
    assert share_one_gloo_device() is False
    assert c10d.ProcessGroupGloo is GlooWithoutOptions
