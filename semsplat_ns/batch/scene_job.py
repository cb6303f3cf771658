"""The per-scene task of ``semsplat-batch``: pseudo labels → training → evaluation → prediction, each stage a
subprocess of the worker running the project's own command.

The task is idempotent, because Dask runs it again on another worker when the one running it is lost: it
returns the recorded result of a scene that already completed, and otherwise starts by deleting whatever an
earlier, interrupted run left half-written (logs, training run, metrics, predictions). Only its last act,
the atomic write of ``result.json``, makes a scene complete. Stage processes die with the worker process
(Linux ``PR_SET_PDEATHSIG``): a lost worker leaves no orphan writing into a folder that another worker now
owns. Nothing here imports torch or nerfstudio; the stages do.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from semsplat_ns.atomic import write_json_atomic

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

RESULT_NAME = "result.json"
"""A complete scene's record, in its output folder."""
ATTEMPTS_NAME = "attempts.json"
"""Every run of the scene's task (kept across runs, never taken for a result)."""
LOG_DIR, TRAIN_DIR, EVAL_DIR, PREDICT_DIR = "logs", "train", "eval", "predict"
"""Sub-folders of a scene's output folder; the last three are stage outputs, deleted before a run."""
TIMESTAMP = "batch"
"""``ns-train --timestamp``: one training run per scene folder, at a path known in advance."""
RESULT_FORMAT = 1
"""Version of result.json's layout."""
EVENT_TOPIC = "semsplat-batch"
"""Dask event topic of the stage progress that the client shows live."""
METRIC_KEYS = ("miou", "miou_present", "acc", "test_ms_per_view")
"""The metrics of semsplat-eval's metrics.json that the summary reports (fractions, and ms per view)."""

_COMMAND_HEADER = "# command: "
_ERROR_LINE = re.compile(r"^[\w.\-]+: error: .+")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b:?.*")
_BOX_CHARS = "│╭╮╰╯─┃━┏┓┗┛ \t"


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
    pseudo_backend: str = "reproject"
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


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> Optional[Any]:
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
    record = _read_json(Path(scene_output_dir) / RESULT_NAME)
    if not isinstance(record, dict) or record.get("status") != "ok" or record.get("format") != RESULT_FORMAT:
        return None
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(metrics.get(key), (int, float)) for key in METRIC_KEYS):
        return None
    return record


