"""The Dask cluster of ``semsplat-batch``: a local one sized to this machine, or an existing one joined by address.

Local: one worker per visible GPU, through dask-cuda's ``LocalCUDACluster`` when that is installed (each worker
sees its own GPU first in ``CUDA_VISIBLE_DEVICES``, so a stage's default device is its own), else a
:class:`GPUPinnedLocalCluster` (each worker sees its own GPU only); with ``scenes_per_gpu`` > 1, that many
:class:`GPUPinnedLocalCluster` workers per GPU, which then trains several scenes at once; without a GPU (or with
``device="cpu"``), a number of CPU workers. Every worker runs one task, i.e. one scene, at a time, and is a
separate process under a nanny, which restarts it when it dies.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dask import config as dask_config
from distributed import Client, LocalCluster

from semsplat_ns.errors import UserInputError

WORKER_SATURATION = 1.0
"""Tasks a worker holds per thread. Dask's default (1.1) lets a one-thread worker queue a second scene behind
the one it runs while another worker idles; 1.0 keeps waiting scenes at the scheduler for the next free worker."""

SCHEDULER_WAIT_S = 60.0
"""How long to wait for a first worker of a cluster joined with ``--scheduler``."""


def visible_gpus() -> List[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs).

    ``CUDA_VISIBLE_DEVICES`` when set (empty or ``-1``: none), else the GPUs ``nvidia-smi`` lists; no
    ``nvidia-smi``, no GPU. Torch is not imported: the client and the workers stay light.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for part in (p.strip() for p in env.split(",")):
            if not part or part.startswith("-"):
                break  # CUDA stops at the first invalid entry
            ids.append(part)
        return ids
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip().isdigit()]


def gpu_in_use() -> Optional[Dict[str, Optional[str]]]:
    """The GPU a stage started by this process trains on: the first visible one (a worker's own, with one worker
    per GPU; dask-cuda puts the worker's GPU first), as ``{"index", "name", "cuda_visible_devices"}``; None when no
    GPU is visible. The name comes from ``nvidia-smi`` (None when it cannot tell). Torch is not imported.
    """
    gpus = visible_gpus()
    if not gpus:
        return None
    name: Optional[str] = None
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-i", gpus[0], "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        name = listing.splitlines()[0].strip() if listing else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"index": gpus[0], "name": name, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


class GPUPinnedLocalCluster(LocalCluster):
    """A LocalCluster of single-thread workers pinned to GPUs, ``workers_per_gpu`` on each, every one with
    ``CUDA_VISIBLE_DEVICES`` set to its own GPU.

    Each worker fills a named slot (``gpu<G>``, or ``gpu<G>.<k>`` with several workers per GPU). The pinning lives
    in :meth:`new_worker_spec`, so a worker the nanny restarts, or one added by ``scale``, takes a slot that has no
    worker (as dask-cuda's LocalCUDACluster does for its one worker per GPU).

    Args:
        gpus: ``CUDA_VISIBLE_DEVICES`` entries.
        workers_per_gpu: Workers (scenes trained at once) on each GPU.
        **kwargs: LocalCluster arguments (``n_workers`` is set here).
    """

    def __init__(self, gpus: List[str], workers_per_gpu: int = 1, **kwargs: Any):
        if not gpus:
            raise ValueError("GPUPinnedLocalCluster needs at least one GPU")
        if workers_per_gpu < 1:
            raise ValueError(f"workers_per_gpu must be at least 1, got {workers_per_gpu}")
        self.gpus = list(gpus)
        # slot name -> its GPU, GPU by GPU: scale(n) below len(slots) fills the first GPUs first
        self.slot_gpus: Dict[str, str] = {
            (f"gpu{gpu}" if workers_per_gpu == 1 else f"gpu{gpu}.{slot}"): gpu
            for gpu in self.gpus
            for slot in range(workers_per_gpu)
        }
        super().__init__(n_workers=0, **kwargs)
        self.scale(len(self.slot_gpus))

    def new_worker_spec(self) -> Dict[str, Any]:
        free = [name for name in self.slot_gpus if name not in self.worker_spec]
        if not free:
            raise ValueError(f"every worker slot of the GPUs ({', '.join(self.gpus)}) already has a worker")
        spec: Dict[str, Any] = copy.deepcopy(self.new_spec) or {}
        options: Dict[str, Any] = spec.setdefault("options", {})
        options["env"] = {**options.get("env", {}), "CUDA_VISIBLE_DEVICES": self.slot_gpus[free[0]]}
        return {free[0]: spec}


@dataclass
class ClusterOptions:
    """How to get workers."""

    scheduler: Optional[str] = None
    """Address of an existing Dask scheduler to join (tcp://host:8786); None: start a local cluster."""
    device: str = "auto"
    """auto: a worker per GPU, CPU workers when there is none; cuda: GPUs required; cpu: CPU workers only."""
    cpu_workers: Optional[int] = None
    """Local CPU workers; None: 1 (a training process uses every core it is given)."""
    scenes_per_gpu: int = 1
    """Local GPU workers per GPU, i.e. scenes trained at once on each GPU (not used by CPU workers)."""
    dashboard_address: str = ":8787"
    """Where the local scheduler serves its dashboard (host:port; port 0: any free port)."""
    local_directory: Optional[Path] = None
    """Dask workers' scratch folder; None: Dask's default."""


@dataclass
class ClusterHandle:
    """A connected client and, for a local cluster, the cluster it owns."""

    client: Client
    """Connected to the scheduler."""
    cluster: Optional[LocalCluster]
    """The local cluster; None when an existing one was joined."""
    description: str
    """One line for the console: what runs the scenes."""

    def close(self) -> None:
        """Disconnects; a local cluster is shut down (its workers and their stage processes end)."""
        self.client.close()
        if self.cluster is not None:
            try:
                self.cluster.close()
            except KeyError:
                # distributed's watcher of worker status can meet the removal of a worker it never saw added (one
                # that replaced another shortly before: SpecCluster._update_worker_status). Its error comes out of
                # the last await of the close, after the workers and the scheduler have stopped: nothing is left
                # running, and the scenes' results are written. Seen in one of six CI runs (test_batch_scenes_per_gpu).
                pass


def _serves_dashboard() -> bool:
    """Run on the scheduler: whether it serves the dashboard (distributed's own test: its bokeh app imports)."""
    try:
        import distributed.dashboard.scheduler  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_line(client: Client) -> str:
    """The console line on the Dask dashboard, as the scheduler serves it.

    distributed serves its dashboard only where bokeh (>= 3.1) is installed *on the scheduler*; without it the
    address answers with a page that says so. So the scheduler itself is asked, and the line gives the address
    only where there is a dashboard behind it.
    """
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        link = None
    if not link:
        return "Dask dashboard: none (the scheduler serves no HTTP dashboard)"
    try:
        served = bool(client.run_on_scheduler(_serves_dashboard))
    except Exception as error:  # a scheduler that refuses to run code (distributed.scheduler.pickle: false)
        return f"Dask dashboard: {link} (if the scheduler has bokeh>=3.1; could not ask it: {type(error).__name__})"
    if not served:
        return (
            f"Dask dashboard: unavailable (the scheduler has no bokeh>=3.1, so {link} shows only a notice; "
            "pip install 'bokeh>=3.1' where the scheduler runs)"
        )
    return f"Dask dashboard: {link}"


def start_cluster(options: ClusterOptions) -> ClusterHandle:
    """Starts a local cluster or joins an existing one, as ``options`` say.

    Raises:
        UserInputError: ``device="cuda"`` without a visible GPU, a bad worker count, or a scheduler that
            cannot be reached or has no worker.
    """
    if options.scheduler:
        if options.scenes_per_gpu > 1:
            raise UserInputError(
                f"--scenes-per-gpu {options.scenes_per_gpu} with --scheduler: it sizes a local cluster; start that "
                "many dask workers per GPU on the joined cluster instead"
            )
        return _join(options.scheduler)
    gpus = [] if options.device == "cpu" else visible_gpus()
    if options.device == "cuda" and not gpus:
        raise UserInputError(
            "--device cuda: no GPU visible here (CUDA_VISIBLE_DEVICES / nvidia-smi); use --device cpu or auto, "
            "or --scheduler to join a cluster with GPU workers"
        )
    if options.cpu_workers is not None and options.cpu_workers < 1:
        raise UserInputError(f"--cpu-workers {options.cpu_workers}: must be at least 1")
    if options.scenes_per_gpu < 1:
        raise UserInputError(f"--scenes-per-gpu {options.scenes_per_gpu}: must be at least 1")
    if options.scenes_per_gpu > 1 and options.device == "cpu":
        raise UserInputError(
            f"--scenes-per-gpu {options.scenes_per_gpu} with --device cpu: CPU workers train one scene each; "
            "use --cpu-workers"
        )
    common: Dict[str, Any] = {
        "threads_per_worker": 1,  # one scene at a time per worker
        "processes": True,  # a worker lost must not take the client down
        # The stages run in subprocesses, whose memory the nanny does not see; a limit would only get in the way.
        "memory_limit": 0,
        "dashboard_address": options.dashboard_address,
        # Worker-side logs would repeat, out of order, what the live progress and the report already say.
        "silence_logs": logging.CRITICAL,
    }
    if options.local_directory is not None:
        common["local_directory"] = str(options.local_directory)
    with dask_config.set({"distributed.scheduler.worker-saturation": WORKER_SATURATION}):
        if gpus:
            cluster = _local_gpu_cluster(gpus, options.scenes_per_gpu, common)
            shared = f", {options.scenes_per_gpu} per GPU" if options.scenes_per_gpu > 1 else ""
            description = (
                f"local cluster: {len(gpus) * options.scenes_per_gpu} GPU workers{shared} "
                f"(CUDA_VISIBLE_DEVICES {', '.join(gpus)})"
            )
        else:
            count = options.cpu_workers or 1
            # Hide GPUs from CPU workers asked for explicitly, so nothing in a stage picks one up.
            env = {"CUDA_VISIBLE_DEVICES": ""} if options.device == "cpu" else {}
            cluster = LocalCluster(n_workers=count, env=env, **common)
            description = f"local cluster: {count} CPU worker{'s' if count > 1 else ''}"
            if options.scenes_per_gpu > 1:
                description += f" (no GPU visible: --scenes-per-gpu {options.scenes_per_gpu} not used)"
    client = Client(cluster)
    client.wait_for_workers(len(cluster.worker_spec))
    return ClusterHandle(client, cluster, description)


def _local_gpu_cluster(gpus: List[str], scenes_per_gpu: int, common: Dict[str, Any]) -> LocalCluster:
    # dask-cuda starts one worker per GPU; several per GPU are this module's own pinned workers
    if scenes_per_gpu == 1 and importlib.util.find_spec("dask_cuda") is not None:
        from dask_cuda import LocalCUDACluster  # type: ignore[import-not-found]

        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpus), **common)
    return GPUPinnedLocalCluster(gpus, scenes_per_gpu, **common)


def _join(address: str) -> ClusterHandle:
    try:
        client = Client(address, timeout="30s")
    except (OSError, TimeoutError) as error:
        raise UserInputError(f"--scheduler {address}: cannot connect ({error})") from None
    try:
        client.wait_for_workers(1, timeout=SCHEDULER_WAIT_S)
    except TimeoutError:
        client.close()
        raise UserInputError(
            f"--scheduler {address}: no worker joined within {SCHEDULER_WAIT_S:g} s (start some with dask worker "
            f"{address})"
        ) from None
    count = len(client.scheduler_info().get("workers", {}))
    return ClusterHandle(client, None, f"Dask cluster at {address}: {count} worker{'s' if count > 1 else ''}")


def _host_and_cores() -> Tuple[str, int]:
    """(host name, usable cores) of the process it runs in; called on every worker."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return socket.gethostname(), cores


def threads_per_worker(client: Client) -> int:
    """CPU threads for each stage process: every host's cores shared evenly among its workers (the smallest share
    over the hosts), at least 1."""
    found: Dict[str, Tuple[str, int]] = client.run(_host_and_cores)  # type: ignore[assignment]  # address -> (host, cores)
    if not found:
        return 1
    per_host = Counter(host for host, _ in found.values())
    return max(1, min(cores // per_host[host] for host, cores in found.values()))
