"""The registered methods: semsplat (the paper's 30k schedule) and semsplat-fast (the same, compressed)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from semsplat_ns.config import (
    FAST_PRIOR_STEPS,
    FAST_STEPS,
    PAPER_STEPS,
    compress_schedule,
    semsplat_fast_trainer_config,
    semsplat_trainer_config,
)
from semsplat_ns.model.semsplat_model import SemSplatModelConfig
from semsplat_ns.trainer import SemSplatTrainerConfig


def _methods():
    return {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}


@pytest.mark.parametrize("name", ["semsplat", "semsplat-fast"])
def test_methods_registered_for_ns_train(name):
    methods = _methods()
    assert name in methods, f"{name} missing from the entry points: reinstall (pip install -e .)"
    spec = methods[name].load()
    assert spec.config.method_name == name
    assert isinstance(spec.config, SemSplatTrainerConfig)


def test_fast_preset_compresses_the_whole_schedule():
    paper, fast = semsplat_trainer_config(), semsplat_fast_trainer_config()
    assert paper.max_num_iterations == PAPER_STEPS and fast.max_num_iterations == FAST_STEPS
    ratio = FAST_STEPS / PAPER_STEPS
    paper_model, fast_model = paper.pipeline.model, fast.pipeline.model
    assert isinstance(paper_model, SemSplatModelConfig) and isinstance(fast_model, SemSplatModelConfig)
    # densification ends at the same share of the run, before the run's end
    assert fast_model.stop_split_at / FAST_STEPS == pytest.approx(paper_model.stop_split_at / PAPER_STEPS, abs=1e-3)
    assert fast_model.resolution_schedule == round(paper_model.resolution_schedule * ratio)
    assert fast_model.refine_every == paper_model.refine_every  # the statistics window is kept
    assert fast_model.warmup_length >= fast_model.refine_every
    # every learning-rate decay ends with the run
    for name, group in fast.optimizers.items():
        scheduler = group["scheduler"]
        if scheduler is not None:
            assert scheduler.max_steps == FAST_STEPS, name
    assert fast.pipeline.datamanager.pseudo_prior.unet.steps == FAST_PRIOR_STEPS  # type: ignore[attr-defined]
    assert paper.pipeline.datamanager.pseudo_prior.unet.steps > FAST_PRIOR_STEPS  # type: ignore[attr-defined]
    # the pseudo-label weights each preset was measured with
    assert paper_model.pseudo_weight_by_label_support and fast_model.pseudo_weight_by_label_support
    assert paper_model.pseudo_weight_by_agreement and not fast_model.pseudo_weight_by_agreement


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
