"""The GPU-box benchmarks on semsplat-batch: the benchmark methods as ns-train flags (benchmarks/methods.py), the
semsplat-batch row of issue #15 from a run's records (benchmarks/batch_rows.py), and the box scripts' syntax.

Rows from a real (CPU) batch run are tested in tests/scripts/test_batch.py, on its fixture's records.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from benchmarks.batch_rows import BATCH_METHOD, BatchRecordError, batch_row, scene_rows
from benchmarks.common import ROW_KEYS
from benchmarks.methods import (
    METHODS,
    SCHEDULE_FIELDS,
    UnknownMethodError,
    method_of,
    ns_train_flags,
    scaled_schedule,
)
from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.batch.records import RESULT_FORMAT, RESULT_NAME
from semsplat_ns.batch.scene_job import STAGES
from semsplat_ns.batch.summary import build_summary, write_summary
from semsplat_ns.schedule import PAPER_STEPS, PRESET_STEPS

REPO = Path(__file__).resolve().parents[2]
SCHEDULE = {"stop_split_at": 15000, "warmup_length": 500, "resolution_schedule": 3000, "sh_degree_interval": 1000}
SCHEDULE["stop_screen_size_at"] = 4000


def _settings(method: str, steps: int = PAPER_STEPS) -> Dict[str, Any]:
    return {
        "preset": "semsplat",
        "pseudo_backend": METHODS[method].pseudo_backend,
        "max_num_iterations": steps,
        "device": "cuda",
        "method_args": ns_train_flags(method, steps, SCHEDULE),
    }


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_is_named_back_from_its_batch_settings(method):
    assert method_of(_settings(method)) == method
    assert method_of(_settings(method, 15000)) == method  # the scaled schedule is no part of the method


def test_method_flags_scale_the_schedule_as_bench_semsplat_does():
    assert ns_train_flags("semsplat", PRESET_STEPS) == ["--steps-per-save", "7000", "--steps-per-eval-image", "70000"]
    flags = ns_train_flags("semsplat-baseline", 15000, SCHEDULE)
    pairs = dict(zip(flags[::2], flags[1::2]))
    assert pairs["--pipeline.model.pseudo-loss-weight"] == "0.0"
    assert pairs["--pipeline.model.stop-split-at"] == "7500" and pairs["--pipeline.model.sh-degree-interval"] == "500"
    assert pairs["--optimizers.transfer-head.scheduler.max-steps"] == "15000"
    # 30k from the 7000-step preset: the paper's own values, spelled out (the preset's are compressed).
    paper = dict(zip(*[iter(ns_train_flags("semsplat", PAPER_STEPS, SCHEDULE))] * 2))
    assert paper["--pipeline.model.stop-split-at"] == "15000" and paper["--pipeline.model.warmup-length"] == "500"
    assert paper["--optimizers.means.scheduler.max-steps"] == "30000"
    assert scaled_schedule(SCHEDULE, 30) == {**{k: int(v / 1000) for k, v in SCHEDULE.items()}, "warmup_length": 0}
    with pytest.raises(ValueError, match="schedule fields are needed"):
        ns_train_flags("semsplat", 15000)


def test_settings_of_no_method_are_refused_with_the_flags():
    settings = {**_settings("semsplat-paper"), "method_args": ["--pipeline.model.agg2d-loss-weight", "0.3"]}
    with pytest.raises(UnknownMethodError, match=r"--pseudo-backend reproject with ns-train flags \[--pipeline"):
        method_of(settings)
    with pytest.raises(UnknownMethodError, match="preset 'semsplat-fast'"):
        method_of({**_settings("semsplat"), "preset": "semsplat-fast"})
    # Values are compared by meaning: 0 is 0.0.
    zero = ["--pipeline.model.pseudo-loss-weight", "0", "--pipeline.model.agg2d-loss-weight=0."]
    zero += ["--pipeline.model.agg3d-loss-weight", "0e0", "--pipeline.datamanager.auto-pseudo-labels", "off"]
    assert method_of({**_settings("semsplat-baseline"), "method_args": zero}) == "semsplat-baseline"
    # the preset's automatic prior left on makes another method
    with pytest.raises(UnknownMethodError):
        method_of({**_settings("semsplat-baseline"), "method_args": zero[:-2]})


def test_method_flags_parse_into_the_config_ns_train_builds():
    # ns-train's parse of the preset's flags (tyro, flag conversion off as nerfstudio's method union has it), on
    # the preset alone rather than on every registered method: each flag exists and lands where it should.
    import tyro
    from nerfstudio.engine.trainer import TrainerConfig

    from benchmarks.methods import preset_schedule
    from semsplat_ns.config import semsplat
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig

    config = tyro.cli(
        tyro.conf.FlagConversionOff[TrainerConfig],
        default=semsplat.config,
        args=ns_train_flags("semsplat-no-support", 15000, preset_schedule()),
    )
    model = config.pipeline.model
    assert isinstance(model, SemSplatModelConfig)
    assert model.pseudo_loss_weight == 0.25 and model.pseudo_weight_by_label_support is False
    assert semsplat.config.pipeline.model.pseudo_weight_by_label_support is True  # type: ignore[attr-defined]
    baseline = tyro.cli(
        tyro.conf.FlagConversionOff[TrainerConfig],
        default=semsplat.config,
        args=ns_train_flags("semsplat-baseline", PRESET_STEPS),
    )
    assert baseline.pipeline.datamanager.auto_pseudo_labels == "off"  # type: ignore[attr-defined]
    short_prior = tyro.cli(
        tyro.conf.FlagConversionOff[TrainerConfig],
        default=semsplat.config,
        args=ns_train_flags("semsplat-prior2k", PRESET_STEPS),
    )
    assert short_prior.pipeline.datamanager.pseudo_prior.unet.steps == 2000  # type: ignore[attr-defined]
    assert semsplat.config.pipeline.datamanager.pseudo_prior.unet.steps == 6000  # type: ignore[attr-defined]
    before = tyro.cli(
        tyro.conf.FlagConversionOff[TrainerConfig],
        default=semsplat.config,
        args=ns_train_flags("semsplat-no-thin", PRESET_STEPS),
    ).pipeline.datamanager
    assert (before.pseudo_prior.unet.class_balance, before.pseudo_prior.margin) == ("none", 0)  # type: ignore[attr-defined]
    assert before.pseudo_reproject.color_tolerance == 20.0  # type: ignore[attr-defined]
    assert baseline.pipeline.model.pseudo_loss_weight == 0.0  # type: ignore[attr-defined]
    assert {name: getattr(model, name) for name in SCHEDULE_FIELDS} == scaled_schedule(preset_schedule(), 15000)
    for key in ("means", "transfer_head", "camera_opt"):
        assert config.optimizers[key]["scheduler"].max_steps == 15000
    assert (config.steps_per_save, config.steps_per_eval_image) == (15000, 150000)


# ----------------------------------------------------------------------------------- the semsplat-batch row


def _result(folder: Path, scene: str, gpu: str, started: float, settings: Dict[str, Any]) -> Dict[str, Any]:
    """A scene's result.json as semsplat-batch writes it (no tensorboard events: train_s stays unknown)."""
    metrics = {"miou": 0.6, "miou_present": 0.6, "acc": 0.9, "test_ms_per_view": 3.0, "n_gaussians": 1000}
    stages, clock = {}, started
    for stage, seconds in zip(STAGES, (100.0, 600.0, 30.0, 20.0)):
        stages[stage] = {"status": "ok", "seconds": seconds, "command": [stage], "started": clock}
        clock += seconds
    record = {
        "format": RESULT_FORMAT,
        "status": "ok",
        "scene": scene,
        "output_dir": str(folder / scene),
        "settings": settings,
        "metrics": metrics,
        "stages": stages,
        "total_s": clock - started,
        "config": str(folder / scene / "train" / "config.yml"),
        "host": "box",
        "gpu": {"index": gpu, "name": "NVIDIA H100 80GB HBM3", "cuda_visible_devices": gpu},
    }
    write_json_atomic(folder / scene / RESULT_NAME, record)
    return record


