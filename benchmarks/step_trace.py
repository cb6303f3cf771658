"""Which steps of a whole training run are slow, and what each of them did.

Trains a registered preset (``semsplat`` or ``semsplat-fast``, the config ``ns-train`` builds, its pseudo labels
made or reused first) over its whole schedule, with no evaluation renders or checkpoints inside the loop, as the
benchmark rows train. Each step is stamped on the host (``time.perf_counter``, no wait for the device: a step's
rasterization already waits for the device once, so the host's pace is the loop's) at the first of nerfstudio's
callbacks before it and the last after it. "inside" is what nerfstudio times as "Train Iter (time)" (the step and its
callbacks); "outside" is the loop's work between two steps (logging, the evaluation check, the event writers).

Every step gets tags saying what it did besides the usual work:

- ``first``: the loop's first step (captures of the loss graphs, kernels' first launches);
- ``capture``: a view's loss graphs were captured (:class:`~semsplat_ns.model.view_losses.ViewLossRunner`);
- ``refine``: densification changed the Gaussians (their count or their tensors);
- ``pool``: L3D's neighbour pool was rebuilt (:class:`~semsplat_ns.model.neighbour_pool.NeighbourPool`);
- ``gc0``/``gc1``/``gc2``: Python's garbage collector ran (its generation), its time in ``gc_ms``;
- ``log``: a logging step (``logging.steps_per_log``): metrics and events written;
- ``labelled`` / ``pseudo`` / ``unlabelled``: the kind of view drawn;
- ``size1``/``size2``/...: the render's downscale factor.

The summary (``--out``/step_trace[_<label>].json) holds the loop's steps/s, the median inside and outside times,
each tag's steps and the time its steps took beyond the median ("excess"), ms/step per window of steps, the slowest
steps with their tags and, with ``--phases``, the host time of each phase of a plain step (:func:`phase_clock`);
``step_trace[_<label>]_steps.json`` holds every step's times and tags.

    python benchmarks/step_trace.py --scene .scenes/townA --method semsplat --label head --out /tmp/trace
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import device_name, git_commit, loop_only  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402
from semsplat_ns.data.datamanager import VIEW_LABELLED, VIEW_PSEUDO, VIEW_UNLABELLED  # noqa: E402

KIND_TAGS = {VIEW_LABELLED: "labelled", VIEW_PSEUDO: "pseudo", VIEW_UNLABELLED: "unlabelled"}
"""``view_kind`` of a training batch -> its tag."""


@dataclass
class StepTrace:
    """Host stamps and tags of every training step, and the garbage collector's time within each.

    Args:
        state: Called before and after each step: a snapshot of what the tags compare (see :meth:`tags_of`).
    """

    state: Callable[[], Dict[str, object]]
    phases: Optional[PhaseClock] = None
    """Also times these phases inside each step (None: none)."""
    before: List[float] = field(default_factory=list)
    """``perf_counter`` at the start of each step."""
    after: List[float] = field(default_factory=list)
    """``perf_counter`` at the end of each step."""
    tags: List[List[str]] = field(default_factory=list)
    gc_ms: List[float] = field(default_factory=list)
    """Milliseconds of garbage collection inside each step."""
    _snapshot: Dict[str, object] = field(default_factory=dict)
    _gc_started: Optional[float] = None
    _gc_generations: List[int] = field(default_factory=list)
    _gc_now_ms: float = 0.0

    def before_step(self, step: int) -> None:
        self._snapshot = self.state()
        self._gc_generations, self._gc_now_ms = [], 0.0
        self.before.append(time.perf_counter())

    def after_step(self, step: int) -> None:
        self.after.append(time.perf_counter())
        now = self.state()
        tags = ["first"] if not self.tags else []
        tags += self.tags_of(self._snapshot, now)
        tags += [f"gc{generation}" for generation in sorted(set(self._gc_generations))]
        self.tags.append(tags)
        self.gc_ms.append(self._gc_now_ms)
        if self.phases is not None:
            self.phases.add("step", 1000 * (self.after[-1] - self.before[-1]))
            self.phases.end_step()

    @staticmethod
    def tags_of(before: Dict[str, object], after: Dict[str, object]) -> List[str]:
        """What changed over a step (see the module's list of tags)."""
        tags = []
        if after["captures"] != before["captures"]:
            tags.append("capture")
        if after["gaussians"] != before["gaussians"]:
            tags.append("refine")
        if after["pool_built_at"] != before["pool_built_at"] or after["pool_key"] != before["pool_key"]:
            tags.append("pool")
        if after.get("log"):
            tags.append("log")
        kind = after.get("view_kind")
        if kind is not None:
            tags.append(KIND_TAGS.get(int(kind), f"kind{kind}"))  # type: ignore[arg-type]
        tags.append(f"size{after['downscale']}")
        return tags

    def on_gc(self, phase: str, info: Dict[str, int]) -> None:
        """``gc.callbacks`` entry: times each collection and notes its generation."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self._gc_now_ms += 1000 * (time.perf_counter() - self._gc_started)
            self._gc_generations.append(int(info.get("generation", -1)))
            self._gc_started = None

    def summary(self, windows: int = 500, slowest: int = 40) -> dict:
        """The trace as a JSON-ready dict (see the module's docstring)."""
        steps = len(self.after)
        inside = [1000 * (a - b) for a, b in zip(self.after, self.before)]
        outside = [1000 * (b - a) for a, b in zip(self.after, self.before[1:])] + [0.0]
        total = [i + o for i, o in zip(inside, outside)]
        median = statistics.median(total)
        by_tag: Dict[str, Dict[str, float]] = defaultdict(lambda: dict(steps=0, ms=0.0, excess_ms=0.0))
        for ms, tags in zip(total, self.tags):
            for tag in tags:
                entry = by_tag[tag]
                entry["steps"] += 1
                entry["ms"] += ms
                entry["excess_ms"] += ms - median
        loop_s = self.after[-1] - self.before[0]
        order = sorted(range(steps), key=lambda s: -total[s])[:slowest]
        return dict(
            steps=steps,
            loop_s=loop_s,
            steps_per_s=steps / loop_s,
            steps_per_s_after_first=(steps - 1) / (self.after[-1] - self.before[1]) if steps > 1 else None,
            median_ms=median,
            median_inside_ms=statistics.median(inside),
            median_outside_ms=statistics.median(outside),
            inside_s=sum(inside) / 1000,
            outside_s=sum(outside) / 1000,
            excess_over_median_s=sum(ms - median for ms in total) / 1000,
            gc_s=sum(self.gc_ms) / 1000,
            tags={tag: dict(entry) for tag, entry in sorted(by_tag.items(), key=lambda item: -item[1]["excess_ms"])},
            windows=[
                dict(first=start, ms_per_step=sum(total[start : start + windows]) / len(total[start : start + windows]))
                for start in range(0, steps, windows)
            ],
            slowest=[
                dict(step=s, ms=total[s], inside_ms=inside[s], gc_ms=self.gc_ms[s], tags=self.tags[s]) for s in order
            ],
            per_step=dict(inside_ms=[round(v, 3) for v in inside], outside_ms=[round(v, 3) for v in outside]),
            per_step_tags=[" ".join(tags) for tags in self.tags],
            **self._phase_summary(),
        )

    PLAIN_EXCLUDES = ("first", "capture", "refine", "pool", "log")
    """Tags of steps with work besides the usual (left out of the phases' summary)."""

    def _phase_summary(self) -> dict:
        """The phases' mean and median ms over the plain steps at full resolution (no tag of :attr:`PLAIN_EXCLUDES`,
        tag ``size1``), with ``callbacks``: the step's time outside ``train_iteration`` (nerfstudio's callbacks:
        densification, the schedulers' bookkeeping)."""
        if self.phases is None:
            return {}
        plain = [
            step
            for step, tags in enumerate(self.tags)
            if "size1" in tags and not any(tag in tags for tag in self.PLAIN_EXCLUDES)
        ]
        per_step = self.phases.per_step
        derived = {}
        if "train_iteration" in per_step:  # the step's stamps hold the callbacks, the trace's own state reads too
            derived["callbacks"] = [a - b for a, b in zip(per_step["step"], per_step["train_iteration"])]
        return dict(phase_steps=len(plain), phases=self.phases.summary(plain, derived))


@dataclass
class PhaseClock:
    """Host milliseconds of named phases inside each step: functions wrapped to add their own duration (their callees
    included: phases nest) to the step's total, read at the end of each step.

    The host's time, not the device's: a phase that makes the host wait for the device (gsplat's tile intersection
    counts its intersections on the host) holds the wait.
    """

    names: List[str] = field(default_factory=list)
    per_step: Dict[str, List[float]] = field(default_factory=dict)
    """Phase -> its milliseconds in each step."""
    _now: Dict[str, float] = field(default_factory=dict)
    _undo: List[Callable[[], None]] = field(default_factory=list)

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        """Times ``owner.attribute`` (a function or bound method, set on the owner itself) as phase ``name``."""
        now = self._now

        def timing(function: Callable) -> Callable:
            def timed(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    now[name] = now.get(name, 0.0) + 1000 * (time.perf_counter() - started)

            return timed

        self._undo.append(replace_attribute(owner, attribute, timing))
        if name not in self.names:
            self.names.append(name)

    def add(self, name: str, ms: float) -> None:
        """Adds ``ms`` to phase ``name`` in this step (for work between stamps rather than inside one function)."""
        self._now[name] = self._now.get(name, 0.0) + ms
        if name not in self.names:
            self.names.append(name)

    def end_step(self) -> None:
        """Files this step's phase times (0 for a phase that did not run) and starts the next step's."""
        for name in self.names:
            self.per_step.setdefault(name, []).append(self._now.get(name, 0.0))
        self._now.clear()

    def restore(self) -> None:
        """Unwraps every function wrapped."""
        while self._undo:
            self._undo.pop()()

    def summary(
        self, steps: List[int], derived: Optional[Dict[str, List[float]]] = None
    ) -> Dict[str, Dict[str, float]]:
        """Each phase's mean and median milliseconds over ``steps`` (e.g. the steps with no extra work).

        Args:
            steps: The steps summarised.
            derived: More per-step series to summarise alike (name -> ms of each step), after the phases.
        """
        series = {**{name: self.per_step.get(name, []) for name in self.names}, **(derived or {})}
        result = {}
        for name, per_step in series.items():
            values = [per_step[s] for s in steps if s < len(per_step)]
            if values:
                result[name] = dict(mean_ms=sum(values) / len(values), median_ms=statistics.median(values))
        return result


def preset_config(scene: Path, method: str, output_dir: Path, iterations: Optional[int] = None):
    """The registered preset on ``scene`` as the benchmark rows train it: no evaluation renders or checkpoints
    inside the loop; stopped after ``iterations`` steps of its schedule when given."""
    from semsplat_ns.config import semsplat_fast_trainer_config, semsplat_preset_config

    config = semsplat_fast_trainer_config() if method == "semsplat-fast" else semsplat_preset_config()
    loop_only(config, scene, output_dir, f"trace_{scene.name}_{method}", iterations or config.max_num_iterations)
    config.set_timestamp()
    return config


def trace_run(
    scene: Path, method: str, output_dir: Path, iterations: Optional[int] = None, phases: bool = False
) -> StepTrace:
    """Trains ``method`` on ``scene`` over its schedule (or its first ``iterations`` steps), tracing every step."""
    config = preset_config(scene, method, output_dir, iterations)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trace_training(trainer, phases)


def trace_training(trainer, phases: bool = False) -> StepTrace:
    """Runs a set-up semsplat trainer's loop (``trainer.train()``) with every step traced.

    Args:
        trainer: A :class:`~semsplat_ns.trainer.SemSplatTrainer` after ``setup()``.
        phases: Also time the phases of each step (:func:`phase_clock`).
    """
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    model = trainer.pipeline.model
    datamanager = trainer.pipeline.datamanager
    steps_per_log = trainer.config.logging.steps_per_log
    drawn: Dict[str, object] = {}
    next_train = datamanager.next_train

    def next_train_noting_kind(step: int):
        camera, batch = next_train(step)
        drawn["view_kind"] = batch.get("view_kind")
        drawn["step"] = step
        return camera, batch

    datamanager.next_train = next_train_noting_kind  # the datamanager's own draw, its view's kind noted

    def state() -> Dict[str, object]:
        pool = model._neighbour_pool
        return dict(
            captures=model._view_loss_runner.captures,
            gaussians=(id(model.gauss_params["means"]), int(model.num_points)),
            pool_built_at=pool.built_at,
            pool_key=pool.key,
            view_kind=drawn.get("view_kind"),
            log=drawn.get("step", -1) % steps_per_log == 0,
            downscale=int(model._get_downscale_factor()),
        )

    clock = phase_clock(trainer) if phases else None
    trace = StepTrace(state, phases=clock)
    # first of the callbacks before a step, last after it: the step's stamps hold every other callback's work
    trainer.callbacks.insert(0, TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], trace.before_step))
    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], trace.after_step))
    gc.callbacks.append(trace.on_gc)
    try:
        trainer.train()
    finally:
        gc.callbacks.remove(trace.on_gc)
        if clock is not None:
            clock.restore()
    return trace


