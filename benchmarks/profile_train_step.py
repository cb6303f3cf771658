"""Where a semsplat training step spends its time: ms/step of a few variants, a cProfile of one, and its host syncs.

Trains the registered ``semsplat`` preset as ``ns-train semsplat`` would (its schedule compressed to
``semsplat_ns.schedule.PRESET_STEPS`` steps, the automatic pseudo labels made or reused first), stopped after
``--iterations`` steps, for each variant, and prints ms/step over the last half of them; the first variant also runs
under cProfile, whose top entries go to ``--out``/profile_<variant>[_<label>].txt. The variants isolate what semsplat
adds to splatfacto's step:

- ``semsplat``: the preset;
- ``no-agg``: without the 2D/3D aggregation losses;
- ``rgb-only``: every semantic loss off (splatfacto's work plus rendering 16 more channels);
- ``optimizers-apart``: the preset with nerfstudio's one ``Adam.step`` per group instead of semsplat's steps taken
  together (``optimizers_step_together``: the before of that change, on the same machine);
- ``losses-eager``: the preset with each view's image losses run eagerly instead of replayed as CUDA graphs
  (``loss_runner``: the before of that change, on the same machine);
- ``chunk32``: the preset with its ~20 training channels in one rasterization kernel (padded to 32) instead of a 16-
  and a 4/5-channel kernel (``channel_chunk``): more GPU work, one autograd function less for the host.

``--kernels N`` (CUDA) adds one more run of the first variant with N steps of its second half under torch's profiler:
``--out``/kernels[_<label>].json holds the wall ms per step of that window, the GPU's busy ms per step (the CUDA
kernels' and copies' own time, summed) and the kernels taking most of it, and the host's side: aten operators launched
per step and the operators with most own host time; ``kernels[_<label>].txt`` and ``host_ops[_<label>].txt`` are
torch's tables by GPU and by host time. The same window runs each phase of ``step_trace.phase_targets`` (forward,
gsplat's calls, losses, backward, optimiser, ...) inside a profiler range of its name, so the json also says where the
host's operators come from: ``phases`` (each phase's host ms and aten operators per step, an operator counted in the
innermost phase around it, those in the autograd engine's threads under the backward function that ran them) and
``backward_nodes`` (the autograd functions run per step and their host ms).
GPU busy time well under the wall time says the step waits on the host (Python, launches, syncs), not the GPU.

``--sync-debug`` (CUDA) adds one more run of the first variant with ``torch.cuda.set_sync_debug_mode("warn")`` over
the second half of its steps: every operation that makes the host wait for the GPU warns, and each warning is
counted at the source line that caused it (the first frame of its stack outside torch: a line of semsplat,
nerfstudio, gsplat or this script). ``--out``/syncs[_<label>].json holds ``syncs_per_step`` and the locations, most
frequent first. That run is not timed (warnings cost host time); the clock's own sync after each step is left out.

    python benchmarks/profile_train_step.py --scene .scenes/townA --iterations 1500 --sync-debug --label after \
        --out /tmp/profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import pstats
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch._C._autograd import DeviceType  # the profiler events' device kind (torch.autograd re-exports it privately)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import busiest_events, loop_only  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402

VARIANTS = {
    "semsplat": {},
    "no-agg": dict(agg2d_loss_weight=0.0, agg3d_loss_weight=0.0),
    "rgb-only": dict(semantic_loss_weight=0.0, pseudo_loss_weight=0.0, agg2d_loss_weight=0.0, agg3d_loss_weight=0.0),
    "optimizers-apart": {},
    "losses-eager": dict(loss_runner="eager"),
    "chunk32": dict(channel_chunk=32),
}
"""Variant -> its model settings (``SemSplatModelConfig`` fields)."""

TRAINER_SETTINGS = {"optimizers-apart": dict(optimizers_step_together=False)}
"""Variant -> its trainer settings (``SemSplatTrainerConfig`` fields), where it has any."""

SYNC_WARNING = "called a synchronizing CUDA operation"
"""What torch's sync debug mode warns (``torch.cuda.set_sync_debug_mode("warn")``) at each op that waits for the GPU."""

