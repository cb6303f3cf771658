"""The per-scene task of ``semsplat-batch``: pseudo labels → training → evaluation → prediction, each stage a
subprocess of the worker running the project's own command.

The task is idempotent, because Dask runs it again on another worker when the one running it is lost: it
returns the recorded result of a scene that already completed, and otherwise starts by deleting whatever an
earlier run left (logs, training run, metrics, predictions), except the stages that a run which lost its worker
had completed with the same settings (its pseudo labels, its trained model: :mod:`semsplat_ns.batch.records`),
which it keeps instead of making them again. Only its last act,
the atomic write of ``result.json``, makes a scene complete. Stage processes die with the worker process
(Linux ``PR_SET_PDEATHSIG``): a lost worker leaves no orphan writing into a folder that another worker now
owns. Nothing here imports torch or nerfstudio; the stages do.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.batch.cluster import gpu_in_use, visible_gpus
from semsplat_ns.batch.process import error_line, find_command, run_logged, stage_env
from semsplat_ns.batch.records import (
    ATTEMPTS_NAME,
    EVAL_DIR,
    LOG_DIR,
    METRIC_KEYS,
    PREDICT_DIR,
    RESULT_FORMAT,
    RESULT_NAME,
    TIMESTAMP,
    TRAIN_DIR,
    Attempts,
    StageRecord,
    clean_outputs,
    now_iso,
    read_json,
    read_result,
    reusable_stages,
    train_run,
)

STAGES = ("pseudo_labels", "train", "eval", "predict")
"""The stages of a scene, in order."""

STAGE_LABELS = {"pseudo_labels": "pseudo labels", "train": "training", "eval": "evaluation", "predict": "prediction"}
"""How the console and the summary name each stage."""

STAGE_COMMANDS = {
    "pseudo_labels": "semsplat-pseudo-labels",
    "train": "ns-train",
    "eval": "semsplat-eval",
    "predict": "semsplat-predict",
}
"""The console script each stage runs."""

EVENT_TOPIC = "semsplat-batch"
"""Dask event topic of the stage progress that the client shows live."""


class SceneFailed(Exception):
    """A stage of a scene failed; :attr:`message` is its one-line error.

    Args:
        scene: The scene's name.
        stage: The stage that failed (one of :data:`STAGES`, or "setup").
        message: The stage's own one-line error.
        log: The stage's log file, if it got that far.
    """

    def __init__(self, scene: str, stage: str, message: str, log: Optional[str] = None):
        super().__init__(message)
        self.scene, self.stage, self.message, self.log = scene, stage, message, log

    def __reduce__(self):
        # Crosses from worker to client by pickle; the default would call __init__ with the message alone.
        return (SceneFailed, (self.scene, self.stage, self.message, self.log))

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class SceneJob:
    """Everything a worker needs to run one scene (plain values: it travels to the worker by pickle)."""

    name: str
    """The scene's name: its output folder under the batch's output folder and ns-train's experiment name."""
    scene_dir: str
    """The IRT scene folder (absolute; with a remote cluster it must be the same path on the workers)."""
    output_dir: str
    """``<batch output>/<name>``."""
    preset: str = "semsplat"
    """The ns-train method."""
    pseudo_backend: str = "prior"
    """semsplat-pseudo-labels --backend, or "none" to skip the stage."""
    max_num_iterations: Optional[int] = None
    """ns-train --max-num-iterations; None: the preset's."""
    device: str = "auto"
    """auto (CPU where the worker sees no GPU), cuda or cpu."""
    method_args: Tuple[str, ...] = ()
    """Further ns-train flags, appended after ours."""
    threads: Optional[int] = None
    """CPU threads of each stage process (OMP/MKL/OpenBLAS); None: as the worker's environment says."""
    stage_timeout_s: Optional[float] = None
    """A stage still running after this long is killed and fails the scene; None: no limit."""
    attempt: int = 1
    """Which submission of the scene this is (the client retries a failed scene)."""
    redo: bool = False
    """Run the scene even if it has a recorded result."""

    def settings(self) -> Dict[str, Any]:
        """What decides the scene's result (not where or how fast it runs); recorded in result.json."""
        return {
            "preset": self.preset,
            "pseudo_backend": self.pseudo_backend,
            "max_num_iterations": self.max_num_iterations,
            "device": self.device,
            "method_args": list(self.method_args),
        }


def worker_sees_gpu() -> bool:
    """Whether this process sees a CUDA GPU (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``), without torch."""
    return bool(visible_gpus())


def trains_on_gpu(device: str) -> bool:
    """Whether the stages of a job with this ``device`` setting run on this worker's GPU."""
    return device == "cuda" or (device == "auto" and worker_sees_gpu())


def _worker_address() -> Optional[str]:
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        return get_worker().address
    return None


def _emit(job: SceneJob, **fields: Any) -> None:
    """Tells the client (Dask event :data:`EVENT_TOPIC`) how the scene is going; nothing outside a worker."""
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        get_worker().log_event(EVENT_TOPIC, {"scene": job.name, "attempt": job.attempt, **fields})