def replace_attribute(owner: object, attribute: str, wrapper: Callable[[Callable], Callable]) -> Callable[[], None]:
    """Sets ``owner.attribute`` (a function or bound method) to ``wrapper`` of it, on the owner itself.

    Returns:
        What puts the attribute back as it was (the owner's own value, or none of its own).
    """
    function = getattr(owner, attribute)
    had_own = isinstance(owner, type) or attribute in vars(owner)
    previous = vars(owner).get(attribute) if had_own else None
    setattr(owner, attribute, wrapper(function))
    return lambda: setattr(owner, attribute, previous) if had_own else delattr(owner, attribute)


def phase_targets(trainer) -> List[Tuple[object, str, str]]:
    """The functions a semsplat training step runs through, as (owner, attribute, phase name); names nest with "/":
    the draw, the forward pass (gsplat's projection, tile intersection and rasterization calls where gsplat renders,
    the SH colours, the transfer head), the losses, the backward pass (gsplat's backward functions among it), the
    optimiser, the schedulers and each of nerfstudio's callbacks."""
    import semsplat_ns.model.losses as losses
    import semsplat_ns.model.semsplat_model as semsplat_model
    from semsplat_ns.model.neighbour_pool import NeighbourPool
    from semsplat_ns.model.view_losses import ViewLossRunner

    model = trainer.pipeline.model
    optimizers = trainer.optimizers
    wraps: List[Tuple[object, str, str]] = [
        (trainer, "train_iteration", "train_iteration"),
        (optimizers, "zero_grad_some", "zero_grad"),
        (trainer.pipeline.datamanager, "next_train", "next_train"),
        (model, "get_outputs", "forward"),
        (model, "_rasterize", "forward/rasterize"),
        (semsplat_model, "rasterization", "forward/rasterize/gsplat"),
        (model, "_view_colors", "forward/rasterize/view_colors"),
        (model.transfer_head, "forward", "forward/transfer_head"),
        (model.strategy, "step_pre_backward", "forward/strategy_pre_backward"),
        (model, "get_metrics_dict", "metrics"),
        (model, "get_loss_dict", "losses"),
        (ViewLossRunner, "__call__", "losses/view_losses"),
        (losses, "aggregation_3d_loss", "losses/l3d"),
        (NeighbourPool, "sample", "losses/l3d/pool"),
        (torch.autograd, "backward", "backward"),
        (optimizers, "optimizer_scaler_step_some", "optimizer"),
        (optimizers, "scheduler_step_all", "scheduler"),
    ]
    try:  # gsplat's calls and backward functions (where gsplat is installed and renders: CUDA)
        import gsplat.cuda._wrapper as kernels
        import gsplat.rendering as rendering
    except ImportError:
        pass
    else:
        for function in ("fully_fused_projection", "isect_tiles", "isect_offset_encode", "rasterize_to_pixels"):
            wraps.append((rendering, function, f"forward/rasterize/gsplat/{function}"))
        for name, function in (("projection", "_FullyFusedProjection"), ("raster", "_RasterizeToPixels")):
            wraps.append((getattr(kernels, function), "backward", f"backward/gsplat_{name}"))
        wraps.append((kernels._SphericalHarmonics, "backward", "backward/gsplat_sh"))
    for callback in trainer.callbacks:  # nerfstudio's callbacks (densification, the schedulers' bookkeeping, ...)
        function = callback.func
        name = getattr(function, "__qualname__", type(function).__name__)
        wraps.append((callback, "func", f"callbacks/{name}"))
    return wraps


