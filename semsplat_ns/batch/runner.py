"""The client side of ``semsplat-batch``: plans the scenes, skips those already recorded, submits one Dask task
per scene, shows their stages live, retries a failed scene, and keeps the summary up to date.

Fault tolerance is shared with Dask: a worker lost mid-scene makes the scheduler run the scene's task again
elsewhere (the task cleans up after the interrupted run and keeps the stages it completed,
:mod:`semsplat_ns.batch.scene_job`); a scene whose
task *fails* is submitted again here, ``retries`` times; a scene that still fails is reported with its
one-line error while the others go on.
"""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from distributed import Client, Future
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from semsplat_ns.batch.cluster import threads_per_worker
from semsplat_ns.batch.scene_job import (
    EVENT_TOPIC,
    STAGE_LABELS,
    STAGES,
    SceneFailed,
    SceneJob,
    read_result,
    run_scene,
)
from semsplat_ns.batch.summary import build_summary, write_summary
from semsplat_ns.console import CONSOLE, progress_bar

POLL_S = 0.25
"""How often the client looks at its tasks and the workers' stage events."""


@dataclass
class BatchSettings:
    """What to run (the CLI's flags, less the cluster's)."""

    scenes: Sequence[Path]
    """IRT scene folders, or bare names looked up as ns-train --data does."""
    output_dir: Path
    """Each scene's folder and the summary go here."""
    preset: str = "semsplat"
    """The ns-train method."""
    pseudo_backend: str = "prior"
    """semsplat-pseudo-labels --backend; "none" skips the stage."""
    max_num_iterations: Optional[int] = None
    """ns-train --max-num-iterations; None: the preset's."""
    device: str = "auto"
    """auto, cuda or cpu (see SceneJob.device)."""
    method_args: Sequence[str] = ()
    """Further ns-train flags."""
    threads_per_scene: Optional[int] = None
    """CPU threads per stage process; None: each host's cores shared among its workers."""
    retries: int = 1
    """Times a failed scene is submitted again."""
    redo: bool = False
    """Run scenes that have a recorded result again."""
    stage_timeout_s: Optional[float] = None
    """Kill a stage running longer than this (the scene fails)."""
    command: Optional[str] = None
    """The command line that started the batch, recorded in the summary's settings."""


@dataclass
class SceneOutcome:
    """How one scene ended in this batch."""

    name: str
    """The scene's name (its folder under the output folder)."""
    scene_dir: Optional[Path]
    """The scene folder; None when it could not be found."""
    status: str
    """ok (ran now), recorded (an earlier run's result) or failed."""
    result: Optional[Dict[str, Any]] = None
    """result.json's record (ok, recorded)."""
    stage: Optional[str] = None
    """The stage that failed (failed)."""
    error: Optional[str] = None
    """The one-line error (failed)."""
    attempts: int = 0
    """Submissions of the scene in this batch."""


@dataclass
class BatchReport:
    """The outcome of :func:`run_batch`."""

    outcomes: List[SceneOutcome]
    """One per scene, in the order given."""
    summary: Dict[str, Any]
    """The summary record (also in summary.json)."""
    files: Dict[str, Path] = field(default_factory=dict)
    """The summary's files: json, md, png."""

    @property
    def failed(self) -> List[SceneOutcome]:
        """The scenes that failed."""
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]


def scene_names(paths: Sequence[Path]) -> List[str]:
    """A distinct output-folder name per scene: its folder name, with as many parent folder names as it takes
    to tell scenes of the same name apart (``a/town`` and ``b/town`` become ``a-town`` and ``b-town``).

    Args:
        paths: Distinct scene folders.
    """
    depth = {index: 1 for index in range(len(paths))}

    def name(index: int) -> str:
        parts = [part for part in Path(paths[index]).parts if part not in ("/", "")]
        return "-".join(parts[-depth[index] :]) or "scene"

    while True:
        names = [name(index) for index in range(len(paths))]
        clashes = [index for index, value in enumerate(names) if names.count(value) > 1]
        grown = False
        for index in clashes:
            if depth[index] < len(Path(paths[index]).parts):
                depth[index] += 1
                grown = True
        if not clashes or not grown:
            return names