def _run(folder: Path, scenes: List[str], wall_s: float, workers: int) -> Dict[str, Any]:
    settings = _settings("semsplat")
    results = [_result(folder, scene, str(i), 1000.0 + i, settings) for i, scene in enumerate(scenes)]
    summary = build_summary(results, [], {**settings, "workers": workers, "command": "semsplat-batch ..."})
    summary.update(still_running=[], wall_s=wall_s)
    write_summary(folder, summary)
    return summary


def test_batch_row_compares_the_batch_with_one_scene_alone(tmp_path):
    _run(tmp_path / "four", ["townA", "townB", "townC", "townD"], wall_s=1100.0, workers=4)
    _run(tmp_path / "alone", ["townA"], wall_s=1000.0, workers=1)
    row = batch_row(tmp_path / "four", tmp_path / "alone")
    assert set(ROW_KEYS) <= set(row)
    assert (row["scene"], row["method"], row["trained_method"]) == (
        "townA+townB+townC+townD",
        BATCH_METHOD,
        "semsplat",
    )
    assert (row["n_scenes"], row["n_gpus"], row["jobs_sharing_gpu"]) == (4, 4, 1)
    assert row["speedup_ratio"] == pytest.approx(1.1) and row["wall_s"] == 1100.0 and row["reference_scene"] == "townA"
    assert row["miou"] == pytest.approx(0.6) and row["train_s"] is None and row["device"] == "NVIDIA H100 80GB HBM3"
    rows = scene_rows(tmp_path / "four")
    assert [r["method"] for r in rows] == ["semsplat"] * 4
    assert [r["jobs_sharing_gpu"] for r in rows] == [1] * 4 and not any(r["test_ms_shared_gpu"] for r in rows)