def phase_clock(trainer) -> PhaseClock:
    """A :class:`PhaseClock` on the phases of :func:`phase_targets`. Each wrap adds ~1 us of host time per call."""
    clock = PhaseClock()
    for owner, attribute, name in phase_targets(trainer):
        clock.wrap(owner, attribute, name)
    return clock


PER_STEP_KEYS = ("per_step", "per_step_tags")
"""Keys of the summary holding a value per step: written apart, compactly (``step_trace[_<label>]_steps.json``)."""


def write_trace(out: Path, label: Optional[str], about: Dict[str, object], summary: dict) -> None:
    """Writes a trace's summary (readable) and its per-step values (compact) into ``out``.

    Args:
        out: The folder.
        label: Names the files (``step_trace_<label>.json``, ``step_trace_<label>_steps.json``).
        about: What was traced (device, scene, method), put first.
        summary: :meth:`StepTrace.summary`.
    """
    stem = f"step_trace_{label}" if label else "step_trace"
    stamp = dict(label=label, date=datetime.date.today().isoformat(), commit=git_commit())
    record = {**about, **stamp, **{key: value for key, value in summary.items() if key not in PER_STEP_KEYS}}
    write_json_atomic(out / f"{stem}.json", record, indent=1)
    steps = {**about, **stamp, **{key: summary[key] for key in PER_STEP_KEYS if key in summary}}
    write_json_atomic(out / f"{stem}_steps.json", steps, indent=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--method", choices=("semsplat", "semsplat-fast"), default="semsplat")
    parser.add_argument("--out", type=Path, default=Path("trace-out"))
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/trace-runs"))
    parser.add_argument("--iterations", type=int, default=None, help="stop after this many steps (default: all)")
    parser.add_argument("--phases", action="store_true", help="also time the phases of each step (host ms)")
    parser.add_argument("--label", default=None, help="names this run's file (e.g. before / after)")
    args = parser.parse_args()
    trace = trace_run(args.scene, args.method, args.output_dir, args.iterations, args.phases)
    summary = trace.summary()
    device = device_name()
    args.out.mkdir(parents=True, exist_ok=True)
    write_trace(args.out, args.label, dict(device=device, scene=args.scene.name, method=args.method), summary)
    print(
        f"{summary['steps']} steps in {summary['loop_s']:.1f} s: {summary['steps_per_s']:.1f} steps/s; "
        f"median {summary['median_ms']:.2f} ms; excess over the median {summary['excess_over_median_s']:.1f} s; "
        f"gc {summary['gc_s']:.2f} s",
        flush=True,
    )
    for tag, entry in list(summary["tags"].items())[:12]:
        print(f"  {tag:12s} {entry['steps']:6d} steps, excess {entry['excess_ms'] / 1000:7.2f} s", flush=True)
    for name, entry in summary.get("phases", {}).items():
        print(f"  phase {name:32s} {entry['mean_ms']:6.2f} ms mean, {entry['median_ms']:6.2f} median", flush=True)
    for entry in summary["slowest"][:15]:
        print(f"  step {entry['step']:5d}: {entry['ms']:7.1f} ms  {' '.join(entry['tags'])}", flush=True)


if __name__ == "__main__":
    main()
