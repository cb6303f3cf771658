"""semsplat-batch --scenes-per-gpu: several workers pinned to each GPU of a local cluster (no GPU needed: a worker
only gets its CUDA_VISIBLE_DEVICES), and the refusals of the flag where it cannot apply."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

import pytest
import tyro

from semsplat_ns.batch import scene_job
from semsplat_ns.batch.cluster import ClusterOptions, gpu_in_use, start_cluster
from semsplat_ns.errors import UserInputError
from semsplat_ns.scripts.batch import BatchArgs, cluster_options


def _worker_gpu():
    gpu = gpu_in_use() or {}
    return os.environ.get("CUDA_VISIBLE_DEVICES"), scene_job.worker_sees_gpu(), gpu.get("index")


def _wait_for_exactly(client, count: int, timeout: float = 60.0) -> None:
    """Waits until the scheduler has exactly ``count`` workers (``Client.wait_for_workers`` waits for at least that
    many, which a retiring worker still counted among them satisfies)."""
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info()["workers"]) != count:
        assert time.monotonic() < deadline, f"the scheduler never had exactly {count} workers"
        time.sleep(0.1)


def test_two_scenes_per_gpu_start_two_workers_pinned_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    handle = start_cluster(
        ClusterOptions(device="cuda", scenes_per_gpu=2, dashboard_address=":0", local_directory=tmp_path)
    )
    try:
        cluster = handle.cluster
        assert cluster is not None
        assert sorted(cluster.worker_spec) == ["gpu0.0", "gpu0.1"]
        seen: Dict[str, Any] = handle.client.run(_worker_gpu)  # type: ignore[assignment]
        # Both workers train on GPU 0, and each records that GPU in its scenes' results.
        assert sorted(seen.values()) == [("0", True, "0"), ("0", True, "0")]
        assert handle.description == "local cluster: 2 GPU workers, 2 per GPU (CUDA_VISIBLE_DEVICES 0)"
        # A worker that goes (the nanny or a scale-down) leaves its slot to the next one, on the same GPU.
        cluster.scale(1)
        _wait_for_exactly(handle.client, 1)  # the retired worker has left the scheduler
        cluster.scale(2)
        _wait_for_exactly(handle.client, 2)
        assert sorted(cluster.worker_spec) == ["gpu0.0", "gpu0.1"]
        seen = handle.client.run(_worker_gpu)  # type: ignore[assignment]
        assert sorted(seen.values()) == [("0", True, "0"), ("0", True, "0")]
    finally:
        handle.close()


@pytest.mark.parametrize(
    "options, message",
    [
        (ClusterOptions(scenes_per_gpu=0), r"--scenes-per-gpu 0: must be at least 1"),
        (ClusterOptions(device="cpu", scenes_per_gpu=2), r"--scenes-per-gpu 2 with --device cpu: .* --cpu-workers"),
        (
            ClusterOptions(scheduler="tcp://127.0.0.1:1", scenes_per_gpu=3),
            r"--scenes-per-gpu 3 with --scheduler: it sizes a local cluster",
        ),
    ],
)
def test_scenes_per_gpu_is_refused_where_it_cannot_apply(options, message):
    # Refused before any cluster starts or any scheduler is dialled.
    with pytest.raises(UserInputError, match=message):
        start_cluster(options)


def test_the_flag_reaches_the_cluster_options(tmp_path):
    args = tyro.cli(BatchArgs, args=["townA", "--output-dir", str(tmp_path), "--scenes-per-gpu", "2"])
    assert cluster_options(args) == ClusterOptions(scenes_per_gpu=2)
    default = tyro.cli(BatchArgs, args=["townA", "--output-dir", str(tmp_path)])
    assert cluster_options(default).scenes_per_gpu == 1