def plan_scenes(scenes: Sequence[Path]) -> List[Tuple[str, Optional[Path], Optional[str]]]:
    """Resolves the scenes given (folders, or names as ns-train --data takes them), drops repeats.

    Returns:
        ``(name, scene folder, None)`` per scene found, ``(name, None, error line)`` per scene not found.
    """
    from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir

    found: List[Path] = []
    missing: List[Tuple[str, str]] = []
    for scene in scenes:
        try:
            path = resolve_scene_dir(Path(scene)).resolve()
        except IRTDataError as error:
            missing.append((Path(scene).name or str(scene), str(error)))
            continue
        if path not in found:
            found.append(path)
    planned: List[Tuple[str, Optional[Path], Optional[str]]] = [
        (name, path, None) for name, path in zip(scene_names(found), found)
    ]
    return planned + [(name, None, error) for name, error in missing]


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_failure(error: BaseException) -> Tuple[Optional[str], str]:
    """(stage, one-line error) of a scene task's exception."""
    if isinstance(error, SceneFailed):
        return error.stage, error.message
    if type(error).__name__ == "KilledWorker":
        return None, _one_line(
            f"every worker that ran the scene died during it (dask KilledWorker: out of memory, or killed?): {error}"
        )
    return None, _one_line(f"{type(error).__name__}: {error}") or type(error).__name__