class _SceneRun:
    """One run of :func:`run_scene`; one method per stage."""

    def __init__(self, job: SceneJob):
        self.job = job
        self.out = Path(job.output_dir)
        self.scene = Path(job.scene_dir)
        self.stages: Dict[str, StageRecord] = {}
        self.env = stage_env(job.threads)
        self.worker = _worker_address()
        self.attempts = Attempts(self.out / ATTEMPTS_NAME, job.attempt, job.settings(), self.worker)
        self.config_path: Optional[Path] = None
        self.metrics: Dict[str, Any] = {}
        self.metrics_file: Optional[str] = None
        self.predictions: Dict[str, Any] = {}

    # -- running one command -------------------------------------------------------------------------------

    def _run(self, stage: str, argv: Sequence[Any]) -> StageRecord:
        """Runs one stage's command with its output in ``logs/<stage>.log``; raises SceneFailed if it fails."""
        log = self.out / LOG_DIR / f"{stage}.log"
        command = [str(part) for part in argv]
        self.attempts.update(stage=stage, stage_pid=None)
        _emit(self.job, stage=stage, state="started", worker=self.worker)
        finished = run_logged(
            command,
            log,
            self.env,
            self.out,
            self.job.stage_timeout_s,
            on_start=lambda pid: self.attempts.update(stage_pid=pid),
        )
        returncode, seconds = finished.returncode, finished.seconds
        if returncode == 0:
            record = StageRecord("ok", seconds, command, str(log), started=finished.started)
            self.stages[stage] = record
            self.attempts.completed(stage, record)
            _emit(self.job, stage=stage, state="done", seconds=seconds, worker=self.worker)
            return record
        name = STAGE_COMMANDS[stage]
        message = error_line(log.read_text(errors="replace"), name, returncode)
        if returncode is None:
            message += f" (--stage-timeout-s {self.job.stage_timeout_s:g} s)"
        self.stages[stage] = StageRecord("failed", seconds, command, str(log), message, finished.started)
        raise SceneFailed(self.job.name, stage, message, str(log))

    def _executable(self, stage: str) -> str:
        path = find_command(STAGE_COMMANDS[stage])
        if path is None:
            raise SceneFailed(
                self.job.name,
                stage,
                f"{STAGE_COMMANDS[stage]}: not installed on worker {self.worker or socket.gethostname()} "
                f"(no console script beside {sys.executable} or on PATH)",
            )
        return path

    def reuse(self, previous: Optional[str], kept: Dict[str, Dict[str, Any]]) -> None:
        """Takes the stages an interrupted run completed (:func:`reusable_stages`) as this run's."""
        for stage, fields in kept.items():
            record = StageRecord(**{**fields, "reused_from": fields.get("reused_from") or previous})
            self.stages[stage] = record
            self.attempts.completed(stage, record)
            _emit(self.job, stage=stage, state="reused", worker=self.worker)

    def _skip(self, stage: str, reason: str) -> None:
        self.stages[stage] = StageRecord("skipped", 0.0, reason=reason)
        self.attempts.completed(stage, self.stages[stage])
        _emit(self.job, stage=stage, state="skipped", reason=reason, worker=self.worker)

    def _fail(self, stage: str, message: str) -> SceneFailed:
        """Marks a stage whose command succeeded as failed (its output is unusable); returns the error to raise."""
        record = self.stages[stage]
        record.status, record.reason = "failed", message
        return SceneFailed(self.job.name, stage, message, record.log)

    # -- the stages ----------------------------------------------------------------------------------------

    def pseudo_labels(self) -> None:
        if "pseudo_labels" in self.stages:  # kept from the run that lost its worker
            return
        if self.job.pseudo_backend == "none":
            self._skip("pseudo_labels", f"--pseudo-backend none: training reads what {self.scene}/train/pseudo holds")
            return
        # --overwrite: pseudo labels of another backend, or of an interrupted run, must not be mixed in.
        argv = [self._executable("pseudo_labels"), "--data", self.scene, "--backend", self.job.pseudo_backend]
        self._run("pseudo_labels", [*argv, "--overwrite"])

    def train(self) -> None:
        job = self.job
        if "train" in self.stages:  # kept from the run that lost its worker; reusable_stages checked its files
            self.config_path = train_run(self.out, job.name)[0][0]
            return
        argv: List[Any] = [self._executable("train"), job.preset, "--data", self.scene]
        argv += ["--output-dir", self.out / TRAIN_DIR, "--experiment-name", job.name, "--timestamp", TIMESTAMP]
        argv += ["--vis", "tensorboard"]
        if job.max_num_iterations is not None:
            argv += ["--max-num-iterations", job.max_num_iterations]
        if not trains_on_gpu(job.device):
            argv += ["--machine.device-type", "cpu"]
        elif job.device == "cuda":
            argv += ["--machine.device-type", "cuda"]
        record = self._run("train", [*argv, *job.method_args])
        configs, checkpoints = train_run(self.out, job.name)
        if len(configs) != 1 or not checkpoints:
            found = ", ".join(str(c) for c in configs) or "no config.yml"
            raise self._fail(
                "train",
                f"ns-train ended without error but left {found} and {len(checkpoints)} checkpoint(s) under "
                f"{self.out / TRAIN_DIR}; see {record.log}",
            )
        self.config_path = configs[0]

    def evaluate(self) -> None:
        assert self.config_path is not None  # train() sets it or raises
        output = self.out / EVAL_DIR
        self._run("eval", [self._executable("eval"), "--load-config", self.config_path, "--output-dir", output])
        metrics = read_json(output / "metrics.json")
        if not isinstance(metrics, dict) or not all(isinstance(metrics.get(k), (int, float)) for k in METRIC_KEYS):
            raise self._fail(
                "eval", f"semsplat-eval wrote no usable {output / 'metrics.json'} (needs {', '.join(METRIC_KEYS)})"
            )
        keep = (*METRIC_KEYS, "test_ms_per_view_p95", "timing_warmup_views", "n_views", "n_gaussians", "step")
        keep += ("device", "per_class_iou")
        self.metrics = {key: metrics[key] for key in keep if key in metrics}
        self.metrics_file = str(output / "metrics.json")

    def predict(self) -> None:
        assert self.config_path is not None
        executable = find_command(STAGE_COMMANDS["predict"])
        if executable is None:
            # Prediction is an extra: a worker without the command still gives the scene's metrics.
            self._skip(
                "predict",
                f"semsplat-predict is not installed on worker {self.worker or socket.gethostname()} "
                f"(no console script beside {sys.executable} or on PATH)",
            )
            return
        splits = [split for split in ("train", "test", "validation") if (self.scene / split).is_dir()]
        output = self.out / PREDICT_DIR
        argv = [executable, "--load-config", self.config_path, "--output-dir", output, "--split", *splits]
        self._run("predict", argv)
        summary = read_json(output / "predict.json")
        if isinstance(summary, dict) and isinstance(summary.get("splits"), dict):
            self.predictions = {
                split: int(info.get("views", 0)) for split, info in summary["splits"].items() if isinstance(info, dict)
            }

    # -- the whole scene -----------------------------------------------------------------------------------

    def result(self) -> Dict[str, Any]:
        stages = {stage: asdict(record) for stage, record in self.stages.items()}
        return {
            "format": RESULT_FORMAT,
            "status": "ok",
            "scene": self.job.name,
            "scene_dir": str(self.scene),
            "output_dir": str(self.out),
            "settings": self.job.settings(),
            "metrics": self.metrics,
            "metrics_file": self.metrics_file,
            "predictions": self.predictions,
            "predict_dir": str(self.out / PREDICT_DIR) if self.stages["predict"].status == "ok" else None,
            "stages": stages,
            "total_s": sum(record.seconds for record in self.stages.values()),
            "config": str(self.config_path),
            "worker": self.worker,
            "host": socket.gethostname(),
            "gpu": gpu_in_use() if trains_on_gpu(self.job.device) else None,
            "pid": os.getpid(),
            "attempt": self.job.attempt,
            "finished": now_iso(),
        }


