"""benchmarks/prior_speed.py on a tiny town (CPU): step-variant rows, the CUDA-only ones skipped with a reason,
stage times, and the pieces it is built from."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.prior_speed import (  # noqa: E402
    VARIANTS,
    PriorSpeedConfig,
    PriorSpeedError,
    main,
    time_steps,
    weights_difference,
)
from semsplat_ns.pseudo.prior import PriorSettings  # noqa: E402
from semsplat_ns.pseudo.unet import CropSampler, UnetRecipe, UnetTraining  # noqa: E402

TINY = PriorSettings(unet=UnetRecipe(steps=100, crop=32, width=4, levels=2))


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


def test_prior_speed_rows_for_every_variant_but_compiled_and_the_stages(demo_town, tmp_path):
    # 96 pixels: points triangulate, so depth and reprojection run as on a real scene.
    scene = demo_town(n_views=12, resolution=96, n_labelled=3, seed=0, writable=True)
    out = tmp_path / "rows.json"
    variants = tuple(name for name in VARIANTS if name != "compiled")  # compiling takes ~20 s on this CPU
    config = PriorSpeedConfig(
        scenes=(scene,),
        out=out,
        variants=variants,
        prior=TINY,
        warmup_steps=1,
        block_steps=2,
        blocks=3,
        check_steps=2,
        work=tmp_path,
    )
    rows = main(config)
    assert json.loads(out.read_text()) == rows
    by_variant = {row["variant"]: row for row in rows}
    assert set(by_variant) == set(variants) | {"stages"}
    for name in variants:
        row = by_variant[name]
        assert row["device"] == "cpu" and row["torch"] == torch.__version__ and row["commit"]
        if name.startswith("cuda-graph"):
            assert "needs CUDA" in row["skipped"] and "ms_per_step" not in row
            continue
        assert row["ms_per_step"] > 0 and len(row["ms_per_step_blocks"]) == 3 and row["steps"] == 6
        assert row["batch"] == 8 and row["crop"] == 32
        # On the CPU cuDNN's settings change nothing: every eager variant is the eager network.
        assert row["same_network_repeat"] is True and row["max_abs_diff_vs_eager"] == 0.0
    stages = by_variant["stages"]["stage_s"]
    for key in ("points", "depth", "read_photos", "reprojection", "prediction", "write"):
        assert stages[key] >= 0, key
    assert stages["points_cached"] is False  # this copy had no seed points yet
    assert by_variant["stages"]["views"] == len(list((scene / "train" / "color").iterdir()))
    assert not list(tmp_path.glob("prior_speed_*"))  # the timed files are gone
    assert not (scene / "train" / "pseudo").exists()  # nothing written into the scene but the seed points


def test_bad_settings_are_one_clear_error_before_any_work(tmp_path):
    cases = [
        (dict(variants=("eager", "fast")), "--variants: unknown fast"),
        (dict(blocks=0), "--blocks must be at least 1"),
        (dict(scenes=(tmp_path / "nowhere",)), "nowhere: scene folder does not exist"),
        (dict(prior=replace(TINY, unet=replace(TINY.unet, steps=1))), "--prior.steps"),
        # 2 steps cover the warm-up step and the timed block, not the profiled one
        (dict(prior=replace(TINY, unet=replace(TINY.unet, steps=2)), gpu_busy=True), r"\+ one block with --gpu-busy"),
    ]
    for changes, message in cases:
        quick = PriorSpeedConfig(
            scenes=(tmp_path,), out=tmp_path / "x.json", prior=TINY, warmup_steps=1, block_steps=1, blocks=1
        )
        config = replace(quick, **changes)
        with pytest.raises(PriorSpeedError, match=message):
            main(config)
    assert not (tmp_path / "x.json").exists()


def test_time_steps_counts_blocks_and_weights_difference_sees_a_change():
    generator = torch.Generator().manual_seed(0)
    photo = torch.randint(0, 256, (40, 40, 3), generator=generator, dtype=torch.uint8).numpy()
    label = torch.randint(0, 3, (40, 40), generator=generator, dtype=torch.uint8).numpy()
    pools = [(CropSampler([photo], [label], 16, 0.2, torch.device("cpu")), 2)]
    recipe = UnetRecipe(steps=20, crop=16, width=2, levels=2)
    training = UnetTraining(pools, 3, recipe, torch.device("cpu"))
    before = {k: v.clone() for k, v in training.model.state_dict().items()}
    timed = time_steps(training, warmup=1, block_steps=2, blocks=4)
    assert len(timed["ms_per_step_blocks"]) == 4 and timed["ms_per_step"] > 0 and timed["warmup_s"] > 0
    assert weights_difference(before, before) == 0.0
    assert weights_difference(before, training.model.state_dict()) > 0  # 9 steps moved the weights
    assert "gpu_busy_ms_per_step" not in timed

    # one more block under torch's profiler: its wall per step; the GPU's busy time needs CUDA
    profiled = time_steps(training, warmup=0, block_steps=2, blocks=1, gpu_busy=True)
    assert profiled["profiled_ms_per_step"] > 0 and profiled["gpu_busy_ms_per_step"] is None
    assert profiled["gpu_top_kernels"] == []  # no CUDA kernel on the CPU
    assert len(profiled["ms_per_step_blocks"]) == 1  # the profiled block is not one of the timed blocks
