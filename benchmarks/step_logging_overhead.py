"""Host time of nerfstudio's per-step event writing into tensorboard: every step (nerfstudio) against the per-step
series kept at the logging steps (semsplat, ``SemSplatTrainerConfig.per_step_series_every_step`` off,
semsplat_ns/event_writers.py).

Each timed step makes the calls nerfstudio's training loop makes on a step that is not a logging step: the step
time with the ETA (``TimeWriter``), the rays per second, one learning rate per scheduled optimiser group (the
preset schedules three), then ``write_out_storage``. The writers are nerfstudio's ``TensorboardWriter`` in a
temporary folder, bare or wrapped in :class:`~semsplat_ns.event_writers.LoggedStepsWriter`. The JSON gives each
mode's mean µs per step, the median over alternating rounds.

    python benchmarks/step_logging_overhead.py --out benchmarks/results/profile/step_logging.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semsplat_ns.atomic import write_json_atomic  # noqa: E402
from semsplat_ns.event_writers import LoggedStepsWriter  # noqa: E402 (imports nerfstudio's writer in order)

MODES = ("every step", "logging steps")
SCHEDULED_GROUPS = ("means", "transfer_head", "camera_opt")
"""The preset's optimiser groups with a learning-rate scheduler (benchmarks/methods.py, SCHEDULER_KEYS)."""


def time_steps(first_step: int, steps: int, steps_per_log: int) -> float:
    """Mean host µs of ``steps`` non-logging training steps' event writing, from ``first_step`` on (the mean, not
    the median: tensorboard's writer thread takes the interpreter now and then, and that time counts)."""
    from nerfstudio.utils import writer

    seconds: List[float] = []
    step = first_step
    while len(seconds) < steps:
        step += 1
        if step % steps_per_log == 0:
            continue  # a logging step writes the losses too; the loop's other steps are what this times
        start = time.perf_counter()
        writer.put_time(name=writer.EventName.ITER_TRAIN_TIME, duration=0.0135, step=step, update_eta=True)
        writer.put_time(name=writer.EventName.TRAIN_RAYS_PER_SEC, duration=19_000_000.0, step=step)
        for group in SCHEDULED_GROUPS:
            writer.put_scalar(name=f"learning_rate/{group}", scalar=1e-3 / step, step=step)
        writer.write_out_storage()
        seconds.append(time.perf_counter() - start)
    return statistics.mean(seconds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps timed per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of both modes")
    parser.add_argument("--steps-per-log", type=int, default=100, help="the presets' logging.steps_per_log")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    parser.add_argument("--commit", default="", help="stamped into the JSON")
    args = parser.parse_args()
    from nerfstudio.utils import writer

    log_dir = Path(tempfile.mkdtemp(prefix="step_logging_"))  # kept: the writers' threads may still write there
    tensorboard = writer.TensorboardWriter(log_dir=log_dir)
    writers = {"every step": tensorboard, "logging steps": LoggedStepsWriter(tensorboard, args.steps_per_log)}
    saved = list(writer.EVENT_WRITERS)
    writer.GLOBAL_BUFFER.update(max_iter=10**9, max_buffer_size=20, steps_per_log=args.steps_per_log, events={})
    rounds: Dict[str, List[float]] = {mode: [] for mode in MODES}
    step = 0
    try:
        for _ in range(args.rounds):
            for mode in MODES:
                writer.EVENT_WRITERS[:] = [writers[mode]]
                rounds[mode].append(time_steps(step, args.steps, args.steps_per_log))
                step += 2 * args.steps
    finally:
        writer.EVENT_WRITERS[:] = saved
        tensorboard.tb_writer.close()
    medians = {mode: statistics.median(values) for mode, values in rounds.items()}
    result = {
        "device": "cpu (host)",
        "steps_per_log": args.steps_per_log,
        "us_per_step": medians,
        "rounds_us": rounds,
        "date": date.today().isoformat(),
        "commit": args.commit,
        "command": " ".join(sys.argv),
    }
    print({key: result[key] for key in ("steps_per_log", "us_per_step")})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