class _Rows:
    """One live progress row per scene."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: Dict[str, TaskID] = {}
        self.seen_running: Dict[Tuple[str, int], int] = {}

    def add(self, name: str, text: str, done: bool = False) -> None:
        self.tasks[name] = self.progress.add_task(
            self._text(name, text), total=len(STAGES), completed=len(STAGES) if done else 0
        )

    @staticmethod
    def _text(name: str, text: str) -> str:
        return f"[bold]{escape(name)}[/bold] {text}"

    def set(self, name: str, text: str, completed: Optional[int] = None) -> None:
        self.progress.update(self.tasks[name], description=self._text(name, text), completed=completed)

    def event(self, message: Dict[str, Any]) -> None:
        name = message.get("scene")
        if name not in self.tasks:
            return
        state, stage, worker = message.get("state"), message.get("stage"), message.get("worker") or "?"
        if state == "running":
            key = (name, int(message.get("attempt", 1)))
            self.seen_running[key] = self.seen_running.get(key, 0) + 1
            again = ""
            if self.seen_running[key] > 1:
                again = " (again: its worker was lost)"
                self.progress.console.print(
                    f"[yellow]{escape(name)}: its worker was lost; running it on {escape(worker)}"
                )
            self.set(name, f"starting on {escape(worker)}{again}", completed=0)
        elif state == "started" and stage in STAGES:
            self.set(name, f"{STAGE_LABELS[stage]} on {escape(worker)}", completed=STAGES.index(stage))
        elif state in ("done", "skipped") and stage in STAGES:
            self.set(name, f"{STAGE_LABELS[stage]} {state}", completed=STAGES.index(stage) + 1)
        elif state == "reused" and stage in STAGES:
            self.set(name, f"{STAGE_LABELS[stage]} kept from the lost run", completed=STAGES.index(stage) + 1)


def _metrics_text(result: Dict[str, Any]) -> str:
    metrics = result["metrics"]
    return f"mIoU {100 * metrics['miou']:.2f} %, acc {100 * metrics['acc']:.2f} %, {result['total_s']:.0f} s"


def run_batch(
    settings: BatchSettings,
    client: Client,
    console: Console = CONSOLE,
    cluster_description: str = "",
) -> BatchReport:
    """Runs every scene of ``settings`` on ``client``'s cluster; see the module docstring.

    Args:
        settings: Scenes, output folder and the stages' settings.
        client: Connected to the cluster whose workers run the scenes.
        console: Where the live progress and the messages go.
        cluster_description: One line on the cluster, recorded in the summary.

    Returns:
        Every scene's outcome and the summary written to the output folder.
    """
    started = time.perf_counter()
    output_dir = Path(settings.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    threads = settings.threads_per_scene or threads_per_worker(client)
    batch_settings = {
        "preset": settings.preset,
        "pseudo_backend": settings.pseudo_backend,
        "max_num_iterations": settings.max_num_iterations,
        "device": settings.device,
        "method_args": list(settings.method_args),
        "threads_per_scene": threads,
        "retries": settings.retries,
        "cluster": cluster_description,
        "workers": len(client.scheduler_info().get("workers", {})),
        "command": settings.command,
    }
    outcomes: Dict[str, SceneOutcome] = {}
    order: List[str] = []
    pending: List[SceneJob] = []
    for name, path, error in plan_scenes(settings.scenes):
        order.append(name)
        if path is None:
            outcomes[name] = SceneOutcome(name, None, "failed", stage="setup", error=error)
            continue
        job = SceneJob(
            name=name,
            scene_dir=str(path),
            output_dir=str(output_dir / name),
            preset=settings.preset,
            pseudo_backend=settings.pseudo_backend,
            max_num_iterations=settings.max_num_iterations,
            device=settings.device,
            method_args=tuple(settings.method_args),
            threads=threads,
            stage_timeout_s=settings.stage_timeout_s,
            redo=settings.redo,
        )
        recorded = None if settings.redo else read_result(output_dir / name)
        if recorded is None:
            pending.append(job)
            continue
        outcomes[name] = SceneOutcome(name, path, "recorded", result=recorded)
        if recorded.get("settings") != job.settings():
            console.print(
                f"[yellow]{escape(name)}: recorded with other settings ({recorded.get('settings')}); kept. "
                "--redo runs recorded scenes again"
            )

    def summarise() -> Tuple[Dict[str, Any], Dict[str, Path]]:
        done = [outcomes[n] for n in order if n in outcomes]
        results = [o.result for o in done if o.status in ("ok", "recorded") and o.result is not None]
        failures = [
            {"scene": o.name, "stage": o.stage, "error": o.error, "attempts": o.attempts}
            for o in done
            if o.status == "failed"
        ]
        recorded_names = [o.name for o in done if o.status == "recorded"]
        summary = build_summary(results, failures, batch_settings, recorded_names)
        summary["still_running"] = [n for n in order if n not in outcomes]
        summary["wall_s"] = time.perf_counter() - started
        return summary, write_summary(output_dir, summary)

    events: queue.Queue[Any] = queue.Queue()
    client.subscribe_topic(EVENT_TOPIC, events.put)
    running: Dict[Future, SceneJob] = {}

    def submit(job: SceneJob) -> None:
        key = f"semsplat-batch-{job.name}-{job.attempt}-{uuid.uuid4().hex[:8]}"
        running[client.submit(run_scene, job, key=key, pure=False)] = job

    try:
        with progress_bar(console) as progress:
            rows = _Rows(progress)
            for name in order:
                outcome = outcomes.get(name)
                if outcome is None:
                    rows.add(name, "waiting for a worker")
                elif outcome.status == "recorded":
                    assert outcome.result is not None
                    rows.add(name, f"[green]recorded earlier[/green]: {_metrics_text(outcome.result)}", done=True)
                else:
                    rows.add(name, f"[red]failed[/red]: {escape(outcome.error or '')}")
            for job in pending:
                submit(job)
            while running:
                while not events.empty():
                    _, message = events.get()
                    if isinstance(message, dict):
                        rows.event(message)
                for future in [f for f in running if f.done()]:
                    job = running.pop(future)
                    _finish(future, job, settings, outcomes, rows, console, submit)
                    summarise()
                time.sleep(POLL_S)
    except BaseException:
        for future in running:
            future.cancel()
        raise
    finally:
        client.unsubscribe_topic(EVENT_TOPIC)
    summary, files = summarise()
    return BatchReport([outcomes[name] for name in order], summary, files)


def _finish(
    future: Future,
    job: SceneJob,
    settings: BatchSettings,
    outcomes: Dict[str, SceneOutcome],
    rows: _Rows,
    console: Console,
    submit: Any,
) -> None:
    """Records a finished task: the scene's result, a retry, or its failure."""
    name = job.name
    if future.status == "finished":
        result = future.result()
        outcomes[name] = SceneOutcome(name, Path(job.scene_dir), "ok", result=result, attempts=job.attempt)
        rows.set(name, f"[green]done[/green]: {_metrics_text(result)}", completed=len(STAGES))
        return
    if future.status == "cancelled":
        stage, message = None, "the task was cancelled (scheduler restarted or connection lost?)"
    else:
        error = future.exception()
        if isinstance(error, BaseException):
            stage, message = describe_failure(error)
        else:
            stage, message = None, "failed without an error"
    where = f" in {STAGE_LABELS.get(stage or '', stage)}" if stage else ""
    if job.attempt <= settings.retries:
        console.print(
            f"[yellow]{escape(name)} failed{where} (attempt {job.attempt} of {settings.retries + 1}): "
            f"{escape(message)}; retrying"
        )
        rows.set(name, f"[yellow]retrying[/yellow] after: {escape(message)}", completed=0)
        # A retry runs the scene from the start, recorded result or not.
        submit(replace(job, attempt=job.attempt + 1, redo=False))
        return
    outcomes[name] = SceneOutcome(name, Path(job.scene_dir), "failed", stage=stage, error=message, attempts=job.attempt)
    console.print(f"[red]{escape(name)} failed{where}: {escape(message)}")
    rows.set(name, f"[red]failed[/red]{where}", completed=0)