TORCH_DIR = str(Path(torch.__file__).resolve().parent)
"""Frames in files under this folder are torch's own, skipped when looking for the line that caused a sync."""

_MACHINERY_FILES = ("warnings.py", "_py_warnings.py", "contextlib.py")
"""File names of the warnings machinery's frames (and context managers'), skipped as well."""


@functools.cache
def _is_cause_file(filename: str) -> bool:
    if filename[:1] == "<":  # frozen modules (e.g. <frozen importlib._bootstrap>); not <stdin> / <string>
        return not filename.startswith("<frozen")
    path = Path(filename).resolve()
    return not str(path).startswith(TORCH_DIR + "/") and path.name not in _MACHINERY_FILES


def outside_torch(frame: FrameType) -> bool:
    """Whether a frame is a candidate cause of a sync: not torch's code, nor the warnings machinery's.

    Args:
        frame: A Python stack frame.
    """
    return _is_cause_file(frame.f_code.co_filename)


def short_path(filename: str) -> str:
    """A source file's path as the report shows it: from the package folder on (``semsplat_ns/...``,
    ``nerfstudio/...``, ``gsplat/...``), relative to the repository, or as it is.

    Args:
        filename: The file's path.
    """
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return str(Path(*parts[parts.index("site-packages") + 1 :]))
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return filename


