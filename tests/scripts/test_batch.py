"""``semsplat-batch``: scenes run as Dask tasks whose stages are the project's real commands, on CPU workers.

One batch (module fixture) runs three tiny towns on a local cluster of two workers: two good ones, of which
one loses its worker (killed) while it evaluates, and one with a broken classes.json. The tests read what it
left; a second run through the console script, joining the same cluster with --scheduler, shows the resume.
The benchmark rows are made from the batch's real records. The rest are quick checks of the parts (error
lines, names, half-written folders, the summary, GPU pinning, the dashboard line) that start no training.

Cost, 2-core CPU box: each stage is a fresh process (ns-train alone spends ~16 CPU-s on its imports and CLI).
The batch runs 11 of them, two of them ns-train: bravo's worker is killed in its evaluation, so the re-run keeps
its pseudo labels and model and trains nothing again; the console-script re-run joins the fixture's cluster
and retries nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict

import psutil
import pytest
from PIL import Image

from semsplat_ns.atomic import write_json_atomic
from semsplat_ns.batch import scene_job
from semsplat_ns.batch.cluster import (
    ClusterOptions,
    GPUPinnedLocalCluster,
    dashboard_line,
    gpu_in_use,
    start_cluster,
    visible_gpus,
)
from semsplat_ns.batch.process import error_line
from semsplat_ns.batch.records import (
    ATTEMPTS_NAME,
    RESULT_FORMAT,
    RESULT_NAME,
    clean_outputs,
    read_result,
    reusable_stages,
)
from semsplat_ns.batch.runner import BatchSettings, run_batch, scene_names
from semsplat_ns.batch.scene_job import SceneFailed, SceneJob, run_scene
from semsplat_ns.batch.summary import build_summary, write_summary

# 12 views of 64x64, seed 0: the smallest town whose photos give the reprojection pseudo labels enough
# triangulated points (at 32 or 48 pixels SIFT finds none), so the real pseudo-label stage runs.
VIEWS, RESOLUTION, SEED = 12, 64, 0
STEPS = 30
# Few Gaussians and no densification: 30 CPU steps take seconds; the imports of each stage take longer.
METHOD_ARGS = ["--pipeline.model.num-random", "200", "--pipeline.model.warmup-length", str(10 * STEPS)]
BROKEN_JSON = '{"classes": [\n'
KILLED = "bravo"


def _kill_worker_when_evaluating(scene_output: Path, killed: Dict[str, Any], timeout_s: float = 900) -> None:
    """Waits until the scene's task runs its evaluation stage, then SIGKILLs the worker process running it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            entries = json.loads((scene_output / ATTEMPTS_NAME).read_text())
        except (OSError, ValueError):
            entries = []
        if entries and entries[-1].get("stage") == "eval" and entries[-1].get("stage_pid"):
            killed.update(pid=entries[-1]["pid"], stage_pid=entries[-1]["stage_pid"], id=entries[-1]["id"])
            killed["at"] = time.time()
            os.kill(entries[-1]["pid"], signal.SIGKILL)
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory, demo_town: Callable[..., Path]) -> Dict[str, Path]:
    """alpha and bravo (good), broken (classes.json is not JSON): private copies, named for the output folders."""
    root = tmp_path_factory.mktemp("batch_scenes")
    found = {}
    for name in ("alpha", "bravo", "broken"):
        copy = demo_town(n_views=VIEWS, resolution=RESOLUTION, n_labelled=2, seed=SEED, writable=True)
        found[name] = copy.rename(root / name)
    (found["broken"] / "classes.json").write_text(BROKEN_JSON)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local cluster of two CPU workers, kept for the module: the batch runs on it, the re-run joins it."""
    handle = start_cluster(
        ClusterOptions(
            device="cpu", cpu_workers=2, dashboard_address=":0", local_directory=tmp_path_factory.mktemp("dask")
        )
    )
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, scenes: Dict[str, Path], cluster) -> Dict[str, Any]:
    """The three scenes on the two workers; bravo's worker is killed while it evaluates bravo's trained model."""
    output_dir = tmp_path_factory.mktemp("batch") / "runs"
    killed: Dict[str, Any] = {}
    watcher = threading.Thread(target=_kill_worker_when_evaluating, args=(output_dir / KILLED, killed), daemon=True)
    watcher.start()
    started = time.perf_counter()
    report = run_batch(
        BatchSettings(
            scenes=[scenes["alpha"], scenes["bravo"], scenes["broken"]],
            output_dir=output_dir,
            pseudo_backend="reproject",
            max_num_iterations=STEPS,
            device="cpu",
            method_args=METHOD_ARGS,
            command="semsplat-batch (test_batch fixture)",
        ),
        cluster.client,
        cluster_description=cluster.description,
    )
    return {
        "report": report,
        "outcomes": {o.name: o for o in report.outcomes},
        "output_dir": output_dir,
        "killed": killed,
        "wall_s": time.perf_counter() - started,
    }


# ------------------------------------------------------------------------------------------- the batch


@pytest.mark.slow
def test_good_scenes_complete_with_metrics_predictions_and_stage_times(batch, scenes):
    for name in ("alpha", "bravo"):
        outcome = batch["outcomes"][name]
        assert outcome.status == "ok", (name, outcome.error)
        folder = batch["output_dir"] / name
        recorded = read_result(folder)
        assert recorded is not None and recorded == outcome.result
        metrics = recorded["metrics"]
        assert all(0.0 <= metrics[key] <= 1.0 for key in ("miou", "miou_present", "acc"))
        assert metrics["test_ms_per_view"] > 0
        for stage in scene_job.STAGES:
            assert recorded["stages"][stage]["status"] == "ok", (name, stage)
            assert recorded["stages"][stage]["seconds"] > 0
            assert Path(recorded["stages"][stage]["log"]).is_file()
        assert recorded["settings"]["max_num_iterations"] == STEPS
        assert Path(recorded["config"]).is_file()
        assert (folder / "train" / name / "semsplat" / "batch" / "nerfstudio_models").is_dir()
        assert json.loads((folder / "eval" / "metrics.json").read_text())["miou"] == metrics["miou"]
        # Every view of both splits predicted, as semsplat-predict names them.
        for split in ("train", "test"):
            stems = sorted(p.stem for p in (scenes[name] / split / "color").iterdir())
            assert sorted(p.stem for p in (folder / "predict" / split / "labels").glob("*.png")) == stems
            assert recorded["predictions"][split] == len(stems)
        # The reprojection pseudo labels were written into the scene, where training read them.
        assert any((scenes[name] / "train" / "pseudo").glob("*.png"))


@pytest.mark.slow
def test_killed_worker_scene_runs_again_elsewhere(batch):
    killed = batch["killed"]
    assert killed, "the watcher never saw bravo's evaluation start"
    result = batch["outcomes"][KILLED].result
    assert result is not None
    runs = result["runs"]
    interrupted = [run for run in runs if run["id"] == killed["id"]]
    assert interrupted and interrupted[0]["outcome"] == "interrupted" and interrupted[0]["stage"] == "eval"
    assert runs[-1]["outcome"] == "ok" and runs[-1]["pid"] != killed["pid"]
    assert result["pid"] != killed["pid"]
    # Not a retry of a failure: Dask ran the same task again after its worker was lost.
    assert result["attempt"] == 1 and batch["outcomes"][KILLED].attempts == 1
    # It kept the pseudo labels and the model the lost run had completed (same settings), and evaluated anew.
    assert list(interrupted[0]["done"]) == ["pseudo_labels", "train"]
    for stage in ("pseudo_labels", "train"):
        assert result["stages"][stage] == {**interrupted[0]["done"][stage], "reused_from": killed["id"]}
    for stage in ("eval", "predict"):
        assert result["stages"][stage]["reused_from"] is None and result["stages"][stage]["started"] > killed["at"]
    assert Path(result["config"]).is_relative_to(Path(result["output_dir"]) / "train")
    # The stage process of the killed worker died with it (no orphan writing into bravo's folder).
    try:
        orphan = psutil.Process(killed["stage_pid"])
        assert orphan.status() == psutil.STATUS_ZOMBIE, f"semsplat-eval {killed['stage_pid']} outlived its worker"
    except psutil.NoSuchProcess:
        pass


@pytest.mark.slow
def test_bad_scene_fails_alone_with_its_one_line_error(batch, scenes):
    outcome = batch["outcomes"]["broken"]
    assert outcome.status == "failed" and outcome.stage == "pseudo_labels"
    assert outcome.attempts == 2  # retried once
    expected = f"semsplat-pseudo-labels: error: {scenes['broken'] / 'classes.json'}: not valid JSON ("
    assert outcome.error is not None and outcome.error.startswith(expected), outcome.error
    assert "\n" not in outcome.error
    folder = batch["output_dir"] / "broken"
    assert not (folder / RESULT_NAME).exists()
    attempts = json.loads((folder / ATTEMPTS_NAME).read_text())
    assert [a["outcome"] for a in attempts] == ["failed", "failed"]
    assert all(a["error"] == outcome.error for a in attempts)
    assert [o.name for o in batch["report"].failed] == ["broken"]


@pytest.mark.slow
def test_summary_is_table_two_shaped(batch):
    output_dir = batch["output_dir"]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert [row["scene"] for row in summary["rows"]] == ["alpha", "bravo"]
    assert summary["mean"]["scenes"] == 2
    mean_miou = sum(row["miou"] for row in summary["rows"]) / 2
    assert summary["mean"]["miou"] == pytest.approx(mean_miou)
    assert set(summary["mean"]["stage_s"]) == set(scene_job.STAGES)
    assert [f["scene"] for f in summary["failures"]] == ["broken"]
    assert summary["still_running"] == []
    markdown = (output_dir / "summary.md").read_text()
    assert "| scene | mIoU % | mIoU present % | acc % | ms / view |" in markdown
    assert "| **mean** (2) |" in markdown
    assert "| broken | pseudo labels | 2 | semsplat-pseudo-labels: error: " in markdown
    with Image.open(output_dir / "summary.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert not list(output_dir.rglob(".*.tmp"))


@pytest.mark.slow
def test_rerun_skips_recorded_scenes_and_runs_the_failed_one_again(batch, scenes, cluster):
    output_dir = batch["output_dir"]
    before = {
        name: ((output_dir / name / RESULT_NAME).read_bytes(), (output_dir / name / ATTEMPTS_NAME).read_bytes())
        for name in ("alpha", "bravo")
    }
    address = cluster.client.scheduler.address
    args = [str(Path(sys.executable).parent / "semsplat-batch")]
    args += [str(scenes[name]) for name in ("alpha", "bravo", "broken")]
    args += ["--output-dir", str(output_dir), "--device", "cpu", "--scheduler", address, "--retries", "0"]
    args += ["--max-num-iterations", str(STEPS), "--", *METHOD_ARGS]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 1, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"  # broken fails again
    assert f"Dask cluster at {address}: 2 workers" in done.stdout
    assert dashboard_line(cluster.client) in done.stdout
    assert "alpha recorded earlier" in done.stdout and "bravo recorded earlier" in done.stdout
    for name, (result, attempts) in before.items():
        # Nothing of a recorded scene ran: no new attempt, the same result.
        assert (output_dir / name / RESULT_NAME).read_bytes() == result
        assert (output_dir / name / ATTEMPTS_NAME).read_bytes() == attempts
    summary = json.loads((output_dir / "summary.json").read_text())
    assert [(row["scene"], row["recorded_earlier"]) for row in summary["rows"]] == [("alpha", True), ("bravo", True)]
    assert [f["scene"] for f in summary["failures"]] == ["broken"]
    assert (
        summary["settings"]["command"].startswith("semsplat-batch ") and "--retries 0" in summary["settings"]["command"]
    )
    # The two attempts of the first run, and the one of this run (--retries 0).
    assert len(json.loads((output_dir / "broken" / ATTEMPTS_NAME).read_text())) == 3


@pytest.mark.slow
def test_benchmark_rows_from_the_batch_records(batch, tmp_path):
    from benchmarks.batch_rows import BatchRecordError, batch_row, scene_rows, tensorboard_scalars
    from benchmarks.common import ROW_KEYS, SCORED_EXTRA_KEYS

    # The batch had a failing scene: no rows are taken from it.
    with pytest.raises(BatchRecordError, match=r"summary.json: not a complete run of its scenes; failed: broken"):
        scene_rows(batch["output_dir"])
    # The same two good scenes as a batch of their own: the summary the batch code writes from their records.
    results = [batch["outcomes"][name].result for name in ("alpha", "bravo")]
    good = tmp_path / "good"
    settings = {**batch["report"].summary["settings"], "command": "semsplat-batch alpha bravo"}
    summary = build_summary(results, [], settings)
    summary.update(still_running=[], wall_s=batch["wall_s"])
    write_summary(good, summary)
    # The flags of the test are of no benchmark method; --method names the rows.
    with pytest.raises(BatchRecordError, match=r"no benchmark method has these settings.*--method"):
        scene_rows(good)
    rows = scene_rows(good, method="semsplat-tiny")
    assert [(row["scene"], row["method"]) for row in rows] == [("alpha", "semsplat-tiny"), ("bravo", "semsplat-tiny")]
    spans = []
    for row, result in zip(rows, results):
        assert set(ROW_KEYS) <= set(row) and set(SCORED_EXTRA_KEYS) <= set(row)
        metrics = json.loads(Path(result["metrics_file"]).read_text())
        assert row["miou"] == metrics["miou"] and row["per_class_iou"] == metrics["per_class_iou"]
        assert row["n_gaussians"] == metrics["n_gaussians"] and row["steps"] == STEPS
        # nerfstudio's own clock of the loop, inside the stage's wall time; no GPU, no GPU memory.
        loop = tensorboard_scalars(Path(result["config"]).parent, ["Train Total (time)"])["Train Total (time)"]
        assert row["train_s"] == pytest.approx(loop[-1]) and 0 < row["train_s"] < row["stage_s"]["train"]
        assert row["peak_gpu_mem_gb"] is None and row["device"] == "cpu"
        assert row["stage_s"] == {stage: result["stages"][stage]["seconds"] for stage in scene_job.STAGES}
        assert row["command"] == "semsplat-batch alpha bravo"
        start = result["stages"]["train"]["started"]
        spans.append((start, start + result["stages"]["train"]["seconds"]))
    # Both trained on this host's CPU: sharing it exactly when their trainings overlapped.
    overlap = spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]
    assert [row["jobs_sharing_gpu"] for row in rows] == [2 if overlap else 1] * 2
    # The batch row needs a reference scene that ran alone on a GPU.
    alone = tmp_path / "alone"
    write_summary(
        alone, {**build_summary(results[:1], [], {**settings, "workers": 1}), "still_running": [], "wall_s": 1.0}
    )
    with pytest.raises(BatchRecordError, match=r"alone/summary.json: the reference scene alpha ran on no GPU"):
        batch_row(good, alone)


# ------------------------------------------------------------------------------------------- the parts


def test_error_line_prefers_the_commands_own_line():
    log = "# command: x\nsome output\nsemsplat-eval: error: /a/config.yml: no such file (--load-config)\n"
    assert error_line(log, "semsplat-eval", 2) == "semsplat-eval: error: /a/config.yml: no such file (--load-config)"


def test_error_line_of_a_tyro_box_a_traceback_a_signal_and_a_timeout():
    box = (
        "warnings...\n╭─ Unrecognized options ─────────╮\n│ Unrecognized options: --bogus, 3 │\n"
        "│ ───────────── │\n│ For full helptext, run ns-train --help │\n╰──────────╯\n"
    )
    assert error_line(box, "ns-train", 2) == "ns-train: error: Unrecognized options: --bogus, 3"
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: CUDA out of memory\n'
    assert error_line(traceback, "ns-train", 1) == "ns-train exited with status 1: RuntimeError: CUDA out of memory"
    assert error_line("# command: ns-train\nStep 10\n", "ns-train", -9) == "ns-train was killed by signal 9: Step 10"
    assert error_line("", "semsplat-eval", None) == "semsplat-eval timed out and printed nothing"


def test_scene_names_tell_same_named_folders_apart():
    assert scene_names([Path("/d/townA"), Path("/d/townB")]) == ["townA", "townB"]
    assert scene_names([Path("/x/a/town"), Path("/x/b/town"), Path("/y/c")]) == ["a-town", "b-town", "c"]


def _half_written(folder: Path) -> None:
    for name in ("logs", "train/x/semsplat/batch", "eval", "predict/train"):
        (folder / name).mkdir(parents=True)
    (folder / "eval" / "metrics.json").write_text('{"miou": 0.5}')
    (folder / ".result.json.abc.tmp").write_text('{"status": "ok"')  # an atomic write cut short
    write_json_atomic(folder / ATTEMPTS_NAME, [{"id": "old", "pid": 1, "stage": "train", "outcome": None}])


def test_half_written_scene_is_no_result_and_is_cleaned_before_a_run(tmp_path):
    folder = tmp_path / "runs" / "x"
    _half_written(folder)
    assert read_result(folder) is None
    (folder / RESULT_NAME).write_text(json.dumps({"status": "ok", "format": RESULT_FORMAT, "metrics": {"miou": 0.5}}))
    assert read_result(folder) is None  # a record without every metric is not a result either
    job = SceneJob(name="x", scene_dir=str(tmp_path / "absent"), output_dir=str(folder))
    with pytest.raises(SceneFailed) as failed:
        run_scene(job)
    assert failed.value.stage == "setup" and "scene folder not found" in str(failed.value)
    assert sorted(p.name for p in folder.iterdir()) == [ATTEMPTS_NAME]  # stage outputs and the temp file gone
    attempts = json.loads((folder / ATTEMPTS_NAME).read_text())
    assert [a["outcome"] for a in attempts] == ["interrupted", "failed"]


def _interrupted_after(folder: Path, job: SceneJob, done: Dict[str, Any], outcome: Any = None) -> None:
    """A scene folder as a run that lost its worker leaves it after completing the stages of ``done``."""
    run = folder / "train" / job.name / "semsplat" / "batch"
    (run / "nerfstudio_models").mkdir(parents=True)
    (run / "config.yml").write_text("not a config\n")
    (run / "nerfstudio_models" / "step-000000029.ckpt").write_bytes(b"")
    for name in ("pseudo_labels", "train", "eval"):
        (folder / "logs").mkdir(exist_ok=True)
        (folder / "logs" / f"{name}.log").write_text(f"# command: {name}\n")
    (folder / "eval").mkdir()
    entry = {"id": "lost", "stage": "eval", "outcome": outcome, "settings": job.settings(), "done": done}
    write_json_atomic(folder / ATTEMPTS_NAME, [entry])


def test_a_run_keeps_only_what_a_lost_run_completed_with_the_same_settings(tmp_path):
    folder = tmp_path / "x"
    job = SceneJob(name="x", scene_dir=str(tmp_path), output_dir=str(folder), max_num_iterations=30)
    ok = {"status": "ok", "seconds": 2.0, "command": ["cmd"], "log": None, "reason": None, "started": 1.0}
    done = {"pseudo_labels": ok, "train": ok}
    _interrupted_after(folder, job, done)
    assert reusable_stages(folder, "x", job.settings()) == ("lost", done)
    # Not with other settings, not with --redo, not after a failure (a retry starts from scratch).
    assert reusable_stages(folder, "x", {**job.settings(), "max_num_iterations": 31}) == (None, {})
    assert reusable_stages(folder, "x", job.settings(), redo=True) == (None, {})
    entries = json.loads((folder / ATTEMPTS_NAME).read_text())
    write_json_atomic(folder / ATTEMPTS_NAME, [{**entries[0], "outcome": "failed"}])
    assert reusable_stages(folder, "x", job.settings()) == (None, {})
    write_json_atomic(folder / ATTEMPTS_NAME, entries)
    # Only the leading stages, and a training only while its checkpoint is there.
    assert reusable_stages(folder, "x", job.settings())[1].keys() == {"pseudo_labels", "train"}
    write_json_atomic(folder / ATTEMPTS_NAME, [{**entries[0], "done": {"train": ok}}])
    assert reusable_stages(folder, "x", job.settings()) == (None, {})
    write_json_atomic(folder / ATTEMPTS_NAME, entries)
    next(folder.rglob("*.ckpt")).unlink()
    assert reusable_stages(folder, "x", job.settings())[1].keys() == {"pseudo_labels"}
    # What is kept stays; the rest of the lost run's output goes.
    clean_outputs(folder, keep=["pseudo_labels"])
    assert sorted(p.name for p in folder.iterdir()) == [ATTEMPTS_NAME, "logs"]
    assert [p.name for p in (folder / "logs").iterdir()] == ["pseudo_labels.log"]


def test_recorded_scene_is_returned_without_running(tmp_path):
    folder = tmp_path / "x"
    metrics = {"miou": 0.4, "miou_present": 0.5, "acc": 0.9, "test_ms_per_view": 3.0}
    record = {"format": RESULT_FORMAT, "status": "ok", "scene": "x", "metrics": metrics}
    write_json_atomic(folder / RESULT_NAME, record)
    assert run_scene(SceneJob(name="x", scene_dir=str(tmp_path / "absent"), output_dir=str(folder))) == record
    assert not (folder / ATTEMPTS_NAME).exists()


def test_prediction_is_skipped_when_the_command_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(scene_job, "find_command", lambda name: None)
    run = scene_job._SceneRun(SceneJob(name="x", scene_dir=str(tmp_path), output_dir=str(tmp_path / "out")))
    run.config_path = tmp_path / "config.yml"
    run.predict()
    record = run.stages["predict"]
    assert record.status == "skipped"
    assert record.reason is not None and "semsplat-predict is not installed" in record.reason


def _result(name: str, miou: float, predict: str = "ok") -> Dict[str, Any]:
    stages = {stage: {"status": "ok", "seconds": 10.0} for stage in scene_job.STAGES}
    stages["predict"] = {"status": predict, "seconds": 10.0 if predict == "ok" else 0.0}
    metrics = {"miou": miou, "miou_present": miou, "acc": 0.9, "test_ms_per_view": 5.0}
    return {"scene": name, "metrics": metrics, "stages": stages, "total_s": 40.0}


def test_summary_files_of_given_results(tmp_path):
    failures = [{"scene": "c", "stage": "train", "error": "ns-train: error: bad | flag", "attempts": 2}]
    summary = build_summary([_result("a", 0.5), _result("b", 0.7, "skipped")], failures, {"preset": "semsplat"}, ["a"])
    assert summary["mean"]["miou"] == pytest.approx(0.6)
    assert summary["mean"]["stage_s"]["predict"] == pytest.approx(10.0)  # over the scenes that ran it
    files = write_summary(tmp_path, summary)
    markdown = files["md"].read_text()
    assert "| a † | 50.00 | 50.00 | 90.00 | 5.00 | 10.0 | 10.0 | 10.0 | 10.0 | 40.0 |" in markdown
    assert "| b | 70.00 |" in markdown and "| skipped |" in markdown
    assert "| **mean** (2) | **60.00** |" in markdown
    assert "ns-train: error: bad \\| flag" in markdown
    assert json.loads(files["json"].read_text())["failed"] == 1
    empty = write_summary(tmp_path / "none", build_summary([], failures, {"preset": "semsplat"}))
    assert empty["png"].stat().st_size > 0


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")
    assert visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def _cuda_visible_devices():
    gpu = gpu_in_use() or {}
    return os.environ.get("CUDA_VISIBLE_DEVICES"), scene_job.worker_sees_gpu(), gpu.get("index")


def test_gpu_pinned_cluster_gives_each_worker_one_gpu(tmp_path):
    # No GPU needed: each worker only gets its own CUDA_VISIBLE_DEVICES.
    from distributed import Client

    cluster = GPUPinnedLocalCluster(
        ["0", "1"],
        threads_per_worker=1,
        processes=True,
        memory_limit=0,
        dashboard_address=":0",
        local_directory=str(tmp_path),
    )
    try:
        with Client(cluster) as client:
            client.wait_for_workers(2)
            seen: Dict[str, Any] = client.run(_cuda_visible_devices)  # type: ignore[assignment]
            # Each worker trains on its own GPU and records that one in its scenes' results.
            assert sorted(seen.values()) == [("0", True, "0"), ("1", True, "1")]
            assert sorted(cluster.worker_spec) == ["gpu0", "gpu1"]
    finally:
        cluster.close()


def test_dashboard_line_says_what_the_address_serves():
    import importlib.util
    from urllib.request import urlopen

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        line = dashboard_line(client)
        link = client.dashboard_link
        assert link
        page = urlopen(link, timeout=30).read().decode(errors="replace")
    if importlib.util.find_spec("bokeh") is None:
        # distributed serves a notice there instead of a dashboard: the line says so, not just the address.
        assert "Dask needs bokeh" in page
        assert line.startswith("Dask dashboard: unavailable (the scheduler has no bokeh>=3.1") and link in line
    else:
        assert "Dask needs bokeh" not in page and line == f"Dask dashboard: {link}"


def test_preset_must_be_registered():
    from semsplat_ns.batch.presets import check_preset
    from semsplat_ns.errors import UserInputError

    check_preset("semsplat")
    with pytest.raises(UserInputError, match=r"--preset semsplat-nonexistent: ns-train has no method") as refused:
        check_preset("semsplat-nonexistent")
    assert "semsplat's registered methods: semsplat" in str(refused.value)


def test_cli_passes_flags_after_the_separator_to_ns_train():
    from semsplat_ns.scripts.batch import split_method_args

    assert split_method_args(["a", "--output-dir", "d", "--", "--x", "1", "--"]) == (
        ["a", "--output-dir", "d"],
        ["--x", "1", "--"],
    )
    assert split_method_args(["a"]) == (["a"], [])
