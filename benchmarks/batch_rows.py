"""Benchmark rows from the records of a ``semsplat-batch`` run (its ``summary.json`` and each scene's ``result.json``).

Per scene, one row in the format of :mod:`benchmarks.common` (:func:`~benchmarks.common.scored_row`) for the
benchmark method the batch trained (:func:`benchmarks.methods.method_of`), with

- ``train_s``: nerfstudio's own clock of the training loop (``Train Total (time)`` in the run's tensorboard
  events, the span ``bench_semsplat.py`` timed), and ``peak_gpu_mem_gb``: the largest ``GPU Memory (MB)``
  nerfstudio logged (``torch.cuda.max_memory_allocated``; None on the CPU);
- ``stage_s``: the wall time of each stage's command (pseudo labels, training, evaluation, prediction);
- ``end_to_end_s`` (issue #13): what a user waits for before the model is trained, the pseudo-label command's
  wall time plus ns-train's (seed points, the run's setup, training, its checkpoint), and ``stage_times``: the
  run's own ``stage_times.json`` (:mod:`semsplat_ns.trainer`; None for runs older than it);
- ``jobs_sharing_gpu``: the trainings that ran on the scene's device while it trained (itself included), and
  ``test_ms_shared_gpu``: whether another scene's stage ran on that device during its evaluation; both from the
  stages' start times and durations in the records (None for records without them). Batches that ran at the same
  time on the same GPUs (``--concurrent``) count too.

With ``--reference``, one more row for the batch as a whole (method ``semsplat-batch``, issue #15): ``n_scenes``,
``n_gpus`` (the distinct GPUs the scenes trained on), ``wall_s`` (the batch's wall time), ``reference_wall_s``
(the wall time of a batch of one of its scenes alone on one GPU, with the same settings) and
``speedup_ratio = wall_s / reference_wall_s`` (1.0: all scenes in the time of one; the issue's target is ≤ 1.3
for 4 scenes on 4 GPUs). Only complete runs count: a batch with a failed, unfinished or earlier-recorded scene
(a resumed run, whose wall time is not the batch's) is refused with one error naming its summary.json.

    python -m benchmarks.batch_rows --batch runs/prior --out benchmarks/results/semsplat_prior.json
    python -m benchmarks.batch_rows --batch runs/four --reference runs/alone --out benchmarks/results/batch.json
    python -m benchmarks.batch_rows --batch runs/a --concurrent runs/b runs/c --out benchmarks/results/rows.json
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import append_rows, result_row, scored_row  # noqa: E402
from benchmarks.methods import UnknownMethodError, method_of  # noqa: E402

BATCH_METHOD = "semsplat-batch"
"""The method of the batch-as-a-whole row."""
TRAIN_TIME_TAG = "Train Total (time)"
"""nerfstudio's tensorboard scalar of the training loop's wall time (written once, at the end)."""
GPU_MEMORY_TAG = "GPU Memory (MB)"
"""nerfstudio's tensorboard scalar of torch.cuda.max_memory_allocated(), in MiB, every logging step."""
SETTING_KEYS = ("preset", "pseudo_backend", "max_num_iterations", "device", "method_args")
"""The settings a reference run must share with the batch it is compared with."""

_MAX_ITERATIONS = re.compile(r"^max_num_iterations:\s*(\d+)\s*$", re.MULTILINE)


