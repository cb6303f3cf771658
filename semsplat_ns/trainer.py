"""semsplat's trainer: nerfstudio's, plus a check of the scene before the config dump and the time of each stage.

``ns-train`` prints ~300 lines of config before it reads the scene; a scene that cannot work then ends in an
error under that dump. :class:`SemSplatTrainerConfig` checks the scene's files first (the cheap checks: folders,
file pairing, cameras, labels, classes), so a bad scene gives its one line before anything else.

:class:`SemSplatTrainer` times the stages a user waits for and prints them after training, and writes them to
``<run>/stage_times.json`` (benchmarks read ``end_to_end_s`` from it):

* ``seed_points_s``: triangulating (or reading the cached) seed points, as the dataparser reports it;
* ``pseudo_labels_s``: the automatic pseudo labels (the prior), as the datamanager reports it, and
  ``pseudo_label_stages_s`` the stages of their pipeline when it ran (depth, reprojection, the prior's training, ...);
* ``setup_s``: all of the trainer's setup (data loading, the two stages above, model, optimisers, viewer);
* ``train_s``: the training loop, evaluation renders and checkpoint writes left out; ``first_step_s`` its first step
  (the CUDA graph captures and the kernels' warm-up happen there);
* ``eval_s`` / ``first_eval_s``: the evaluation renders inside the loop (all of them / the first);
* ``checkpoint_s``: writing checkpoints;
* ``end_to_end_s``: from the start of the setup to the end of the last step.

Three savings of host time per training step (issue #13), each with a flag that gives nerfstudio's behaviour back:
the Adam steps of all parameter groups taken together (``optimizers_step_together``, semsplat_ns/optimizers.py),
nerfstudio's per-step series written at the logging steps only (``per_step_series_every_step``,
semsplat_ns/event_writers.py), and the model's training metrics computed on those steps only
(``train_metrics_every_step``, ``SemSplatModel.get_metrics_dict``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.misc import step_check
from rich.table import Table

from semsplat_ns.atomic import write_bytes_atomic
from semsplat_ns.console import CONSOLE
from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig, capture_layout
from semsplat_ns.data.irt_dataparser import (
    PSEUDO_LABEL_STAGE_PREFIX,
    STAGE_SECONDS_KEY,
    IRTDataParser,
    IRTDataParserConfig,
)
from semsplat_ns.event_writers import write_per_step_series_at_logging_steps
from semsplat_ns.model.semsplat_model import SemSplatModel
from semsplat_ns.optimizers import SteppedTogetherOptimizers

STAGE_TIMES_NAME = "stage_times.json"
"""File name of the stage times, in the run's folder (beside config.yml)."""

PSEUDO_LABEL_STAGE_NAMES = {
    "read_scene": "reading the scene",
    "points": "points for depth (triangulated, or read from the seed points' cache)",
    "depth": "depth of the views",
    "read_photos": "reading the photos",
    "reproject": "reprojecting the labelled views",
    "prior_train": "training the prior",
    "prior_wait": "of which waiting for its reprojected labels (made beside its first steps)",
    "prior_predict": "predicting with the prior",
    "write": "writing the pseudo labels",
}
"""The pseudo-label pipeline's stages (``meta.json``'s ``times_s``) as the stage table names them, in their order."""


@dataclass
class StageTimes:
    """Wall seconds of the stages of one ``ns-train`` run (None: the stage did not run or did not report)."""

    setup_s: float = 0.0
    """The trainer's setup: data, seed points, pseudo labels, model, optimisers, viewer."""
    seed_points_s: Optional[float] = None
    """Seed points: triangulated from the known poses, or read from their cache or the capture's sparse model."""
    pseudo_labels_s: Optional[float] = None
    """Automatic pseudo labels (made, checked or reused)."""
    pseudo_label_stages_s: Dict[str, float] = field(default_factory=dict)
    """The pseudo-label pipeline's stages when it ran (stage name -> s, :data:`PSEUDO_LABEL_STAGE_NAMES`); empty when
    the pseudo labels were reused or none were made."""
    train_s: float = 0.0
    """The training loop, less evaluation renders and checkpoint writes."""
    first_step_s: Optional[float] = None
    """The loop's first step, part of ``train_s``: the loss graphs' captures and the kernels' first launches."""
    eval_s: float = 0.0
    """Evaluation renders inside the training loop."""
    first_eval_s: Optional[float] = None
    """The first evaluation inside the loop (its first call also builds what evaluation needs)."""
    checkpoint_s: float = 0.0
    """Writing checkpoints."""
    end_to_end_s: float = 0.0
    """From the start of the setup to the end of the last step."""
    steps: int = 0
    """Training steps run."""

    @property
    def steps_per_s(self) -> float:
        """Training steps per second of ``train_s``."""
        return self.steps / self.train_s if self.train_s > 0 else 0.0


