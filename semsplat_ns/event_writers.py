"""nerfstudio's event writers (tensorboard, wandb, comet) with the per-step series kept at the logging steps.

nerfstudio's training loop writes its event storage out after every step, and every step stores the step's time,
the ETA, the rays per second and each scheduler's learning rate: five to six scalars a step, whatever
``logging.steps_per_log`` says (that interval governs the losses and metrics only). Into tensorboard each scalar
is a record whose checksum tensorboard computes in pure Python and a file append: ~1.1 ms of the main thread per
step on the 2-core CPU box (``benchmarks/step_logging_overhead.py``), in a loop whose step the host, not the GPU,
sets (issue #13). ``semsplat-batch`` trains with ``--vis tensorboard``.

:class:`LoggedStepsWriter` passes another writer's events on, except those per-step series on steps that are not
logging steps: their curves keep one point per ``steps_per_log`` steps, like the losses beside them. Everything else
(losses, metrics, images, evaluation results, the config) is written as nerfstudio writes it.
"""

from __future__ import annotations

from typing import Any, Dict, Union

import nerfstudio.configs.base_config  # noqa: F401  (first: nerfstudio's writer module imports it back)
import torch
from nerfstudio.utils import writer as nerfstudio_writer
from nerfstudio.utils.writer import EventName, LocalWriter, Writer
from torch import Tensor

PER_STEP_SERIES = frozenset(
    event.value for event in (EventName.ITER_TRAIN_TIME, EventName.ETA, EventName.TRAIN_RAYS_PER_SEC)
)
"""Scalars nerfstudio's training loop stores on every step (besides the learning rates)."""

LEARNING_RATE_PREFIX = "learning_rate/"
"""Prefix of the learning rates nerfstudio's optimisers store on every step (``Optimizers.scheduler_step_all``)."""


def is_per_step_series(name: str) -> bool:
    """Whether nerfstudio stores the scalar ``name`` on every training step."""
    return name in PER_STEP_SERIES or name.startswith(LEARNING_RATE_PREFIX)


class LoggedStepsWriter(Writer):
    """Another event writer, with nerfstudio's per-step series (:func:`is_per_step_series`) written only at the
    logging steps (``step % steps_per_log == 0``, where nerfstudio writes the losses)."""

    def __init__(self, writer: Writer, steps_per_log: int) -> None:
        """
        Args:
            writer: The writer that writes (e.g. nerfstudio's ``TensorboardWriter``).
            steps_per_log: ``logging.steps_per_log`` of the run (at least 1).
        """
        assert steps_per_log >= 1, f"steps_per_log must be at least 1, got {steps_per_log}"
        self.writer = writer
        self.steps_per_log = steps_per_log

    def write_image(self, name: str, image: Tensor, step: int) -> None:
        self.writer.write_image(name, image, step)  # image [H, W, C]

    def write_scalar(self, name: str, scalar: Union[float, torch.Tensor], step: int) -> None:
        if step % self.steps_per_log == 0 or not is_per_step_series(name):
            self.writer.write_scalar(name, scalar, step)

    def write_config(self, name: str, config_dict: Dict[str, Any], step: int) -> None:
        write_config = getattr(self.writer, "write_config", None)
        if write_config is not None:
            write_config(name, config_dict, step)


def write_per_step_series_at_logging_steps(steps_per_log: int) -> int:
    """Wraps every event writer nerfstudio has set up (not its terminal ``LocalWriter``) in a
    :class:`LoggedStepsWriter`; writers wrapped already stay as they are.

    nerfstudio keeps its writers in a module-level list (``nerfstudio.utils.writer.EVENT_WRITERS``) that its
    ``write_out_storage`` reads; this replaces the entries in place.

    Args:
        steps_per_log: ``logging.steps_per_log`` of the run.

    Returns:
        How many writers were wrapped now.
    """
    wrapped = 0
    writers = nerfstudio_writer.EVENT_WRITERS
    for index, event_writer in enumerate(writers):
        if isinstance(event_writer, (LocalWriter, LoggedStepsWriter)):
            continue
        writers[index] = LoggedStepsWriter(event_writer, max(1, steps_per_log))
        wrapped += 1
    return wrapped
