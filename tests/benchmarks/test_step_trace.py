"""benchmarks/step_trace.py on a real CPU training: every step stamped once, and tagged with what it did (the first
step, densification, the neighbour pool's rebuilds, logging steps, the view's kind and render size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from benchmarks.step_trace import StepTrace, trace_training
from tests.cpu_training import DENSIFYING_EVERY_3, seeded_trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

STEPS = 8


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    return demo_town(n_views=10, resolution=33, n_labelled=2, seed=11)


def test_trace_tags_the_steps_of_a_real_run(scene, tmp_path):
    settings = dict(DENSIFYING_EVERY_3, semantic_start_step=0, agg3d_knn_refresh_every=4)
    trainer = seeded_trainer(scene, tmp_path, STEPS, "trace", trainer_settings={"logging.steps_per_log": 5}, **settings)
    trainer.pipeline.model.strategy.pause_refine_after_reset = 0
    trace = trace_training(trainer)

    assert len(trace.before) == len(trace.after) == len(trace.tags) == STEPS
    assert all(b < a for b, a in zip(trace.before, trace.after))  # each step stamped before and after its work
    assert all(a <= b for a, b in zip(trace.after, trace.before[1:]))
    tagged = {tag: [step for step, tags in enumerate(trace.tags) if tag in tags] for tag in ("first", "refine", "log")}
    assert tagged["first"] == [0]
    assert tagged["refine"] == [3, 6]  # DENSIFYING_EVERY_3 densifies at steps 3 and 6
    assert tagged["log"] == [0, 5]
    # the pool is built on the first L3D step and again after each densification (its Gaussians changed)
    pool_steps = [step for step, tags in enumerate(trace.tags) if "pool" in tags]
    assert 0 in pool_steps and {4, 7} <= set(pool_steps)
    kinds = {tag for tags in trace.tags for tag in tags if tag in ("labelled", "pseudo", "unlabelled")}
    assert "labelled" in kinds and len(kinds) >= 2  # the scene's labelled views and the others are drawn
    assert {tag for tags in trace.tags for tag in tags if tag.startswith("size")} == {"size2", "size1"}

    summary = trace.summary(windows=4, slowest=3)
    assert summary["steps"] == STEPS and len(summary["windows"]) == 2 and len(summary["slowest"]) == 3
    assert summary["inside_s"] + summary["outside_s"] == pytest.approx(summary["loop_s"], rel=1e-6)
    assert summary["tags"]["refine"]["steps"] == 2
    slowest = summary["slowest"]
    assert slowest[0]["ms"] >= slowest[1]["ms"] >= slowest[2]["ms"]
    assert summary["per_step_tags"][3].split() == trace.tags[3]


def test_collections_are_timed_in_the_step_they_ran():
    clock = iter([0.0, 1.0, 1.0025, 2.0, 3.0, 4.0])
    trace = StepTrace(lambda: dict(captures=0, gaussians=1, pool_built_at=0, pool_key=None, downscale=1))
    import benchmarks.step_trace as module

    real = module.time.perf_counter
    module.time.perf_counter = lambda: next(clock)  # type: ignore[assignment]
    try:
        trace.before_step(0)  # 0.0
        trace.on_gc("start", {"generation": 2})  # 1.0
        trace.on_gc("stop", {"generation": 2})  # 1.0025
        trace.after_step(0)  # 2.0
        trace.before_step(1)  # 3.0
        trace.after_step(1)  # 4.0
    finally:
        module.time.perf_counter = real
    assert trace.gc_ms == [pytest.approx(2.5), 0.0]
    assert trace.tags[0] == ["first", "size1", "gc2"] and trace.tags[1] == ["size1"]
    assert trace.summary()["outside_s"] == pytest.approx(1.0)


def test_phases_of_each_step_are_timed_and_unwrapped_after(scene, tmp_path):
    import semsplat_ns.model.semsplat_model as semsplat_model

    real_rasterization = semsplat_model.rasterization
    settings: Dict[str, Any] = dict(semantic_start_step=0, num_downscales=0)  # full size first, no densification
    trainer = seeded_trainer(scene, tmp_path, 6, "phases", trainer_settings={"logging.steps_per_log": 100}, **settings)
    callbacks_before = [callback.func for callback in trainer.callbacks]
    trace = trace_training(trainer, phases=True)

    assert trace.phases is not None
    callback_phases = [name for name in trace.phases.names if name.startswith("callbacks/")]
    assert any("step_post_backward" in name for name in callback_phases)  # densification's callback is timed
    per_step = trace.phases.per_step
    for name in ("train_iteration", "next_train", "forward", "forward/rasterize/gsplat", "losses", "backward"):
        assert len(per_step[name]) == 6 and all(ms > 0 for ms in per_step[name]), name
    for step in range(6):  # nested phases within their parents, and the step holds them all
        assert per_step["forward/rasterize/gsplat"][step] <= per_step["forward/rasterize"][step]
        assert per_step["forward/rasterize"][step] <= per_step["forward"][step]
        parts = ("next_train", "forward", "metrics", "losses", "backward", "optimizer", "scheduler")
        assert sum(per_step[name][step] for name in parts) <= per_step["train_iteration"][step]
        assert per_step["train_iteration"][step] <= per_step["step"][step]
    summary = trace.summary()
    assert summary["phase_steps"] == 5  # steps 1-5: step 0 is the first
    assert set(summary["phases"]) >= {"step", "callbacks", "backward", "losses/l3d"}
    # every wrapped function is the original again
    assert semsplat_model.rasterization is real_rasterization
    assert "get_outputs" not in vars(trainer.pipeline.model) and "train_iteration" not in vars(trainer)
    own = [callback.func for callback in trainer.callbacks[1:-1]]  # the trace's own callbacks are first and last
    assert own == callbacks_before


def test_trace_files_summary_readable_and_steps_apart(tmp_path, monkeypatch):
    import json

    from benchmarks.step_trace import write_trace

    trace = StepTrace(lambda: dict(captures=0, gaussians=1, pool_built_at=0, pool_key=None, downscale=1))
    for step in range(3):
        trace.before_step(step)
        trace.after_step(step)
    monkeypatch.setenv("SEMSPLAT_COMMIT", "abc1234")
    write_trace(tmp_path, "x", dict(device="cpu", scene="s", method="semsplat"), trace.summary())
    summary = json.loads((tmp_path / "step_trace_x.json").read_text())
    steps_text = (tmp_path / "step_trace_x_steps.json").read_text()
    steps = json.loads(steps_text)
    assert summary["commit"] == steps["commit"] == "abc1234" and summary["steps"] == 3
    assert "per_step" not in summary and "per_step_tags" not in summary
    assert len(steps["per_step"]["inside_ms"]) == 3 and len(steps["per_step_tags"]) == 3
    assert "\n" not in steps_text.strip()  # one line: 7000 steps stay small