def data_stage_seconds(metadata: Dict) -> Dict[str, float]:
    """The seconds the data stages reported in dataparser metadata (see :data:`STAGE_SECONDS_KEY`).

    Args:
        metadata: A ``DataparserOutputs.metadata`` dict.

    Returns:
        Stage name -> seconds (empty when none reported).
    """
    seconds = metadata.get(STAGE_SECONDS_KEY) or {}
    return {str(name): float(value) for name, value in seconds.items()}


def stage_rows(times: StageTimes) -> List[Tuple[str, float]]:
    """The stage table's rows (name, seconds), the stages that ran only; sub-stages are indented under theirs.

    Args:
        times: A run's stage times.
    """
    stages = times.pseudo_label_stages_s
    # the pipeline's order first, then any stage the table does not know, under its own name
    pseudo_stages = [(name, stages[name]) for name in PSEUDO_LABEL_STAGE_NAMES if name in stages]
    pseudo_stages += [(name, seconds) for name, seconds in stages.items() if name not in PSEUDO_LABEL_STAGE_NAMES]
    rows: List[Tuple[str, Optional[float]]] = [
        ("seed points", times.seed_points_s),
        ("pseudo labels", times.pseudo_labels_s),
        *((f"  {PSEUDO_LABEL_STAGE_NAMES.get(name, name)}", seconds) for name, seconds in pseudo_stages),
        ("setup (data, points, pseudo labels, model)", times.setup_s),
        (f"training ({times.steps} steps, {times.steps_per_s:.1f} steps/s)", times.train_s),
        ("  first step (graph captures, warm-up)", times.first_step_s),
        ("evaluation renders in the loop", times.eval_s),
        ("checkpoints", times.checkpoint_s),
        ("end to end", times.end_to_end_s),
    ]
    return [(name, seconds) for name, seconds in rows if seconds is not None]


def check_scene(config: TrainerConfig) -> None:
    """Runs the cheap checks of the scene that ``--data`` names, so that a bad scene fails before the config dump.

    Only semsplat's dataparsers are checked (another dataparser keeps its own behaviour); an IRT scene gets its
    split checks (folders, file pairing, cameras, labels, classes; no image decoding, no triangulation), a
    capture the detection of its layout. Raises the dataparser's one-line error (a ``UserInputError``).

    Args:
        config: The run's config, ``--data`` already applied.
    """
    parser_config = getattr(config.pipeline.datamanager, "dataparser", None)
    data = getattr(config.pipeline.datamanager, "data", None) or getattr(parser_config, "data", None)
    if not isinstance(parser_config, IRTDataParserConfig) or data is None:
        return
    if isinstance(parser_config, SemSplatDataParserConfig):
        layout = parser_config.layout if parser_config.layout != "auto" else capture_layout(data)
        if layout != "irt":
            return  # captures are checked by nerfstudio's own parser, which runs first in the setup
    parser = dataclasses.replace(parser_config, data=Path(data)).setup()
    assert isinstance(parser, IRTDataParser)
    parser.check_splits()


@dataclass
class SemSplatTrainerConfig(TrainerConfig):
    """nerfstudio's trainer config; its trainer checks the scene first and reports the time of each stage."""

    _target: Type = field(default_factory=lambda: SemSplatTrainer)
    optimizers_step_together: bool = True
    """Take the fused Adam steps of all parameter groups in one pass (bit for bit nerfstudio's update, less host
    time per training step; semsplat_ns/optimizers.py). False: one ``Optimizer.step`` per group, as nerfstudio."""
    per_step_series_every_step: bool = False
    """Write nerfstudio's per-step series (step time, ETA, rays per second, learning rates) to tensorboard / wandb /
    comet on every step, as nerfstudio does. Off: only at the logging steps (``logging.steps_per_log``), like the
    losses, which saves ~1 ms of host time per step with tensorboard (semsplat_ns/event_writers.py)."""
    train_metrics_every_step: bool = False
    """Compute the model's training metrics (PSNR, Gaussian count, camera-optimiser norms) on every step, as nerfstudio
    does. Off: only on the logging steps, the only ones where nerfstudio reads them (the values logged are the same)."""

    def print_to_terminal(self) -> None:
        """Checks the scene (one line and exit 2 when it cannot work), then prints the config as nerfstudio does."""
        check_scene(self)
        super().print_to_terminal()


