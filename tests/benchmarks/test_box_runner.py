"""The GPU-box phase runner's plan parsing and progress reading (benchmarks/box/batch.py)."""

import pytest

from benchmarks.box import batch


def test_phase_file_gives_concurrency_mode_and_jobs(tmp_path):
    plan = tmp_path / "phase1.txt"
    plan.write_text(
        "concurrency 3 eval-as-done\n"
        "# a comment line\n"
        "semsplat townA semsplat-baseline 15000 ablation.json  # trailing comment\n"
        "nerfw townB 5000 nerfw.json\n"
    )
    concurrency, eval_as_done, jobs = batch.read_phase(plan, tmp_path, 1)
    assert (concurrency, eval_as_done) == (3, True)
    assert [(j.kind, j.scene, j.method, j.steps, j.results) for j in jobs] == [
        ("semsplat", "townA", "semsplat-baseline", 15000, "ablation.json"),
        ("nerfw", "townB", "semantic-nerfw", 5000, "nerfw.json"),
    ]
    assert all(job.jobs_sharing_gpu == 2 for job in jobs)  # two jobs, three slots
    train = jobs[0].train_command()
    assert train[1:3] == ["benchmarks/bench_semsplat.py", "--scene"] and "--stage" in train
    assert jobs[0].eval_command()[-1].endswith("results/ablation.json")


def test_phase_file_without_concurrency_line_is_refused(tmp_path):
    plan = tmp_path / "phase2.txt"
    plan.write_text("semsplat townA semsplat 30000 semsplat.json\n")
    with pytest.raises(ValueError, match="phase2.txt"):
        batch.read_phase(plan, tmp_path, 2)


def test_unknown_job_kind_is_refused(tmp_path):
    plan = tmp_path / "phase1.txt"
    plan.write_text("concurrency 1\nsplatfacto townA 100 x.json\n")
    with pytest.raises(ValueError, match="splatfacto"):
        batch.read_phase(plan, tmp_path, 1)


def test_last_progress_reads_nerfstudio_table_through_terminal_codes(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "\x1b[2A\x1b[1KStep (% Done)       Train Iter (time)    ETA (time)\x1b[0m\n"
        "10 (0.07%)          304.722 ms           1 h, 16 m, 7 s       10.92 M     \x1b[0m\n"
        "\x1b[3A\x1b[1K14990 (99.93%)      15.768 ms            157.681 ms           16.71 M   \x1b[0m\n"
    )
    assert batch.last_progress(log) == "14990 (99.93%) 15.768 ms"
    assert batch.last_progress(tmp_path / "missing.log") == ""