@dataclass
class SyncLocations:
    """Warnings of one kind, counted by the source line that caused each: the first stack frame outside torch.

    Args:
        message: Text a warning's message contains to be counted (default: torch's sync warning).
        is_cause: Whether a frame can be the cause (default :func:`outside_torch`); frames closer to the warning
            that are not are skipped.
        context_frames: Frames of the stack kept with each location (the cause and its callers), for reading.
    """

    message: str = SYNC_WARNING
    is_cause: Callable[[FrameType], bool] = outside_torch
    context_frames: int = 4
    counts: Counter = field(default_factory=Counter)
    """Location "file:line (function)" -> number of warnings."""
    stacks: Dict[str, List[str]] = field(default_factory=dict)
    """Location -> the stack at its first warning (the cause first, then its callers)."""

    @property
    def total(self) -> int:
        """All warnings counted."""
        return sum(self.counts.values())

    def record(self, frame: Optional[FrameType]) -> str:
        """Counts one warning raised with ``frame`` as the innermost frame of its stack.

        Args:
            frame: The innermost Python frame when the warning was issued (its callers follow ``f_back``).

        Returns:
            The location it was counted at ("<unknown>" when no frame of the stack is a cause).
        """
        while frame is not None and not self.is_cause(frame):
            frame = frame.f_back
        if frame is None:
            location, stack = "<unknown>", []
        else:
            location = self._describe(frame)
            stack, caller = [], frame
            while caller is not None and len(stack) < self.context_frames:
                stack.append(self._describe(caller))
                caller = caller.f_back
        self.counts[location] += 1
        self.stacks.setdefault(location, stack)
        return location

    @staticmethod
    def _describe(frame: FrameType) -> str:
        return f"{short_path(frame.f_code.co_filename)}:{frame.f_lineno} ({frame.f_code.co_name})"

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Within the block, warnings whose message contains :attr:`message` are counted (every one of them, not
        only the first per line) instead of shown; other warnings are shown as usual."""
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            shown = warnings.showwarning

            def count_or_show(message, category, filename, lineno, file=None, line=None) -> None:
                if self.message in str(message):
                    # called by the warnings machinery, inside the call that warned: its caller's frames are live
                    self.record(sys._getframe(1))
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = count_or_show
            yield

    def summary(self, steps: int, top: int = 40) -> dict:
        """The counts as a JSON-ready dict: total, per step and the ``top`` locations, most frequent first.

        Args:
            steps: Training steps the warnings were counted over.
            top: Locations listed.
        """
        return dict(
            message=self.message,
            steps=steps,
            syncs=self.total,
            syncs_per_step=self.total / steps if steps else 0.0,
            locations=[
                dict(location=where, count=count, per_step=count / steps if steps else 0.0, stack=self.stacks[where])
                for where, count in self.counts.most_common(top)
            ],
        )


class StepClock:
    """Training callback that stamps the wall time of every step (after a CUDA sync)."""

    def __init__(self) -> None:
        self.stamps: List[float] = []
        """``time.perf_counter()`` after each step."""

    def __call__(self, step: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())


class SyncDebugWindow:
    """Training callbacks that turn torch's sync debug mode to "warn" from step ``first`` on, with each warning counted
    in ``locations``, and off again after the last step (:meth:`close`).

    Args:
        first: First step counted.
        locations: Where the warnings are counted.
    """

    def __init__(self, first: int, locations: SyncLocations) -> None:
        self.first = first
        self.locations = locations
        self.steps = 0
        """Steps counted so far."""
        self._recording: Optional[contextlib.ExitStack] = None

    def before_step(self, step: int) -> None:
        """Opens the window at step ``first``."""
        if step == self.first and self._recording is None:
            self._recording = contextlib.ExitStack()
            self._recording.enter_context(self.locations.recording())
            torch.cuda.set_sync_debug_mode("warn")

    def after_step(self, step: int) -> None:
        """Counts a step inside the window."""
        if self._recording is not None:
            self.steps += 1

    def close(self) -> None:
        """Closes the window (sync debug mode off)."""
        if self._recording is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._recording.close()
            self._recording = None


def _in_range(name: str, function: Callable) -> Callable:
    """``function`` run inside a profiler range named ``name``."""

    def ranged(*args, **kwargs):
        with torch.profiler.record_function(name):
            return function(*args, **kwargs)

    return ranged


NODE_PREFIX = "autograd::engine::evaluate_function: "
"""What torch's profiler names the range of one autograd function run by the engine (the function's name follows)."""


def ops_by_phase(events: Iterable, phases: Iterable[str], steps: int) -> Dict[str, List[dict]]:
    """Where a profiled window's host operators come from.

    Each aten operator the host called (the outermost only: not one called inside another) is counted in the innermost
    range around it that is a phase (a name in ``phases``) or an autograd function run by the engine ("backward node:
    <name>"); one with neither around it is counted under "<outside any phase>". The engine runs a CUDA graph's
    backward functions in its own thread, so their operators are found under the function's range, not a phase.

    Args:
        events: The window's events (``torch.profiler.profile.events()``).
        phases: Names of the profiler ranges that are phases.
        steps: Steps in the window (the figures are per step).

    Returns:
        "phases": each range with operators or host time (phase or backward node, most operators first) as
        ``name``, ``aten_ops_per_step`` and ``host_ms_per_step`` (the range's host time, its callees included, for a
        phase or node; the operators' for "<outside any phase>"); "backward_nodes": each autograd function, its calls
        and host ms per step (most time first).
    """
    names = set(phases)
    ops: Counter = Counter()
    op_ms: Counter = Counter()
    range_ms: Counter = Counter()
    node_calls: Counter = Counter()

    def range_of(name: str) -> Optional[str]:
        """The row a range counts under: a phase's name, "backward node: <function>", or None (not a range)."""
        if name in names:
            return name
        return "backward node: " + name[len(NODE_PREFIX) :] if name.startswith(NODE_PREFIX) else None

    for event in events:
        name = event.name
        key = range_of(name)
        if key is not None:
            range_ms[key] += event.cpu_time_total / 1000
            if name.startswith(NODE_PREFIX):
                node_calls[key] += 1
            continue
        nested = event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")
        if not name.startswith("aten::") or nested:
            continue
        owner, parent = None, event.cpu_parent
        while parent is not None and owner is None:
            owner, parent = range_of(parent.name), parent.cpu_parent
        owner = owner or "<outside any phase>"
        ops[owner] += 1
        op_ms[owner] += event.cpu_time_total / 1000
    rows = [
        dict(name=key, aten_ops_per_step=ops[key] / steps, host_ms_per_step=range_ms.get(key, op_ms[key]) / steps)
        for key in set(ops) | set(range_ms)
    ]
    nodes = [
        dict(name=key, calls_per_step=node_calls[key] / steps, host_ms_per_step=range_ms[key] / steps)
        for key in node_calls
    ]
    return dict(
        phases=sorted(rows, key=lambda row: (-row["aten_ops_per_step"], row["name"])),
        backward_nodes=sorted(nodes, key=lambda row: (-row["host_ms_per_step"], row["name"])),
    )


class KernelWindow:
    """Training callbacks that run torch's profiler (CPU and CUDA activity) over steps ``first`` to
    ``first + steps - 1``, and time that window's wall clock (a CUDA sync at each end). While the profiler runs, each
    phase of a step (``step_trace.phase_targets``) runs inside a profiler range of its name.

    Args:
        first: First step profiled.
        steps: Steps profiled.
        phases: The trainer's phases as (owner, attribute, name) (None: no ranges).
    """

    def __init__(self, first: int, steps: int, phases: Optional[List[Tuple[object, str, str]]] = None) -> None:
        self.first = first
        self.last = first + steps - 1
        self.phases = list(phases or [])
        self.profiler: Optional[torch.profiler.profile] = None
        self.wall_s = 0.0
        """Wall seconds of the profiled steps (profiler overhead included)."""
        self.steps = 0
        """Steps profiled so far."""
        self._start = 0.0
        self._undo: List[Callable[[], None]] = []

    def before_step(self, step: int) -> None:
        """Starts the profiler at step ``first``."""
        if step == self.first and self.profiler is None:
            from benchmarks.step_trace import replace_attribute

            for owner, attribute, name in self.phases:
                self._undo.append(replace_attribute(owner, attribute, functools.partial(_in_range, name)))
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            self.profiler = torch.profiler.profile(activities=activities)
            torch.cuda.synchronize()
            self.profiler.start()
            self._start = time.perf_counter()

    def after_step(self, step: int) -> None:
        """Counts a profiled step; stops the profiler after step ``last``."""
        if self.profiler is None or self._start == 0.0:
            return
        self.steps += 1
        if step >= self.last:
            torch.cuda.synchronize()
            self.wall_s = time.perf_counter() - self._start
            self.profiler.stop()
            self._start = 0.0
            while self._undo:
                self._undo.pop()()

    def phase_summary(self) -> dict:
        """:func:`ops_by_phase` of the window."""
        assert self.profiler is not None and self.steps > 0, "no step was profiled"
        events = self.profiler.events()
        assert events is not None, "the profiler holds no events"
        return ops_by_phase(events, (name for _, _, name in self.phases), self.steps)

    def summary(self, top: int = 30) -> dict:
        """The window's wall and GPU-busy ms per step and its ``top`` kernels by their own GPU time."""
        assert self.profiler is not None and self.steps > 0, "no step was profiled"
        # the kernels and copies themselves: an operator's own device time repeats its kernels' (counted twice), and
        # the phases' ranges appear on the device too, spanning the kernels launched inside them
        phases = {name for _, _, name in self.phases}
        events = [e for e in self._busiest(DeviceType.CUDA, "self_device_time_total") if e.key not in phases]
        busy_us = sum(e.self_device_time_total for e in events)
        return dict(
            steps=self.steps,
            wall_ms_per_step=1000 * self.wall_s / self.steps,
            gpu_busy_ms_per_step=busy_us / 1000 / self.steps,
            kernels=self._per_step(events[:top], "self_device_time_total", "ms_per_step"),
        )

    def _busiest(self, device_type: DeviceType, own_time: str) -> list:
        """The window's events of one device type with some of their own time (``own_time``), most first."""
        assert self.profiler is not None
        return busiest_events(self.profiler, device_type, own_time)

    def _per_step(self, events: list, own_time: str, name: str) -> List[dict]:
        """Each event's name, calls per step and own time per step in ms (under ``name``)."""
        steps = self.steps
        return [
            {"name": e.key[:160], "calls_per_step": e.count / steps, name: getattr(e, own_time) / 1000 / steps}
            for e in events
        ]

    def table(self) -> str:
        """Torch's table of the window, by own GPU time."""
        assert self.profiler is not None
        return self.profiler.key_averages().table(sort_by="self_device_time_total", row_limit=60)

    def host_table(self) -> str:
        """Torch's table of the window, by own host (CPU) time: where a host-bound step goes."""
        assert self.profiler is not None
        return self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=80)

    def host_summary(self, top: int = 40) -> dict:
        """The host side of the window: aten operators launched per step, and the ``top`` operators and autograd
        functions by their own host time per step (an operator that waits for the GPU, e.g.
        ``aten::_local_scalar_dense`` behind ``.item()``, holds the wait)."""
        assert self.profiler is not None and self.steps > 0, "no step was profiled"
        events = self._busiest(DeviceType.CPU, "self_cpu_time_total")
        aten_calls = sum(e.count for e in events if e.key.startswith("aten::"))
        return dict(
            aten_ops_per_step=aten_calls / self.steps,
            host_self_ms_per_step=sum(e.self_cpu_time_total for e in events) / 1000 / self.steps,
            host_ops=self._per_step(events[:top], "self_cpu_time_total", "self_ms_per_step"),
        )


def preset_config(scene: Path, variant: str, iterations: int, output_dir: Path):
    """The registered ``semsplat`` preset (``ns-train semsplat``'s config) on ``scene``, stopped after ``iterations``
    steps of its schedule, with the variant's model and trainer settings; no checkpoints or evaluation renders inside
    the loop, tensorboard logging as the benchmarks train.

    Args:
        scene: The scene folder.
        variant: A key of :data:`VARIANTS`.
        iterations: Steps to run (the schedule stays the preset's).
        output_dir: Where the run's folder goes.
    """
    from semsplat_ns.config import semsplat_preset_config

    config = loop_only(semsplat_preset_config(), scene, output_dir, f"profile_{scene.name}_{variant}", iterations)
    for name, value in VARIANTS[variant].items():
        setattr(config.pipeline.model, name, value)
    for name, value in TRAINER_SETTINGS.get(variant, {}).items():
        setattr(config, name, value)
    config.set_timestamp()
    return config


def run_variant(
    scene: Path,
    variant: str,
    iterations: int,
    output_dir: Path,
    profile_to: Optional[Path] = None,
    sync_locations: Optional[SyncLocations] = None,
    kernel_window: Optional[KernelWindow] = None,
) -> dict:
    """Trains one variant for ``iterations`` steps and returns its row.

    Args:
        scene: The scene folder.
        variant: A key of :data:`VARIANTS`.
        iterations: Steps to run.
        output_dir: Where the run's folder goes.
        profile_to: Write a cProfile of the whole loop here (None: no profile).
        sync_locations: Count the host syncs of the second half of the steps here (CUDA; None: no count). The
            row's ms/step then includes the warnings' cost.
        kernel_window: Profile these steps with torch's profiler (CUDA; None: none).
    """
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    config = preset_config(scene, variant, iterations, output_dir)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    window: Optional[SyncDebugWindow | KernelWindow] = kernel_window
    if kernel_window is not None:
        from benchmarks.step_trace import phase_targets

        kernel_window.phases = phase_targets(trainer)
    if sync_locations is not None:
        window = SyncDebugWindow(iterations // 2, sync_locations)
    if window is not None:
        # first of the callbacks before a step, last after it: the window holds every other callback's work
        before = TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], window.before_step)
        after = TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], window.after_step)
        trainer.callbacks.insert(0, before)
        trainer.callbacks.append(after)
    else:
        clock = StepClock()
        trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], clock))
    profiler = cProfile.Profile() if profile_to is not None else None
    if profiler is not None:
        profiler.enable()
    try:
        trainer.train()
    finally:
        if isinstance(window, SyncDebugWindow):
            window.close()
    if profiler is not None and profile_to is not None:
        profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        profile_to.write_text(text.getvalue())
    row: Dict[str, object] = dict(
        variant=variant,
        iterations=iterations,
        n_gaussians=int(trainer.pipeline.model.num_points),
        profiled=bool(profiler),
    )
    if isinstance(window, SyncDebugWindow):
        row.update(sync_debug=True, sync_steps=window.steps)
    elif window is not None:
        row.update(kernel_profile=True, profiled_steps=window.steps)
    else:
        half = clock.stamps[len(clock.stamps) // 2 :]
        row["ms_per_step_second_half"] = 1000 * (half[-1] - half[0]) / max(1, len(half) - 1)
    return row


def labelled(name: str, label: Optional[str], suffix: str) -> str:
    """A result file's name with the run's label: ``name_label.suffix`` (``name.suffix`` without one)."""
    return f"{name}_{label}.{suffix}" if label else f"{name}.{suffix}"


def main() -> None:
    from semsplat_ns.schedule import PRESET_STEPS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=1500, help=f"steps of the {PRESET_STEPS}-step preset")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    parser.add_argument("--out", type=Path, default=Path("profile-out"))
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/profile-runs"))
    parser.add_argument("--label", default=None, help="names this run's files (e.g. before / after) and its rows")
    parser.add_argument(
        "--sync-debug", action="store_true", help="also count the first variant's host syncs per step (CUDA only)"
    )
    parser.add_argument(
        "--kernels",
        type=int,
        default=0,
        metavar="N",
        help="also profile N steps of the first variant's second half with torch's profiler (CUDA only)",
    )
    args = parser.parse_args()
    if args.kernels and not torch.cuda.is_available():
        parser.error("--kernels needs CUDA (it reads the GPU's kernel times)")
    if args.sync_debug and not torch.cuda.is_available():
        parser.error("--sync-debug needs CUDA (torch's sync debug mode watches CUDA streams)")
    args.out.mkdir(parents=True, exist_ok=True)
    label = args.label
    rows = []
    variants = args.variant or list(VARIANTS)
    for index, variant in enumerate(variants):
        for profiled in [True, False] if index == 0 else [False]:
            target = args.out / labelled(f"profile_{variant}", label, "txt") if profiled else None
            row = run_variant(args.scene, variant, args.iterations, args.output_dir, target)
            print(row, flush=True)
            rows.append({**row, "label": label})
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    common = dict(device=device, label=label, scene=args.scene.name, preset_steps=PRESET_STEPS)
    write_json_atomic(args.out / labelled("step_times", label, "json"), dict(**common, rows=rows), indent=1)
    if args.kernels:
        kernels = KernelWindow(args.iterations // 2, min(args.kernels, args.iterations - args.iterations // 2))
        row = run_variant(args.scene, variants[0], args.iterations, args.output_dir, kernel_window=kernels)
        print(row, flush=True)
        summary = kernels.summary()
        phases = kernels.phase_summary()
        write_json_atomic(
            args.out / labelled("kernels", label, "json"),
            dict(**common, variant=variants[0], **summary, **kernels.host_summary(), **phases),
            indent=1,
        )
        for entry in phases["phases"][:25]:
            print(f"  {entry['aten_ops_per_step']:6.1f} ops {entry['host_ms_per_step']:6.2f} ms  {entry['name']}")
        (args.out / labelled("kernels", label, "txt")).write_text(kernels.table())
        (args.out / labelled("host_ops", label, "txt")).write_text(kernels.host_table())
        print(
            f"{summary['wall_ms_per_step']:.2f} ms wall, {summary['gpu_busy_ms_per_step']:.2f} ms GPU busy per step",
            flush=True,
        )
    if args.sync_debug:
        locations = SyncLocations()
        row = run_variant(args.scene, variants[0], args.iterations, args.output_dir, sync_locations=locations)
        print(row, flush=True)
        summary = locations.summary(row["sync_steps"])
        write_json_atomic(
            args.out / labelled("syncs", label, "json"), dict(**common, variant=variants[0], **summary), indent=1
        )
        print(f"{summary['syncs_per_step']:.2f} host syncs per step; most frequent:", flush=True)
        for entry in summary["locations"][:15]:
            print(f"  {entry['per_step']:7.2f}/step  {entry['location']}", flush=True)


if __name__ == "__main__":
    main()
