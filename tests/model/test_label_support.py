"""Label support (issue #12, item 2): per-Gaussian supervision by the labelled views, measured in the
training render, kept through densification and checkpoints, rendered for the viewer, and used (when
asked) to weight the pseudo loss."""

from __future__ import annotations

import math
import random
from typing import Dict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.model import losses as L
from semsplat_ns.model.label_support import (
    blending_weight_probe,
    normalised_support,
    support_from_probe,
    unit_gradient_on,
)
from semsplat_ns.model.rasterize import rasterization
from semsplat_ns.model.semsplat_model import SemSplatModel, SemSplatModelConfig
from tests.cpu_training import cpu_trainer_config, run_steps

SIZE = 24


def _gaussians(count: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random Gaussians in front of an identity camera, with a pinhole of SIZE x SIZE pixels."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.rand(count, 3, generator=generator) * torch.tensor([1.6, 1.6, 1.0]) + torch.tensor([-0.8, -0.8, 2.5])
    return dict(
        means=means,  # [N, 3]
        quats=torch.randn(count, 4, generator=generator),  # [N, 4]
        scales=torch.rand(count, 3, generator=generator) * 0.15 + 0.05,  # [N, 3]
        opacities=torch.rand(count, generator=generator) * 0.8 + 0.1,  # [N]
        rgb=torch.rand(count, 3, generator=generator),  # [N, 3]
    )


def _render(scene: Dict[str, torch.Tensor], colors: torch.Tensor):
    Ks = torch.tensor([[[20.0, 0.0, SIZE / 2], [0.0, 20.0, SIZE / 2], [0.0, 0.0, 1.0]]])  # [1, 3, 3]
    return rasterization(
        scene["means"],
        scene["quats"],
        scene["scales"],
        scene["opacities"],
        colors,
        viewmats=torch.eye(4)[None],
        Ks=Ks,
        width=SIZE,
        height=SIZE,
        packed=False,  # as splatfacto renders: info tensors are [C, N, ...]
    )


def test_probe_gradient_is_the_summed_blending_weight_and_changes_no_other_gradient():
    count = 30
    scene = {name: value.requires_grad_() for name, value in _gaussians(count).items()}
    # reference: one channel per Gaussian renders its blending weight w_i(p) at every pixel
    with torch.no_grad():
        weights, _, _ = _render(scene, torch.eye(count))  # [1, H, W, N]
    summed = weights.sum(dim=(0, 1, 2))  # [N]
    assert (summed > 0).sum() > count // 2

    def gradients(with_probe: bool):
        for value in scene.values():
            value.grad = None
        probe = blending_weight_probe(count, torch.device("cpu"))  # [N, 1]
        colors = torch.cat([scene["rgb"], probe], dim=-1) if with_probe else scene["rgb"]  # [N, 3 (+1)]
        render, alphas, info = _render(scene, colors)
        if with_probe:
            unit_gradient_on(render, 3)
        target = torch.linspace(0, 1, 3)  # [3]
        ((render[..., :3] - target) ** 2).sum().add(alphas.sum()).backward()
        return probe.grad, {name: value.grad.clone() for name, value in scene.items()}, info  # type: ignore

    probe_grad, with_probe, info = gradients(True)
    _, without_probe, _ = gradients(False)
    assert probe_grad is not None
    assert torch.allclose(probe_grad[:, 0], summed, atol=1e-4)
    for name, grad in without_probe.items():
        assert torch.allclose(with_probe[name], grad, atol=1e-6), f"the probe changed the gradient of {name}"
    support = support_from_probe(probe_grad[:, 0], info["conics"][0], info["radii"][0], info["opacities"][0])  # [N]
    assert (support >= 0).all() and (support <= 1).all()
    assert (support[info["radii"][0] == 0] == 0).all()


def _support(scene: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Support [N] of the scene's Gaussians in the SIZE x SIZE identity view, through the probe."""
    probe = blending_weight_probe(scene["means"].shape[0], torch.device("cpu"))
    render, _, info = _render(scene, probe)
    unit_gradient_on(render, 0)
    render.sum().backward()
    assert probe.grad is not None
    return support_from_probe(probe.grad[:, 0], info["conics"][0], info["radii"][0], info["opacities"][0])


@pytest.mark.parametrize("opacity", [0.9, 0.6, 0.15])
def test_support_of_a_lone_gaussian_is_one_whatever_its_opacity(opacity):
    """Unoccluded and well inside the image, the labelled view sees all of it: support 1 (up to the share of
    its kernel that the rasterizer cuts off below alpha 1/255 and beyond 3 sigma)."""
    scene = dict(
        means=torch.tensor([[0.0, 0.0, 3.0]]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        scales=torch.tensor([[0.12, 0.08, 0.1]]),
        opacities=torch.tensor([opacity]),
    )
    assert _support(scene).item() == pytest.approx(1.0, abs=0.05)


def test_support_of_an_occluded_gaussian_is_what_shows_through():
    """Behind a wide Gaussian of opacity 0.9 (alpha clamped at 0.99 by the rasterizer), a small one shows
    through about 1 - 0.9 at its centre; beside the occluder, it is seen whole."""
    occluder = dict(means=[0.0, 0.0, 2.0], scales=[0.3, 0.3, 0.1], opacity=0.9)
    hidden = dict(means=[0.0, 0.0, 3.0], scales=[0.05, 0.05, 0.05], opacity=0.8)
    beside = dict(means=[1.0, 0.0, 3.0], scales=[0.05, 0.05, 0.05], opacity=0.8)
    parts = [occluder, hidden, beside]
    scene = dict(
        means=torch.tensor([part["means"] for part in parts]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3),
        scales=torch.tensor([part["scales"] for part in parts]),
        opacities=torch.tensor([part["opacity"] for part in parts]),
    )
    support = _support(scene)  # [3]
    assert support[0].item() == pytest.approx(1.0, abs=0.05)
    assert 0.05 < support[1].item() < 0.2
    assert support[2].item() > 0.85


def test_support_map_is_the_alpha_normalised_blend():
    blended = torch.tensor([[[0.3], [0.0], [0.5]]])  # [1, 3, 1]
    alpha = torch.tensor([[[0.6], [0.0], [0.5]]])  # [1, 3, 1]
    assert torch.allclose(normalised_support(blended, alpha), torch.tensor([[[0.5], [0.0], [1.0]]]))


def test_weighted_cross_entropy():
    logits = torch.randn(4, 5, 3)  # [H, W, C]
    labels = torch.randint(0, 3, (4, 5))  # [H, W]
    labels[0] = L.IGNORE_INDEX
    plain = L.semantic_cross_entropy(logits, labels)
    assert torch.allclose(L.semantic_cross_entropy(logits, labels, pixel_weights=torch.ones(4, 5)), plain)
    weights = torch.rand(4, 5)  # [H, W]
    per_pixel = F.cross_entropy(logits[1:].reshape(-1, 3), labels[1:].reshape(-1), reduction="none")  # [15]
    expected = (per_pixel * weights[1:].reshape(-1)).mean()
    assert torch.allclose(L.semantic_cross_entropy(logits, labels, pixel_weights=weights), expected)
    assert L.semantic_cross_entropy(logits, labels, pixel_weights=torch.zeros(4, 5)) == 0


# -- in the model ---------------------------------------------------------------------------------
STEPS = 14
"""Densification (paused for 8 training views + refine_every = 10 steps) runs at steps 10 and 12."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_town):
    """A short CPU run drawing a labelled view every other step; the count per step is recorded."""
    scene = demo_town(n_views=10, resolution=32, n_labelled=2, test_every=5)
    config = cpu_trainer_config(scene, tmp_path_factory.mktemp("support"), STEPS, "support")
    assert isinstance(config.pipeline.datamanager, SemSplatDataManagerConfig)
    config.pipeline.datamanager.labelled_to_other_ratio = 1  # a labelled view every other step
    model_cfg = config.pipeline.model
    assert isinstance(model_cfg, SemSplatModelConfig)
    model_cfg.num_random = 500
    model_cfg.warmup_length = 2
    model_cfg.refine_every = 2
    model_cfg.reset_alpha_every = 1000
    model_cfg.densify_grad_thresh = 0.0002
    model_cfg.num_downscales = 0
    model_cfg.agg2d_num_samples = 128
    model_cfg.agg3d_num_samples = 128
    config.set_timestamp()
    config.save_config()
    # Seeded as ns-train seeds (machine.seed): the random initial Gaussians and view draws must not depend
    # on which tests ran before in this process.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    counts = []
    run_steps(trainer, range(STEPS), lambda step, losses: counts.append(trainer.pipeline.model.num_points))
    trainer.save_checkpoint(STEPS - 1)
    return dict(trainer=trainer, config=config, counts=counts)


def test_label_support_is_measured_and_kept_through_densification(trained):
    model = trained["trainer"].pipeline.model
    assert len(set(trained["counts"])) > 1, "densification changed the count"
    table = model.strategy_state["label_support"]
    assert table.shape == (model.num_points, 2), "one column per labelled view, one row per Gaussian"
    support = model.label_support
    assert support.shape == (model.num_points,)
    assert (support >= 0).all() and (support <= 1).all()
    assert (support > 0.05).sum() > 10, "the labelled views support some Gaussians"
    assert (table > 0).any(dim=0).all(), "both labelled views were measured"


def test_label_support_is_a_viewer_output_and_survives_a_checkpoint(trained):
    from nerfstudio.utils.eval_utils import eval_setup

    model = trained["trainer"].pipeline.model
    camera = trained["trainer"].pipeline.datamanager.eval_dataset.cameras[0:1]
    model.eval()
    outputs = model.get_outputs_for_camera(camera)
    model.train()
    rendered = outputs["label_support"]
    assert rendered.shape == (int(camera.height), int(camera.width), 1) and torch.is_floating_point(rendered)
    assert (rendered >= 0).all() and (rendered <= 1 + 1e-5).all() and rendered.max() > 0
    _, pipeline, _, _ = eval_setup(trained["config"].get_base_dir() / "config.yml", test_mode="test")
    loaded = pipeline.model
    assert isinstance(loaded, SemSplatModel)
    assert torch.equal(loaded.label_support, model.label_support)
    assert torch.allclose(loaded.get_outputs_for_camera(camera)["label_support"], rendered, atol=1e-6)


def test_pseudo_loss_is_weighted_by_support_and_confidence_only_when_asked(trained):
    model = trained["trainer"].pipeline.model
    datamanager = trained["trainer"].pipeline.datamanager
    camera, batch = next(
        (cam, data) for cam, data in (datamanager.next_train(0) for _ in range(20)) if "semantics" not in data
    )
    height, width = batch["image"].shape[:2]
    pseudo = torch.randint(0, model.num_classes, (height, width), dtype=torch.uint8)  # [H, W]
    confidence = torch.rand(height, width)  # [H, W]
    batch = {
        **batch,
        "pseudo_semantics": pseudo,
        "boundary_mask": torch.ones(height, width, dtype=torch.bool),
        "pseudo_confidence": confidence,
    }
    model.train()
    preset = model.config.pseudo_weight_by_label_support
    assert preset is True, "the semsplat preset weights pseudo labels by label support"
    agreement = model.config.pseudo_weight_by_agreement
    assert agreement is True, "the semsplat preset weights pseudo labels by the model's agreement"
    try:
        model.config.pseudo_weight_by_agreement = False  # this test checks the support weights alone
        model.config.pseudo_weight_by_label_support = False
        assert "label_support" not in model.get_outputs(camera), "switched off: no extra channel in training"
        plain = model.get_loss_dict(model.get_outputs(camera), batch)["pseudo_loss"]
        model.config.pseudo_weight_by_label_support = True
        outputs = model.get_outputs(camera)
        weighted = model.get_loss_dict(outputs, batch)["pseudo_loss"]
    finally:
        model.config.pseudo_weight_by_label_support = preset
        model.config.pseudo_weight_by_agreement = agreement
        model.zero_grad(set_to_none=True)
    support = outputs["label_support"][..., 0].detach()  # [H, W]
    assert support.max() > 0.01
    per_pixel = F.cross_entropy(
        outputs["semantic_logits"].reshape(-1, model.num_classes), pseudo.long().reshape(-1), reduction="none"
    )
    expected = model.config.pseudo_loss_weight * (per_pixel * ((1 - support) * confidence).reshape(-1)).mean()
    assert torch.allclose(weighted, expected, rtol=1e-4)
    assert weighted < plain * 0.9 and math.isfinite(float(plain))
