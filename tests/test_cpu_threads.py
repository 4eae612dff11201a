"""A Train worker's (and a trial driver's) torch threads follow the whole CPUs it reserved: Ray
Train sets no OMP_NUM_THREADS, so a worker of 0.2 CPU ran torch on one thread per core of the
machine, as many as the trials that shared it."""
import pytest

from collapse_ray.train.worker_group import cpu_threads


@pytest.mark.parametrize("resources, threads", [({"CPU": 0.2}, 1), ({"CPU": 1.0}, 1), ({"CPU": 4.0}, 4),
                                                ({"CPU": 2.5, "GPU": 1.0}, 2), ({"GPU": 1.0}, 1), (None, 1)])
def test_threads_are_the_whole_cpus_reserved_and_at_least_one(resources, threads):
    assert cpu_threads(resources) == threads
