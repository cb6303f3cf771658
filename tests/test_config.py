"""The registered methods: semsplat (the paper's schedule compressed to 7000 steps), semsplat-fast (compressed to
5000, its prior on smaller crops) and semsplat-30k (the paper's schedule as it is)."""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import entry_points

import pytest

from semsplat_ns.config import (
    FAST_PRIOR_CROP,
    FAST_PRIOR_LABELLED_ONLY_SHARE,
    FAST_STEPS,
    PAPER_STEPS,
    PRESET_STEPS,
    compress_schedule,
    semsplat_fast_trainer_config,
    semsplat_preset_config,
    semsplat_trainer_config,
)
from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.model.semsplat_model import SemSplatModelConfig
from semsplat_ns.pseudo.prior import labelled_only_steps
from semsplat_ns.pseudo.unet import UnetRecipe
from semsplat_ns.trainer import SemSplatTrainerConfig


def _methods():
    return {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}


@pytest.mark.parametrize("name", ["semsplat", "semsplat-fast", "semsplat-30k"])
def test_methods_registered_for_ns_train(name):
    methods = _methods()
    assert name in methods, f"{name} missing from the entry points: reinstall (pip install -e .)"
    spec = methods[name].load()
    assert spec.config.method_name == name
    assert isinstance(spec.config, SemSplatTrainerConfig)


def test_presets_compress_the_whole_schedule():
    paper, preset, fast = (
        semsplat_preset_config("semsplat-30k", PAPER_STEPS),
        semsplat_preset_config(),
        semsplat_fast_trainer_config(),
    )
    assert paper.max_num_iterations == PAPER_STEPS and preset.max_num_iterations == PRESET_STEPS == 7000
    ratio = PRESET_STEPS / PAPER_STEPS
    paper_model, preset_model = paper.pipeline.model, preset.pipeline.model
    assert isinstance(paper_model, SemSplatModelConfig) and isinstance(preset_model, SemSplatModelConfig)
    assert paper_model == semsplat_trainer_config().pipeline.model  # the 30k preset keeps the paper's schedule
    # densification ends at the same share of the run, before the run's end
    assert preset_model.stop_split_at / PRESET_STEPS == pytest.approx(paper_model.stop_split_at / PAPER_STEPS, abs=1e-3)
    assert preset_model.resolution_schedule == round(paper_model.resolution_schedule * ratio)
    assert preset_model.refine_every == paper_model.refine_every  # the statistics window is kept
    assert preset_model.warmup_length >= preset_model.refine_every
    assert preset_model.agg3d_knn_refresh_every == paper_model.agg3d_knn_refresh_every  # as measured
    # every learning-rate decay ends with the run
    for config in (preset, fast):
        for name, group in config.optimizers.items():
            scheduler = group["scheduler"]
            if scheduler is not None:
                assert scheduler.max_steps == config.max_num_iterations, name
    # semsplat-fast: the paper's schedule compressed to fewer steps, and the preset's pseudo labels but for the prior's
    # smaller crops
    assert fast.max_num_iterations == FAST_STEPS < PRESET_STEPS
    unscheduled = semsplat_trainer_config().pipeline.model
    assert isinstance(unscheduled, SemSplatModelConfig)
    fast_model = compress_schedule(unscheduled, FAST_STEPS, paper_model.refine_every)
    assert fast.pipeline.model == fast_model and fast.steps_per_eval_image == FAST_STEPS // 10
    fast_datamanager, preset_datamanager = fast.pipeline.datamanager, preset.pipeline.datamanager
    assert isinstance(fast_datamanager, SemSplatDataManagerConfig)
    assert isinstance(preset_datamanager, SemSplatDataManagerConfig)
    assert preset_datamanager.pseudo_prior.unet.crop == UnetRecipe().crop == 256
    assert fast_datamanager.pseudo_prior.unet.crop == FAST_PRIOR_CROP == 192
    assert fast_datamanager.pseudo_prior.labelled_only_share == FAST_PRIOR_LABELLED_ONLY_SHARE == 1 / 3
    assert labelled_only_steps(fast_datamanager.pseudo_prior) == 2000  # as measured (a step count then)
    assert preset_datamanager.pseudo_prior.labelled_only_share == 0
    fast_prior = replace(
        fast_datamanager.pseudo_prior,
        unet=replace(fast_datamanager.pseudo_prior.unet, crop=256),
        labelled_only_share=0.0,
    )
    assert replace(fast_datamanager, pseudo_prior=fast_prior) == preset_datamanager
    # the pseudo-label weights and the thin-object settings the preset was measured with
    assert preset_model.pseudo_weight_by_label_support and preset_model.pseudo_weight_by_agreement
    datamanager = preset.pipeline.datamanager
    assert datamanager.pseudo_prior.unet.class_balance == "inverse-sqrt-frequency"  # type: ignore[attr-defined]
    assert datamanager.pseudo_reproject.color_tolerance == 3.0  # type: ignore[attr-defined]


def test_compress_schedule_keeps_steps_at_least_one_refinement():
    model = compress_schedule(SemSplatModelConfig(), 300, refine_every=100)
    assert model.warmup_length == 100 and model.sh_degree_interval == 100  # 5 and 10 would come before it
    with pytest.raises(AssertionError):
        compress_schedule(SemSplatModelConfig(), PAPER_STEPS + 1, refine_every=100)


def test_the_preset_makes_prior_pseudo_labels_and_weights_them_a_quarter():
    from semsplat_ns.config import PRIOR_PSEUDO_LOSS_WEIGHT
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig

    for config in (semsplat_trainer_config(), semsplat_fast_trainer_config()):
        datamanager, model = config.pipeline.datamanager, config.pipeline.model
        assert isinstance(datamanager, SemSplatDataManagerConfig) and isinstance(model, SemSplatModelConfig)
        assert datamanager.auto_pseudo_labels == "prior"
        assert model.pseudo_loss_weight == PRIOR_PSEUDO_LOSS_WEIGHT == 0.25
    # the datamanager alone (other pipelines, tests) makes nothing unless asked
    assert SemSplatDataManagerConfig().auto_pseudo_labels == "off"
