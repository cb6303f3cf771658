"""Shared helpers for benchmark result rows.

Every benchmark writes rows of one format into a JSON list (``benchmarks/results/<name>.json``)::

    scene, method, miou, miou_present, acc, test_ms_per_view, train_s, steps, peak_gpu_mem_gb,
    n_gaussians, device, date, commit, command

``n_gaussians`` is None for methods that are not splats; figures that could not be measured are None
(JSON has no NaN). A scene/method pair occurs at most once per file: re-running a benchmark replaces
its earlier row.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

__all__ = ["ROW_KEYS", "ResultsFileError", "result_row", "append_rows", "read_rows", "git_commit", "device_name"]

ROW_KEYS = (
    "scene",
    "method",
    "miou",
    "miou_present",
    "acc",
    "test_ms_per_view",
    "train_s",
    "steps",
    "peak_gpu_mem_gb",
    "n_gaussians",
    "device",
    "date",
    "commit",
    "command",
)
"""Keys of a benchmark row, in the order they are written."""

REPO_ROOT = Path(__file__).resolve().parents[1]


class ResultsFileError(ValueError):
    """A results file or a row that does not follow the benchmark row format."""


def git_commit(repo: Union[str, Path] = REPO_ROOT) -> str:
    """Short commit hash of ``repo``'s HEAD, or ``"unknown"`` when it is not a git checkout.

    ``$SEMSPLAT_COMMIT``, when set, wins: the GPU box runs on a copy of the working tree without
    ``.git``, so the caller passes the commit it sent there.

    Args:
        repo: Directory inside the git checkout.
    """
    if os.environ.get("SEMSPLAT_COMMIT"):
        return os.environ["SEMSPLAT_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else "unknown"


def device_name() -> str:
    """Name of the first CUDA device, or ``"cpu"`` when there is none."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _finite_or_none(value: Optional[float]) -> Optional[float]:
    """Maps NaN/inf (not valid JSON) to None and leaves everything else as a float."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def result_row(
    scene: str,
    method: str,
    *,
    miou: Optional[float],
    miou_present: Optional[float],
    acc: Optional[float],
    test_ms_per_view: Optional[float],
    train_s: Optional[float],
    steps: Optional[int],
    peak_gpu_mem_gb: Optional[float],
    n_gaussians: Optional[int],
    command: str,
    device: Optional[str] = None,
) -> Dict[str, Any]:
    """Builds one benchmark row and stamps it with device, date and commit.

    Args:
        scene: Scene name (the scene folder's name, e.g. ``"townA"``).
        method: Method name (e.g. ``"unet"``, ``"semsplat"``).
        miou: IRT mIoU in [0, 1]: mean IoU over classes with a non-empty union.
        miou_present: Mean IoU in [0, 1] over the classes present in the ground truth.
        acc: Pixel accuracy in [0, 1].
        test_ms_per_view: Median time to predict one test view, milliseconds.
        train_s: Training wall time, seconds.
        steps: Number of optimisation steps.
        peak_gpu_mem_gb: Peak GPU memory allocated, GiB; None on CPU.
        n_gaussians: Number of Gaussians of a splat model; None for other methods.
        command: The command line that produced the row.
        device: Device the figures were measured on; None fills in the CUDA device name or ``"cpu"``.

    Returns:
        A dict with exactly the keys of :data:`ROW_KEYS`; NaN figures become None.
    """
    return {
        "scene": str(scene),
        "method": str(method),
        "miou": _finite_or_none(miou),
        "miou_present": _finite_or_none(miou_present),
        "acc": _finite_or_none(acc),
        "test_ms_per_view": _finite_or_none(test_ms_per_view),
        "train_s": _finite_or_none(train_s),
        "steps": None if steps is None else int(steps),
        "peak_gpu_mem_gb": _finite_or_none(peak_gpu_mem_gb),
        "n_gaussians": None if n_gaussians is None else int(n_gaussians),
        "device": device if device is not None else device_name(),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "command": str(command),
    }


SCORED_EXTRA_KEYS = ("test_ms_per_view_p95", "timing_warmup_views", "per_class_iou")
"""Figures of a scored method (the timing protocol's and the per-class IoU) every row carries beside ROW_KEYS."""


def scored_row(scene: str, method: str, figures: Dict[str, Any], **run: Any) -> Dict[str, Any]:
    """A row from a method's test-view figures (``miou``, ``miou_present``, ``acc``, the timing protocol's
    fields, ``per_class_iou``) plus what the run knows (``train_s``, ``steps``, ``peak_gpu_mem_gb``,
    ``n_gaussians``, ``command``, optional ``device``); see :func:`result_row`."""
    row = result_row(
        scene,
        method,
        miou=figures["miou"],
        miou_present=figures["miou_present"],
        acc=figures["acc"],
        test_ms_per_view=figures["test_ms_per_view"],
        **run,
    )
    row.update({key: figures[key] for key in SCORED_EXTRA_KEYS if key in figures})
    return row


def _check_row(row: Any, where: str) -> None:
    """Raises :class:`ResultsFileError` unless ``row`` is a dict holding every key of :data:`ROW_KEYS`."""
    if not isinstance(row, dict):
        raise ResultsFileError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [key for key in ROW_KEYS if key not in row]
    if missing:
        raise ResultsFileError(
            f"{where}: row lacks the keys {missing} (scene={row.get('scene')!r}, method={row.get('method')!r})"
        )


def read_rows(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Reads the rows of a results file; a missing file has no rows.

    Args:
        path: The JSON results file.

    Raises:
        ResultsFileError: When the file is not a JSON list of benchmark rows.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsFileError(f"{path}: not valid JSON ({error}); fix or remove it before appending rows") from error
    if not isinstance(rows, list):
        raise ResultsFileError(f"{path}: expected a JSON list of result rows, found a {type(rows).__name__}")
    for index, row in enumerate(rows):
        _check_row(row, f"{path} row {index}")
    return rows


def append_rows(path: Union[str, Path], rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Adds rows to a results file, replacing earlier rows of the same (scene, method).

    A replaced row keeps its position in the list; new pairs are appended. The file is written to a
    temp file in the same folder and renamed into place, so readers never see a half-written file.

    Args:
        path: The JSON results file (created with its folder when missing).
        rows: Rows as made by :func:`result_row`.

    Returns:
        All rows now in the file.

    Raises:
        ResultsFileError: When the existing file or a new row does not follow the row format.
    """
    path = Path(path)
    for index, row in enumerate(rows):
        _check_row(row, f"new row {index} for {path}")
    merged = read_rows(path)
    position = {(row["scene"], row["method"]): index for index, row in enumerate(merged)}
    for row in rows:
        key = (row["scene"], row["method"])
        if key in position:
            merged[position[key]] = dict(row)
        else:
            position[key] = len(merged)
            merged.append(dict(row))
    # Serialise before touching the disk: a row that is not JSON leaves the old file as it was.
    text = json.dumps(merged, indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return merged


def busiest_events(profiler: Any, device_type: Any, own_time: str) -> List[Any]:
    """A finished torch profiler's averaged events of one device type (``torch.autograd.DeviceType``) that have some
    of their own time (the attribute ``own_time``, e.g. ``self_device_time_total``), most first. Own time, because an
    operator's total device time repeats its kernels' (summed, they would count twice)."""
    events = [e for e in profiler.key_averages() if e.device_type == device_type and getattr(e, own_time) > 0]
    return sorted(events, key=lambda e: getattr(e, own_time), reverse=True)


def loop_only(config: Any, scene: Union[str, Path], output_dir: Union[str, Path], name: str, steps: int) -> Any:
    """A trainer config set to time its training loop alone, as the profiling benchmarks train: ``scene``'s data,
    ``steps`` steps of the config's schedule, no checkpoint or evaluation render inside the loop, tensorboard logging,
    the run under ``output_dir``/``name``; returned (changed in place).

    Args:
        config: A trainer config (e.g. a registered preset's).
        scene: The scene folder.
        output_dir: Where the run's folder goes.
        name: The run's experiment name.
        steps: Steps to run (the schedule stays the config's).
    """
    config.vis = "tensorboard"
    config.output_dir = Path(output_dir)
    config.experiment_name = name
    config.pipeline.datamanager.data = Path(scene)
    config.max_num_iterations = steps
    config.steps_per_save = 10 * steps
    config.steps_per_eval_image = 10 * steps
    return config