class SemSplatTrainer(Trainer):
    """nerfstudio's trainer, timing its stages (:class:`StageTimes`): printed after training and written to
    ``<run>/stage_times.json``."""

    config: TrainerConfig

    def __init__(self, config: TrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank=local_rank, world_size=world_size)
        self.stage_times = StageTimes()
        self._setup_started: Optional[float] = None
        self._loop_started: Optional[float] = None

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """nerfstudio's setup, timed; the data stages' own seconds come from the dataparser outputs."""
        self._setup_started = time.perf_counter()
        super().setup(test_mode)
        if not getattr(self.config, "per_step_series_every_step", True):
            write_per_step_series_at_logging_steps(self.config.logging.steps_per_log)
        model = self.pipeline.model
        if not getattr(self.config, "train_metrics_every_step", True) and isinstance(model, SemSplatModel):
            model.train_metrics_every = self.config.logging.steps_per_log
        self.stage_times.setup_s = time.perf_counter() - self._setup_started
        outputs = getattr(self.pipeline.datamanager, "train_dataparser_outputs", None)
        seconds = data_stage_seconds(outputs.metadata) if outputs is not None else {}
        self.stage_times.seed_points_s = seconds.get("seed_points")
        self.stage_times.pseudo_labels_s = seconds.get("pseudo_labels")
        self.stage_times.pseudo_label_stages_s = {
            name[len(PSEUDO_LABEL_STAGE_PREFIX) :]: value
            for name, value in seconds.items()
            if name.startswith(PSEUDO_LABEL_STAGE_PREFIX)
        }

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimisers; with ``optimizers_step_together`` their Adam steps are taken together
        (:class:`~semsplat_ns.optimizers.SteppedTogetherOptimizers`)."""
        optimizers = super().setup_optimizers()
        if getattr(self.config, "optimizers_step_together", False):
            return SteppedTogetherOptimizers.of(optimizers)
        return optimizers

    def train(self) -> None:
        """nerfstudio's training loop; the stage times are completed when it ends (:meth:`_after_train`)."""
        self._loop_started = time.perf_counter()
        super().train()

    def train_iteration(self, step: int):
        """nerfstudio's training step; the loop's first one is timed (one wait for the device, after it)."""
        if self.stage_times.first_step_s is not None:
            return super().train_iteration(step)
        started = time.perf_counter()
        result = super().train_iteration(step)
        self._synchronize()
        self.stage_times.first_step_s = time.perf_counter() - started
        return result

    def eval_iteration(self, step: int) -> None:
        """nerfstudio's evaluation of this step, timed when it renders anything."""
        config = self.config
        evaluates = any(
            step_check(step, every)
            for every in (config.steps_per_eval_batch, config.steps_per_eval_image, config.steps_per_eval_all_images)
        )
        if not evaluates:
            return super().eval_iteration(step)
        started = time.perf_counter()
        super().eval_iteration(step)
        self._synchronize()
        seconds = time.perf_counter() - started
        self.stage_times.eval_s += seconds
        if self.stage_times.first_eval_s is None:
            self.stage_times.first_eval_s = seconds

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint write, timed."""
        started = time.perf_counter()
        super().save_checkpoint(step)
        self.stage_times.checkpoint_s += time.perf_counter() - started

    def _after_train(self) -> None:
        """Completes, prints and writes the stage times (before the final checkpoint, which is timed apart), then
        runs nerfstudio's end of training."""
        if self._loop_started is not None and self._setup_started is not None:
            self._synchronize()
            now = time.perf_counter()
            times = self.stage_times
            times.steps = max(0, self.step + 1 - self._start_step)
            loop_s = now - self._loop_started
            times.train_s = max(0.0, loop_s - times.eval_s - times.checkpoint_s)
            times.end_to_end_s = now - self._setup_started
            if self.local_rank == 0:
                self._report_stage_times()
        super()._after_train()

    def _synchronize(self) -> None:
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()

    def _report_stage_times(self) -> None:
        times = self.stage_times
        table = Table(title="Stage times", show_header=False)
        for name, seconds in stage_rows(times):
            table.add_row(name, f"{seconds:.1f} s")
        CONSOLE.print(table)
        path = self.base_dir / STAGE_TIMES_NAME
        record = {**asdict(times), "steps_per_s": times.steps_per_s}
        write_bytes_atomic(path, (json.dumps(record, indent=2) + "\n").encode())


def read_stage_times(run_dir: Path) -> StageTimes:
    """The stage times a run wrote (``<run>/stage_times.json``).

    Args:
        run_dir: The run's folder (holding config.yml).
    """
    record = json.loads((Path(run_dir) / STAGE_TIMES_NAME).read_text())
    record.pop("steps_per_s", None)
    return StageTimes(**record)