def run_scene(job: SceneJob) -> Dict[str, Any]:
    """The Dask task of one scene: runs its stages and records the result.

    Args:
        job: The scene and the batch's settings.

    Returns:
        The scene's record, also written to ``<output_dir>/result.json``.

    Raises:
        SceneFailed: A stage failed (or setup did); the message is the stage's one-line error.
    """
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if job.redo:
        (out / RESULT_NAME).unlink(missing_ok=True)
    recorded = read_result(out)
    if recorded is not None:
        # Dask may run a task again after its worker is lost, possibly after the scene completed.
        _emit(job, state="recorded")
        return recorded
    (out / RESULT_NAME).unlink(missing_ok=True)  # a file that is not a complete result
    previous, kept = reusable_stages(out, job.name, job.settings(), job.redo)
    clean_outputs(out, keep=list(kept))
    run = _SceneRun(job)
    _emit(job, state="running", worker=run.worker, pid=os.getpid())
    run.reuse(previous, kept)
    try:
        if not Path(job.scene_dir).is_dir():
            raise SceneFailed(job.name, "setup", f"{job.scene_dir}: scene folder not found on this worker")
        run.pseudo_labels()
        run.train()
        run.evaluate()
        run.predict()
    except SceneFailed as failure:
        run.attempts.update(outcome="failed", ended=now_iso(), stage=failure.stage, error=failure.message)
        raise
    except BaseException as error:
        # A bug of ours, not a stage's failure: recorded, then raised with its traceback for the client.
        run.attempts.update(outcome="error", ended=now_iso(), error=f"{type(error).__name__}: {error}")
        raise
    record = run.result()
    run.attempts.update(outcome="ok", ended=now_iso(), stage=None)
    record["runs"] = run.attempts.entries
    write_json_atomic(out / RESULT_NAME, record)
    _emit(job, state="ok", seconds=record["total_s"])
    return record
