"""What a scene of ``semsplat-batch`` leaves in its output folder, and what a new run of it may trust.

``result.json`` (a complete scene's record, :func:`read_result`), ``attempts.json`` (every run of the scene's task,
:class:`Attempts`), and the stage outputs (``logs/``, ``train/``, ``eval/``, ``predict/``) that a new run deletes
(:func:`clean_outputs`) unless the previous run lost its worker after completing them (:func:`reusable_stages`).
The per-scene task itself is :mod:`semsplat_ns.batch.scene_job`. Nothing here imports torch or nerfstudio.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from semsplat_ns.atomic import write_json_atomic

RESULT_NAME = "result.json"
"""A complete scene's record, in its output folder."""
ATTEMPTS_NAME = "attempts.json"
"""Every run of the scene's task (kept across runs, never taken for a result)."""
LOG_DIR, TRAIN_DIR, EVAL_DIR, PREDICT_DIR = "logs", "train", "eval", "predict"
"""Sub-folders of a scene's output folder; the last three are stage outputs, deleted before a run."""
TIMESTAMP = "batch"
"""``ns-train --timestamp``: one training run per scene folder, at a path known in advance."""
REUSABLE_STAGES = ("pseudo_labels", "train")
"""Stages whose completed output a run keeps when the previous run of the scene lost its worker after them (same
settings): the pseudo labels in the scene folder, the trained model under ``train/``."""
RESULT_FORMAT = 1
"""Version of result.json's layout."""
METRIC_KEYS = ("miou", "miou_present", "acc", "test_ms_per_view")
"""The metrics of semsplat-eval's metrics.json that the summary reports (fractions, and ms per view)."""


@dataclass
class StageRecord:
    """How one stage went."""

    status: str
    """ok, skipped or failed."""
    seconds: float = 0.0
    """Wall time of the stage's process."""
    command: List[str] = field(default_factory=list)
    """The command line it ran."""
    log: Optional[str] = None
    """Its log file."""
    reason: Optional[str] = None
    """Why it was skipped, or its one-line error."""
    started: Optional[float] = None
    """When its process started, seconds since the epoch (which stages of a batch ran at the same time)."""
    reused_from: Optional[str] = None
    """The id (attempts.json) of the run whose worker was lost after this stage completed, when its output was
    kept instead of made again."""


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_result(scene_output_dir: Path) -> Optional[Dict[str, Any]]:
    """The recorded result of a completed scene, or None.

    Anything else (no file, an unreadable or foreign file, a record without all metrics) is not a result:
    the scene runs again.

    Args:
        scene_output_dir: ``<batch output>/<scene>``.
    """
    record = read_json(Path(scene_output_dir) / RESULT_NAME)
    if not isinstance(record, dict) or record.get("status") != "ok" or record.get("format") != RESULT_FORMAT:
        return None
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(metrics.get(key), (int, float)) for key in METRIC_KEYS):
        return None
    return record


class Attempts:
    """``attempts.json``: one entry per run of the task; an entry left without an outcome was interrupted."""

    def __init__(self, path: Path, attempt: int, settings: Dict[str, Any], worker: Optional[str]):
        self.path = path
        previous = read_json(path)
        self.entries: List[Dict[str, Any]] = previous if isinstance(previous, list) else []
        for entry in self.entries:
            if isinstance(entry, dict) and entry.get("outcome") is None:
                # Still "running" in the record, yet a new run started: the worker running it was lost.
                entry["outcome"] = "interrupted"
        self.entry: Dict[str, Any] = {
            "id": uuid.uuid4().hex[:12],
            "attempt": attempt,
            "worker": worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now_iso(),
            "stage": None,
            "stage_pid": None,
            "outcome": None,
            "settings": settings,
            "done": {},
        }
        self.entries.append(self.entry)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.entries)

    def update(self, **fields: Any) -> None:
        self.entry.update(fields)
        self.save()

    def completed(self, stage: str, record: StageRecord) -> None:
        """Records a stage that completed (what a later run may keep if this one loses its worker)."""
        self.update(done={**self.entry["done"], stage: asdict(record)})


def train_run(out: Path, name: str) -> Tuple[List[Path], List[Path]]:
    """The config.yml files and checkpoints of the scene's training run under ``train/``."""
    configs = sorted((out / TRAIN_DIR / name).glob(f"*/{TIMESTAMP}/config.yml"))
    return configs, [p for c in configs for p in (c.parent / "nerfstudio_models").glob("*.ckpt")]


def reusable_stages(
    output_dir: Path, name: str, settings: Dict[str, Any], redo: bool = False
) -> Tuple[Optional[str], Dict[str, Dict[str, Any]]]:
    """What the scene's previous run completed before its worker was lost, and a new run may keep.

    Only after a lost worker (the last entry of attempts.json has no outcome, or "interrupted"), never after a
    failure or with ``redo``; only with the same settings; only the leading stages of :data:`REUSABLE_STAGES`
    that it recorded as completed; a training only while its config.yml and checkpoint are still there.

    Args:
        output_dir: The scene's output folder.
        name: The scene's name (its training run's experiment name).
        settings: The new run's settings (``SceneJob.settings()``).
        redo: The new run ignores everything recorded.

    Returns:
        (the previous run's id, {stage: its StageRecord fields}); (None, {}) when nothing can be kept.
    """
    entries = read_json(Path(output_dir) / ATTEMPTS_NAME)
    if redo or not isinstance(entries, list) or not entries or not isinstance(entries[-1], dict):
        return None, {}
    last = entries[-1]
    if last.get("outcome") not in (None, "interrupted") or last.get("settings") != settings:
        return None, {}
    done = last.get("done")
    if not isinstance(done, dict):
        return None, {}
    kept: Dict[str, Dict[str, Any]] = {}
    for stage in REUSABLE_STAGES:
        record = done.get(stage)
        if not isinstance(record, dict) or record.get("status") not in ("ok", "skipped"):
            break
        if stage == "train":
            configs, checkpoints = train_run(Path(output_dir), name)
            if len(configs) != 1 or not checkpoints:
                break
        kept[stage] = record
    return (str(last.get("id")) if kept else None), kept


def clean_outputs(scene_output_dir: Path, keep: Sequence[str] = ()) -> None:
    """Deletes what an earlier run of the scene may have left half-written (stage outputs, logs, temp files).

    ``attempts.json`` stays (it is the history); ``result.json`` is the caller's business.

    Args:
        scene_output_dir: ``<batch output>/<scene>``.
        keep: Completed stages whose output and log stay (:func:`reusable_stages`).
    """
    for name in (TRAIN_DIR, EVAL_DIR, PREDICT_DIR):
        if not (name == TRAIN_DIR and "train" in keep):
            shutil.rmtree(scene_output_dir / name, ignore_errors=True)
    logs, kept_logs = scene_output_dir / LOG_DIR, {f"{stage}.log" for stage in keep}
    if logs.is_dir():
        for log in logs.iterdir():
            if log.name not in kept_logs:
                if log.is_dir():
                    shutil.rmtree(log)
                else:
                    log.unlink()
        if not any(logs.iterdir()):
            logs.rmdir()
    for temp in scene_output_dir.glob(".*.tmp"):  # an atomic write cut short
        temp.unlink(missing_ok=True)