def test_scene_rows_count_concurrent_batches_and_add_up_end_to_end(tmp_path):
    """Two batches of the same scenes at once on the same two GPUs: each training shared its GPU with one more."""
    _run(tmp_path / "baseline", ["townA", "townB"], wall_s=800.0, workers=2)
    _run(tmp_path / "support", ["townA", "townB"], wall_s=800.0, workers=2)
    _run(tmp_path / "later", ["townA", "townB"], wall_s=800.0, workers=2)
    later = tmp_path / "later"
    for scene in ("townA", "townB"):  # started after the other two ended: no overlap
        record = json.loads((later / scene / RESULT_NAME).read_text())
        for stage in record["stages"].values():
            stage["started"] += 5000.0
        write_json_atomic(later / scene / RESULT_NAME, record)
    alone = scene_rows(tmp_path / "baseline")
    assert [r["jobs_sharing_gpu"] for r in alone] == [1, 1]
    shared = scene_rows(tmp_path / "baseline", concurrent=[tmp_path / "support", later])
    assert [r["jobs_sharing_gpu"] for r in shared] == [2, 2]
    assert all(r["test_ms_shared_gpu"] for r in shared)
    # pseudo labels (100 s) + ns-train (600 s) in _result's stages; no stage_times.json beside the config
    assert [r["end_to_end_s"] for r in shared] == [700.0, 700.0]
    assert [r["stage_times"] for r in shared] == [None, None]
    run_dir = tmp_path / "baseline" / "townA" / "train"
    write_json_atomic(run_dir / "stage_times.json", {"end_to_end_s": 590.0, "steps_per_s": 55.0})
    assert scene_rows(tmp_path / "baseline")[0]["stage_times"] == {"end_to_end_s": 590.0, "steps_per_s": 55.0}


def test_batch_row_refuses_runs_that_do_not_measure_it(tmp_path):
    _run(tmp_path / "two", ["townA", "townB"], wall_s=700.0, workers=2)
    _run(tmp_path / "pair", ["townA", "townB"], wall_s=700.0, workers=2)
    with pytest.raises(BatchRecordError, match=r"pair/summary.json: a reference run has exactly one scene, this one 2"):
        batch_row(tmp_path / "two", tmp_path / "pair")
    _run(tmp_path / "other", ["townC"], wall_s=600.0, workers=1)
    with pytest.raises(BatchRecordError, match=r"other/summary.json: its scene townC is not one of the batch's"):
        batch_row(tmp_path / "two", tmp_path / "other")
    _run(tmp_path / "alone", ["townA"], wall_s=600.0, workers=1)
    summary_path = tmp_path / "alone" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["settings"]["method_args"] = []
    write_json_atomic(summary_path, summary)
    with pytest.raises(
        BatchRecordError, match=r"alone/summary.json: settings differ from .*two/summary.json's: method_args"
    ):
        batch_row(tmp_path / "two", tmp_path / "alone")
    # A resumed run: its wall time is not the batch's.
    resumed = tmp_path / "resumed"
    done = _run(resumed, ["townA", "townB"], wall_s=5.0, workers=2)
    done["rows"][0]["recorded_earlier"] = True
    write_summary(resumed, done)
    with pytest.raises(BatchRecordError, match=r"resumed/summary.json: .*recorded by an earlier run .*: townA"):
        batch_row(resumed, tmp_path / "alone")
    # A listed scene whose result.json is half-written is no result.
    (tmp_path / "two" / "townB" / RESULT_NAME).write_text('{"status": "ok", "format": 1')
    with pytest.raises(BatchRecordError, match=r"two/townB/result.json: no complete result"):
        scene_rows(tmp_path / "two")
    with pytest.raises(BatchRecordError, match=r"nowhere/summary.json: not found"):
        scene_rows(tmp_path / "nowhere")


def test_batch_rows_command_fails_with_one_line_naming_the_file(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_rows", "--batch", str(tmp_path), "--out", str(tmp_path / "rows.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"batch_rows: error: {tmp_path / 'summary.json'}: not found "
        "(not a semsplat-batch output folder, or the run never ended)"
    ]
    assert not (tmp_path / "rows.json").exists()


def test_box_scripts_parse():
    scripts = sorted((REPO / "benchmarks" / "box").glob("*.sh"))
    assert {p.name for p in scripts} >= {"env.sh", "launch.sh", "poll.sh", "batch_rows.sh", "speedup_row.sh"}
    for script in scripts:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)
    assert not (REPO / "benchmarks" / "box" / "batch.py").exists()  # the home-made runner is retired


@pytest.mark.parametrize("at_once", [False, True])
def test_chain_records_each_runners_exit_status_and_marks_done_at_the_end(tmp_path, at_once):
    env = {"PATH": "/usr/bin:/bin", "WORK": str(tmp_path)}
    if at_once:
        env["AT_ONCE"] = "1"
    # at once, the slow first runner ends last; one after another, it ends first
    commands = ["sleep 0.5; echo first >> $WORK/order", "echo second >> $WORK/order; exit 3"]
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "box" / "chain.sh"), *commands], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    order = (tmp_path / "order").read_text().split()
    assert order == (["second", "first"] if at_once else ["first", "second"])
    status = (tmp_path / "status.txt").read_text().splitlines()
    assert any(line.endswith(f"rc 0 of: {commands[0]}") for line in status), status
    assert any(line.endswith(f"rc 3 of: {commands[1]}") for line in status), status
    assert status[-1].endswith("runner done") and (tmp_path / "done").is_file()
