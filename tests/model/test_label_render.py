"""The evaluation path (render_labels, render_semantics, render_semantic_features; issue #13 item 3) renders the
semantic channels alone in one raster pass and gives what the general render (get_outputs, RGB + semantics +
label support + depth) gives: the same features, the same logits and the same class ids."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
import torch
from torch import nn

import semsplat_ns.model.semsplat_model as semsplat_model
from semsplat_ns.model.semsplat_model import SemSplatModelConfig, head_logits, intrinsics, world_to_camera
from tests.cpu_training import cpu_trainer_config, train

STEPS = 6
"""Training steps before the renders: SH degree 2 by then (interval 2), so the general path evaluates SH."""


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, demo_town):
    """A CPU trainer after a few steps at full resolution, with a bilateral grid (RGB only)."""
    config = cpu_trainer_config(demo_town(), tmp_path_factory.mktemp("label_render"), steps=STEPS, timestamp="lr")
    model_cfg = config.pipeline.model
    assert isinstance(model_cfg, SemSplatModelConfig)
    model_cfg.num_random = 800
    model_cfg.num_downscales = 0
    model_cfg.sh_degree_interval = 2
    model_cfg.use_bilateral_grid = True
    trainer = train(config, STEPS)  # saves config.yml and a checkpoint (for label_path_timing's command)
    model = trainer.pipeline.model
    with torch.no_grad():  # a few steps leave one class everywhere: spread the features so that labels vary
        model.semantic_features.mul_(30.0)
    model.eval()
    return trainer


def _views(trainer) -> List:
    """The evaluation cameras as semsplat-eval gets them (on the model's device)."""
    return [camera for camera, _ in trainer.pipeline.datamanager.fixed_indices_eval_dataloader]


@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
def test_label_path_equals_the_general_render(trainer, rasterize_mode: str, monkeypatch):
    model = trainer.pipeline.model
    assert model.step >= 4, "SH degree > 0 in the general render"
    monkeypatch.setattr(model.config, "rasterize_mode", rasterize_mode)
    views = _views(trainer)
    assert views
    classes_seen = set()
    for camera in views:
        general = model.get_outputs_for_camera(camera)  # RGB + features + label support + depth, one pass
        features = model.render_semantic_features(camera)  # [H, W, S]
        logits = model.render_semantics(camera)  # [H, W, C]
        labels = model.render_labels(camera)  # [H, W]
        H, W = int(camera.height), int(camera.width)
        assert features.shape == (H, W, model.config.semantic_dim)
        assert logits.shape == (H, W, model.num_classes) and labels.shape == (H, W)
        assert labels.dtype == torch.long and labels.device == model.device
        # alpha blending treats each channel on its own: the features do not depend on the other channels
        torch.testing.assert_close(features, general["semantic_features"], rtol=0, atol=1e-6)
        torch.testing.assert_close(logits, general["semantic_logits"], rtol=1e-5, atol=1e-5)
        assert torch.equal(labels, general["semantic_logits"].argmax(dim=-1))
        assert torch.equal(labels, logits.argmax(dim=-1))
        classes_seen.update(labels.unique().tolist())
    assert len(classes_seen) > 1, "a test that tells labels apart"


def test_label_path_is_one_pass_of_the_feature_channels(trainer, monkeypatch):
    """One rasterization call with the S feature channels only: no colours, SH, label support or depth."""
    model = trainer.pipeline.model
    calls: List[Dict[str, Any]] = []
    rasterize = semsplat_model.rasterization

    def recording(**kwargs):
        calls.append(kwargs)
        return rasterize(**kwargs)

    monkeypatch.setattr(semsplat_model, "rasterization", recording)
    camera = _views(trainer)[0]
    model.render_labels(camera)
    assert len(calls) == 1
    (call,) = calls
    assert call["colors"].shape == (model.num_points, model.config.semantic_dim)
    assert call["render_mode"] == "RGB" and call.get("sh_degree") is None and call.get("backgrounds") is None


def test_label_path_in_training_mode_renders_as_in_evaluation(trainer):
    """Called on a training model (the viewer, a callback), the path renders the evaluation view at full
    resolution without autograd and leaves the model training."""
    model = trainer.pipeline.model
    camera = _views(trainer)[0]
    expected = model.render_labels(camera)  # [H, W]
    model.train()
    try:
        labels = model.render_labels(camera)
        logits = model.render_semantics(camera)
        assert model.training
    finally:
        model.eval()
    assert torch.equal(labels, expected)
    assert not logits.requires_grad and torch.is_inference(logits)


def test_camera_transforms_equal_nerfstudio(trainer):
    """The view matrix and intrinsics built on the device equal splatfacto's get_viewmat and nerfstudio's K."""
    from nerfstudio.models.splatfacto import get_viewmat

    from semsplat_ns.model.compat import renders_run_eagerly

    for camera in _views(trainer):
        with renders_run_eagerly():
            expected = get_viewmat(camera.camera_to_worlds)  # [1, 4, 4]
        assert torch.equal(world_to_camera(camera.camera_to_worlds), expected)
        assert torch.equal(intrinsics(camera), camera.get_intrinsics_matrices())
    poses = torch.cat([camera.camera_to_worlds for camera in _views(trainer)])  # [V, 3, 4]
    with renders_run_eagerly():
        assert torch.equal(world_to_camera(poses), get_viewmat(poses))


@pytest.mark.parametrize("hidden_dim", [64, 0])
def test_head_logits_equal_the_module(hidden_dim: int):
    torch.manual_seed(0)
    head = semsplat_model._transfer_head(16, hidden_dim, 11)
    features = torch.randn(4096, 16)  # [P, S]
    with torch.inference_mode():
        expected = head(features.reshape(64, 64, 16)).reshape(-1, 11)  # [P, C], as get_outputs calls it
        logits = head_logits(head, features)  # [P, C]
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(logits.argmax(dim=-1), expected.argmax(dim=-1))
    other = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 11))  # not the fused form: called as it is
    assert torch.equal(head_logits(other, features), other(features))


def test_label_path_timing_compares_both_paths(trainer):
    """The lead's before/after measurement (python -m semsplat_ns.eval.label_path_timing): both paths timed by the
    protocol on the same views, and their labels compared."""
    from semsplat_ns.eval.label_path_timing import compare_label_paths, main
    from semsplat_ns.eval.timing import PerViewTiming

    model = trainer.pipeline.model
    cameras = _views(trainer)
    result = compare_label_paths(model, cameras, repeats=2, timing=PerViewTiming(warmup_views=1))
    assert result["differing_pixels"] == 0 and result["views"] == len(cameras)
    assert result["pixels"] == sum(int(camera.height) * int(camera.width) for camera in cameras)
    for name in ("lean", "general"):
        assert len(result[name]["ms_per_view_runs"]) == 2 and result[name]["ms_per_view"] > 0
    assert not model.training
    config_path = trainer.config.get_base_dir() / "config.yml"
    out = config_path.parent / "label_path_timing.json"
    loaded = main(["--load-config", str(config_path), "--repeats", "1", "--out", str(out)])  # the run's checkpoint
    assert loaded["differing_pixels"] == 0 and loaded["views"] == len(cameras)
    assert json.loads(out.read_text()) == json.loads(json.dumps(loaded))  # the JSON alone, as printed