def find_command(name: str) -> Optional[str]:
    """A console script of this environment: beside the running Python first (a venv's bin/ need not be on
    PATH), then on PATH.

    Args:
        name: e.g. ``ns-train``.

    Returns:
        Its path, or None when it is not installed.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def error_line(log_text: str, command: str, returncode: Optional[int]) -> str:
    """The one line that says why a stage failed, from its output.

    Our commands and ns-train (through semsplat's excepthook) end bad input with ``<prog>: error: <message>``,
    which is taken as is; otherwise a tyro box's message, a traceback's last line, or the last line printed.

    Args:
        log_text: The stage's output (stdout and stderr).
        command: The command's name, for messages that do not name it.
        returncode: Its exit status (negative: killed by that signal); None: it timed out.
    """
    lines = [line.rstrip() for line in log_text.splitlines() if not line.startswith(_COMMAND_HEADER)]
    for line in reversed(lines):
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    status = (
        "timed out"
        if returncode is None
        else f"was killed by signal {-returncode}"
        if returncode < 0
        else f"exited with status {returncode}"
    )
    for index in range(len(lines) - 1, -1, -1):
        # tyro (bad flags) prints a box: "╭─ Unrecognized options ─╮ / │ Unrecognized options: --x │ / ...".
        if lines[index].lstrip().startswith("╭─"):
            for inner in lines[index + 1 :]:
                text = inner.strip(_BOX_CHARS)
                if text and any(ch.isalnum() for ch in text):
                    return f"{command}: error: {text}"
    if "Traceback (most recent call last):" in log_text:
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line.strip()) and not line.strip().endswith("Warning"):
                return f"{command} {status}: {line.strip()}"
    for line in reversed(lines):
        text = line.strip(_BOX_CHARS)
        if text and any(ch.isalnum() for ch in text):
            return f"{command} {status}: {text}"
    return f"{command} {status} and printed nothing"


def _die_with_parent_hook() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies (Linux), else None.

    The death signal fires when the forking *thread* ends; the worker thread that starts a stage waits for it,
    so it cannot end first except with the whole process.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl  # resolved here: the hook runs between fork and exec
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return hook


def stage_env(threads: Optional[int]) -> Dict[str, str]:
    """The environment of a stage process.

    Args:
        threads: CPU threads per stage process. Dask's nanny sets OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) in
            every worker, which a training stage must not inherit; None keeps the worker's values.
    """
    env = dict(os.environ)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    # Logs written as they happen (a stage can be followed with tail -f), and rich lines wide enough to read.
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COLUMNS", "160")
    return env


def worker_sees_gpu() -> bool:
    """Whether this process sees a CUDA GPU (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi``), without torch."""
    from semsplat_ns.batch.cluster import visible_gpus

    return bool(visible_gpus())


class _Attempts:
    """``attempts.json``: one entry per run of the task; an entry left without an outcome was interrupted."""

    def __init__(self, path: Path, job: SceneJob, worker: Optional[str]):
        self.path = path
        previous = _read_json(path)
        self.entries: List[Dict[str, Any]] = previous if isinstance(previous, list) else []
        for entry in self.entries:
            if isinstance(entry, dict) and entry.get("outcome") is None:
                # Still "running" in the record, yet a new run started: the worker running it was lost.
                entry["outcome"] = "interrupted"
        self.entry: Dict[str, Any] = {
            "id": uuid.uuid4().hex[:12],
            "attempt": job.attempt,
            "worker": worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now_iso(),
            "stage": None,
            "stage_pid": None,
            "outcome": None,
        }
        self.entries.append(self.entry)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.entries)

    def update(self, **fields: Any) -> None:
        self.entry.update(fields)
        self.save()


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


def clean_outputs(scene_output_dir: Path) -> None:
    """Deletes what an earlier run of the scene may have left half-written (stage outputs, logs, temp files).

    ``attempts.json`` stays (it is the history); ``result.json`` is the caller's business.
    """
    for name in (LOG_DIR, TRAIN_DIR, EVAL_DIR, PREDICT_DIR):
        shutil.rmtree(scene_output_dir / name, ignore_errors=True)
    for temp in scene_output_dir.glob(".*.tmp"):  # an atomic write cut short
        temp.unlink(missing_ok=True)


class _SceneRun:
    """One run of :func:`run_scene`; one method per stage."""

    def __init__(self, job: SceneJob):
        self.job = job
        self.out = Path(job.output_dir)
        self.scene = Path(job.scene_dir)
        self.stages: Dict[str, StageRecord] = {}
        self.env = stage_env(job.threads)
        self.worker = _worker_address()
        self.attempts = _Attempts(self.out / ATTEMPTS_NAME, job, self.worker)
        self.config_path: Optional[Path] = None
        self.metrics: Dict[str, Any] = {}
        self.metrics_file: Optional[str] = None
        self.predictions: Dict[str, Any] = {}

    # -- running one command -------------------------------------------------------------------------------

    def _run(self, stage: str, argv: Sequence[Any]) -> StageRecord:
        """Runs one stage's command with its output in ``logs/<stage>.log``; raises SceneFailed if it fails."""
        log = self.out / LOG_DIR / f"{stage}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [str(part) for part in argv]
        self.attempts.update(stage=stage, stage_pid=None)
        _emit(self.job, stage=stage, state="started", worker=self.worker)
        started = time.perf_counter()
        returncode: Optional[int]
        with open(log, "w") as handle:
            handle.write(_COMMAND_HEADER + shlex.join(command) + "\n")
            handle.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.out,
                preexec_fn=_die_with_parent_hook(),
            )
            self.attempts.update(stage_pid=process.pid)
            try:
                returncode = process.wait(timeout=self.job.stage_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                returncode = None
        seconds = time.perf_counter() - started
        if returncode == 0:
            record = StageRecord("ok", seconds, command, str(log))
            self.stages[stage] = record
            _emit(self.job, stage=stage, state="done", seconds=seconds, worker=self.worker)
            return record
        name = STAGE_COMMANDS[stage]
        message = error_line(log.read_text(errors="replace"), name, returncode)
        if returncode is None:
            message += f" (--stage-timeout-s {self.job.stage_timeout_s:g} s)"
        self.stages[stage] = StageRecord("failed", seconds, command, str(log), message)
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

    def _skip(self, stage: str, reason: str) -> None:
        self.stages[stage] = StageRecord("skipped", 0.0, reason=reason)
        _emit(self.job, stage=stage, state="skipped", reason=reason, worker=self.worker)

    def _fail(self, stage: str, message: str) -> SceneFailed:
        """Marks a stage whose command succeeded as failed (its output is unusable); returns the error to raise."""
        record = self.stages[stage]
        record.status, record.reason = "failed", message
        return SceneFailed(self.job.name, stage, message, record.log)

    # -- the stages ----------------------------------------------------------------------------------------

    def pseudo_labels(self) -> None:
        if self.job.pseudo_backend == "none":
            self._skip("pseudo_labels", f"--pseudo-backend none: training reads what {self.scene}/train/pseudo holds")
            return
        # --overwrite: pseudo labels of another backend, or of an interrupted run, must not be mixed in.
        argv = [self._executable("pseudo_labels"), "--data", self.scene, "--backend", self.job.pseudo_backend]
        self._run("pseudo_labels", [*argv, "--overwrite"])

    def train(self) -> None:
        job = self.job
        argv: List[Any] = [self._executable("train"), job.preset, "--data", self.scene]
        argv += ["--output-dir", self.out / TRAIN_DIR, "--experiment-name", job.name, "--timestamp", TIMESTAMP]
        argv += ["--vis", "tensorboard"]
        if job.max_num_iterations is not None:
            argv += ["--max-num-iterations", job.max_num_iterations]
        if job.device == "cpu" or (job.device == "auto" and not worker_sees_gpu()):
            argv += ["--machine.device-type", "cpu"]
        elif job.device == "cuda":
            argv += ["--machine.device-type", "cuda"]
        record = self._run("train", [*argv, *job.method_args])
        configs = sorted((self.out / TRAIN_DIR / job.name).glob(f"*/{TIMESTAMP}/config.yml"))
        checkpoints = [p for c in configs for p in (c.parent / "nerfstudio_models").glob("*.ckpt")]
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
        metrics = _read_json(output / "metrics.json")
        if not isinstance(metrics, dict) or not all(isinstance(metrics.get(k), (int, float)) for k in METRIC_KEYS):
            raise self._fail(
                "eval", f"semsplat-eval wrote no usable {output / 'metrics.json'} (needs {', '.join(METRIC_KEYS)})"
            )
        keep = (*METRIC_KEYS, "test_ms_per_view_p95", "n_views", "n_gaussians", "step", "per_class_iou")
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
        summary = _read_json(output / "predict.json")
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
    clean_outputs(out)
    run = _SceneRun(job)
    _emit(job, state="running", worker=run.worker, pid=os.getpid())
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