class BatchRecordError(ValueError):
    """A batch's records that cannot give benchmark rows; the message names the file."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BatchRecordError(
            f"{path}: not found (not a semsplat-batch output folder, or the run never ended)"
        ) from None
    except (OSError, ValueError) as error:
        raise BatchRecordError(f"{path}: not readable JSON ({error})") from None


def read_batch(batch_dir: Path) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The summary and the scenes' result records of a complete batch run.

    Raises:
        BatchRecordError: A missing or unreadable file, or a run that did not complete every scene in this run.
    """
    from semsplat_ns.batch.records import read_result
    from semsplat_ns.batch.summary import SUMMARY_JSON

    path = Path(batch_dir) / SUMMARY_JSON
    summary = _read_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("rows"), list):
        raise BatchRecordError(f"{path}: not a semsplat-batch summary (no 'rows')")
    problems = []
    if summary.get("failures"):
        problems.append("failed: " + ", ".join(str(f.get("scene")) for f in summary["failures"]))
    if summary.get("still_running"):
        problems.append("unfinished: " + ", ".join(map(str, summary["still_running"])))
    earlier = [row["scene"] for row in summary["rows"] if row.get("recorded_earlier")]
    if earlier:
        problems.append("recorded by an earlier run (this run's wall time is not theirs): " + ", ".join(earlier))
    if not summary["rows"]:
        problems.append("no scene completed")
    if problems:
        raise BatchRecordError(f"{path}: not a complete run of its scenes; " + "; ".join(problems))
    results = []
    for row in summary["rows"]:
        folder = Path(row.get("output_dir") or Path(batch_dir) / row["scene"])
        result = read_result(folder)
        if result is None:
            raise BatchRecordError(f"{folder / 'result.json'}: no complete result, yet {path} lists the scene")
        results.append(result)
    return summary, results


def tensorboard_scalars(run_dir: Path, tags: Sequence[str]) -> Dict[str, List[float]]:
    """Every value of each tag in the tensorboard event files of a training run's folder (empty lists if none)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    found: Dict[str, List[float]] = {tag: [] for tag in tags}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            proto: Any = event  # a protobuf Event, whose stubs name no fields
            for value in proto.summary.value:
                if value.tag in found:
                    if value.HasField("simple_value"):
                        found[value.tag].append(float(value.simple_value))
                    elif value.HasField("tensor") and value.tensor.float_val:
                        found[value.tag].append(float(value.tensor.float_val[0]))
    return found


def training_figures(result: Dict[str, Any]) -> Dict[str, Any]:
    """``train_s``, ``peak_gpu_mem_gb`` and ``steps`` of a scene's training, from the run's own files."""
    config = Path(result["config"])
    scalars = tensorboard_scalars(config.parent, (TRAIN_TIME_TAG, GPU_MEMORY_TAG))
    train_s = scalars[TRAIN_TIME_TAG][-1] if scalars[TRAIN_TIME_TAG] else None
    memory = max(scalars[GPU_MEMORY_TAG], default=0.0)
    steps = result.get("settings", {}).get("max_num_iterations")
    if steps is None and config.is_file():
        match = _MAX_ITERATIONS.search(config.read_text(errors="replace"))
        steps = int(match.group(1)) if match else None
    return {
        "train_s": train_s,
        # MiB as nerfstudio logs them -> GB (1e9 bytes), the unit of bench_semsplat.py's rows; 0 means no GPU.
        "peak_gpu_mem_gb": memory * 1024**2 / 1e9 if memory > 0 else None,
        "steps": steps,
    }


def _device_key(result: Dict[str, Any]) -> Tuple[str, str]:
    """(host, device) a scene ran on: its GPU (CUDA_VISIBLE_DEVICES of the worker) or the host's CPU."""
    gpu = result.get("gpu") or {}
    return str(result.get("host")), str(gpu.get("index") or "cpu")


def _interval(result: Dict[str, Any], stage: str) -> Optional[Tuple[float, float]]:
    record = result.get("stages", {}).get(stage) or {}
    if record.get("status") != "ok" or record.get("started") is None:
        return None
    return float(record["started"]), float(record["started"]) + float(record["seconds"])


def _overlaps(a: Tuple[float, float], b: Tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def jobs_sharing_device(result: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> Optional[int]:
    """Trainings on the scene's device during its training, itself included; None without stage start times."""
    own = _interval(result, "train")
    if own is None:
        return None
    others = [r for r in results if r is not result and _device_key(r) == _device_key(result)]
    return 1 + sum(1 for r in others if (span := _interval(r, "train")) is not None and _overlaps(own, span))


def evaluated_while_shared(result: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> Optional[bool]:
    """Whether another scene's stage ran on the scene's device during its evaluation; None without start times."""
    own = _interval(result, "eval")
    if own is None:
        return None
    from semsplat_ns.batch.scene_job import STAGES

    others = [r for r in results if r is not result and _device_key(r) == _device_key(result)]
    return any((span := _interval(r, s)) is not None and _overlaps(own, span) for r in others for s in STAGES)


def _metrics(result: Dict[str, Any]) -> Dict[str, Any]:
    """semsplat-eval's full metrics.json (written before result.json, so complete), else the record's copy."""
    path = result.get("metrics_file")
    if path and Path(path).is_file():
        metrics = _read_json(Path(path))
        if isinstance(metrics, dict):
            return metrics
    return dict(result["metrics"])


def _device_name(result: Dict[str, Any], metrics: Dict[str, Any]) -> str:
    gpu = result.get("gpu") or {}
    if gpu.get("name"):
        return str(gpu["name"])
    if gpu:
        return f"cuda (GPU {gpu.get('index')}, name unknown)"
    return "cpu" if str(metrics.get("device", "cpu")).startswith("cpu") else str(metrics.get("device"))


def concurrent_results(batch_dirs: Sequence[Path]) -> List[Dict[str, Any]]:
    """The scene records of other batches that ran beside this one (complete or not: their stages' times count).

    Args:
        batch_dirs: Their ``--output-dir`` folders.
    """
    from semsplat_ns.batch.records import read_result

    found = []
    for batch_dir in batch_dirs:
        for folder in sorted(p.parent for p in Path(batch_dir).glob("*/result.json")):
            result = read_result(folder)
            if result is not None:
                found.append(result)
    return found


def end_to_end_seconds(stage_s: Dict[str, Optional[float]]) -> Optional[float]:
    """Pseudo labels (0 when the batch made none) plus ns-train's wall time; None when training did not complete."""
    train = stage_s.get("train")
    if train is None:
        return None
    return float(stage_s.get("pseudo_labels") or 0.0) + float(train)


def _stage_times(result: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The run's ``stage_times.json`` beside its config.yml, or None."""
    from semsplat_ns.trainer import STAGE_TIMES_NAME

    path = Path(result["config"]).parent / STAGE_TIMES_NAME
    if not path.is_file():
        return None
    times = _read_json(path)
    return times if isinstance(times, dict) else None


def scene_rows(batch_dir: Path, method: Optional[str] = None, concurrent: Sequence[Path] = ()) -> List[Dict[str, Any]]:
    """One benchmark row per scene of a complete batch run (see the module docstring).

    Args:
        batch_dir: The batch's ``--output-dir``.
        method: The rows' method; None: the benchmark method whose settings the batch recorded.
        concurrent: ``--output-dir`` of batches that ran at the same time on the same machine.

    Raises:
        BatchRecordError: Incomplete run, unreadable records, or settings of no benchmark method.
    """
    from semsplat_ns.batch.summary import SUMMARY_JSON

    summary, results = read_batch(batch_dir)
    if method is None:
        try:
            method = method_of(summary.get("settings") or {})
        except UnknownMethodError as error:
            raise BatchRecordError(f"{Path(batch_dir) / SUMMARY_JSON}: {error}; name it with --method") from None
    command = summary.get("settings", {}).get("command")
    neighbours = [*results, *concurrent_results(concurrent)]
    rows = []
    for result in results:
        metrics = _metrics(result)
        stages = result.get("stages", {})
        train_command = stages.get("train", {}).get("command") or []
        row = scored_row(
            result["scene"],
            method,
            metrics,
            n_gaussians=metrics.get("n_gaussians"),
            command=command or shlex.join(train_command),
            device=_device_name(result, metrics),
            **training_figures(result),
        )
        row["jobs_sharing_gpu"] = jobs_sharing_device(result, neighbours)
        row["test_ms_shared_gpu"] = evaluated_while_shared(result, neighbours)
        row["stage_s"] = {
            stage: record.get("seconds") if record.get("status") == "ok" else None for stage, record in stages.items()
        }
        row["end_to_end_s"] = end_to_end_seconds(row["stage_s"])
        row["stage_times"] = _stage_times(result)
        row["batch_dir"] = str(Path(batch_dir).resolve())
        rows.append(row)
    return rows


def batch_row(batch_dir: Path, reference_dir: Path) -> Dict[str, Any]:
    """The ``semsplat-batch`` row of issue #15: the batch against one of its scenes run alone on one GPU.

    Args:
        batch_dir: ``--output-dir`` of the batch (every scene completed in that run).
        reference_dir: ``--output-dir`` of a batch of one of those scenes alone, on one GPU, same settings.

    Raises:
        BatchRecordError: Either run incomplete, or the reference not one scene on one GPU with the same settings.
    """
    from semsplat_ns.batch.summary import SUMMARY_JSON

    summary, results = read_batch(batch_dir)
    reference, reference_results = read_batch(reference_dir)
    where = Path(reference_dir) / SUMMARY_JSON
    if len(reference_results) != 1:
        raise BatchRecordError(f"{where}: a reference run has exactly one scene, this one {len(reference_results)}")
    alone = reference_results[0]
    if not alone.get("gpu"):
        raise BatchRecordError(f"{where}: the reference scene {alone['scene']} ran on no GPU")
    if reference["settings"].get("workers") != 1:
        raise BatchRecordError(f"{where}: the reference ran with {reference['settings'].get('workers')} workers, not 1")
    if alone["scene"] not in [r["scene"] for r in results]:
        raise BatchRecordError(f"{where}: its scene {alone['scene']} is not one of the batch's")
    differ = [k for k in SETTING_KEYS if reference["settings"].get(k) != summary["settings"].get(k)]
    if differ:
        raise BatchRecordError(f"{where}: settings differ from {Path(batch_dir) / SUMMARY_JSON}'s: {', '.join(differ)}")
    gpus = {_device_key(r) for r in results if r.get("gpu")}
    mean = summary["mean"]
    figures = [training_figures(r) for r in results]
    train_times = [f["train_s"] for f in figures if f["train_s"] is not None]
    memories = [f["peak_gpu_mem_gb"] for f in figures if f["peak_gpu_mem_gb"] is not None]
    try:
        method = method_of(summary["settings"])
    except UnknownMethodError:
        method = None
    names = [r["scene"] for r in results]
    row = result_row(
        "+".join(names),
        BATCH_METHOD,
        miou=mean["miou"],
        miou_present=mean["miou_present"],
        acc=mean["acc"],
        test_ms_per_view=mean["test_ms_per_view"],
        train_s=sum(train_times) / len(train_times) if train_times else None,
        steps=figures[0]["steps"],
        peak_gpu_mem_gb=max(memories) if memories else None,
        n_gaussians=None,
        command=summary["settings"].get("command") or "",
        device=", ".join(sorted({_device_name(r, _metrics(r)) for r in results})),
    )
    wall, reference_wall = float(summary["wall_s"]), float(reference["wall_s"])
    row.update(
        n_scenes=len(results),
        n_gpus=len(gpus),
        wall_s=wall,
        reference_wall_s=reference_wall,
        reference_scene=alone["scene"],
        speedup_ratio=wall / reference_wall,
        trained_method=method,
        jobs_sharing_gpu=max((jobs_sharing_device(r, results) or 0) for r in results) or None,
        batch_dir=str(Path(batch_dir).resolve()),
        reference_dir=str(Path(reference_dir).resolve()),
    )
    return row


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=Path, required=True, help="a semsplat-batch --output-dir")
    parser.add_argument("--out", type=Path, required=True, help="results file for the scenes' rows")
    parser.add_argument("--method", help="the rows' method (default: from the batch's settings)")
    parser.add_argument("--reference", type=Path, help="--output-dir of one of the scenes alone on one GPU")
    parser.add_argument(
        "--concurrent", type=Path, nargs="*", default=[], help="--output-dir of batches run at the same time"
    )
    parser.add_argument("--batch-out", type=Path, help="results file for the semsplat-batch row (default: --out)")
    args = parser.parse_args(argv)
    try:
        rows = scene_rows(args.batch, args.method, args.concurrent)
        append_rows(args.out, rows)
        for row in rows:
            print({k: row[k] for k in ("scene", "method", "miou", "acc", "test_ms_per_view", "train_s")}, flush=True)
        if args.reference is not None:
            row = batch_row(args.batch, args.reference)
            append_rows(args.batch_out or args.out, [row])
            print({k: row[k] for k in ("scene", "n_scenes", "n_gpus", "wall_s", "speedup_ratio")}, flush=True)
    except BatchRecordError as error:
        print(f"batch_rows: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
