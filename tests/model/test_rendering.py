"""The model's render goes through splatfacto's own get_outputs: its steps (bilateral grid, crop box)
apply to semsplat, and the semantic channels come from the same rasterization call."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from semsplat_ns.model.rasterize import spherical_harmonics
from semsplat_ns.model.semsplat_model import SemSplatModelConfig, camera_centres, world_to_camera
from tests.cpu_training import cpu_trainer_config, run_steps


@pytest.fixture(scope="module")
def grid_trainer(tmp_path_factory, demo_town):
    """A set-up (one step trained) CPU trainer with a bilateral grid, black background, full resolution."""
    config = cpu_trainer_config(demo_town(), tmp_path_factory.mktemp("render"), steps=10, timestamp="render")
    model_cfg = config.pipeline.model
    assert isinstance(model_cfg, SemSplatModelConfig)
    model_cfg.use_bilateral_grid = True
    model_cfg.background_color = "black"  # the training background is random otherwise
    model_cfg.num_downscales = 0  # training renders at full resolution, like evaluation
    model_cfg.num_random = 800
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    run_steps(trainer, [0])  # sets the model's step and optimisers as the trainer's callbacks do
    return trainer


def test_bilateral_grid_changes_the_training_render(grid_trainer):
    model = grid_trainer.pipeline.model
    camera, _ = grid_trainer.pipeline.datamanager.next_train(1)
    cam_idx = camera.metadata["cam_idx"]
    model.eval()
    with torch.no_grad():
        plain = model.get_outputs(camera)  # splatfacto applies the grid in training only
    model.train()
    try:
        identity = model.get_outputs(camera)
        assert torch.allclose(identity["rgb"], plain["rgb"], atol=1e-5), "a fresh grid is the identity"
        with torch.no_grad():
            model.bil_grids.grids[cam_idx] *= 0.5  # affine colour transform 0.5 * I, no offset
        halved = model.get_outputs(camera)
        assert torch.allclose(halved["rgb"], 0.5 * plain["rgb"], atol=1e-5)
        # only the colour goes through the grid; the semantic channels of the same pass do not
        assert torch.allclose(halved["semantic_logits"], plain["semantic_logits"], atol=1e-5)
        model.zero_grad(set_to_none=True)
        halved["rgb"].sum().backward()
        grad = model.bil_grids.grids.grad
        assert grad is not None and grad[cam_idx].abs().sum() > 0, "the grid is trained through the render"
        assert model.gauss_params["means"].grad is not None
    finally:
        with torch.no_grad():
            model.bil_grids.grids[cam_idx] *= 2.0
        model.zero_grad(set_to_none=True)


def test_crop_box_renders_the_semantics_of_the_kept_gaussians(grid_trainer):
    from nerfstudio.data.scene_box import OrientedBox

    model = grid_trainer.pipeline.model
    camera = grid_trainer.pipeline.datamanager.eval_dataset.cameras[0:1]
    H, W = int(camera.height), int(camera.width)
    model.eval()
    full = model.get_outputs_for_camera(camera)
    centre = model.means.detach().median(dim=0).values  # [3]
    half = OrientedBox(R=torch.eye(3), T=centre, S=torch.full((3,), 0.5))
    kept = int(half.within(model.means).sum())
    assert 0 < kept < model.num_points
    cropped = model.get_outputs_for_camera(camera, obb_box=half)
    assert cropped["semantic_logits"].shape == full["semantic_logits"].shape == (H, W, model.num_classes)
    assert not torch.allclose(cropped["semantic_features"], full["semantic_features"])
    empty = OrientedBox(R=torch.eye(3), T=torch.full((3,), 100.0), S=torch.full((3,), 0.1))
    nothing = model.get_outputs_for_camera(camera, obb_box=empty)
    assert torch.equal(nothing["semantic_features"], torch.zeros(H, W, model.config.semantic_dim))
    assert nothing["semantics_colormap"].shape == (H, W, 3)
    model.set_crop(None)
    model.train()


def test_renders_outside_training_compile_nothing(grid_trainer):
    """Viewer, ns-render and evaluation renders run splatfacto's compiled camera transform eagerly: compiled in
    the viewer's render thread, a camera move during compilation stopped the viewer (compat.renders_run_eagerly).
    """
    from torch._dynamo.utils import counters

    model = grid_trainer.pipeline.model
    camera = grid_trainer.pipeline.datamanager.eval_dataset.cameras[0:1]
    model.eval()
    torch._dynamo.reset()
    counters.clear()
    try:
        outputs = model.get_outputs_for_camera(camera)
        labels = model.render_labels(camera)
        assert not counters["frames"], dict(counters["frames"])
        assert torch.equal(labels, outputs["semantic_logits"].argmax(dim=-1))
    finally:
        model.train()


def test_splatfacto_rasterization_override_is_per_thread(monkeypatch):
    import nerfstudio.models.splatfacto as splatfacto

    from semsplat_ns.model.splatfacto_raster import install, rasterization_override

    def tagged(source: str) -> Any:
        return lambda **kwargs: (source, kwargs["tag"])

    install()
    call = vars(splatfacto)["rasterization"]  # what splatfacto's get_outputs calls
    monkeypatch.setattr(call, "original", tagged("gsplat"))
    seen = {}
    with rasterization_override(tagged("override")):
        seen["here"] = call(tag=1)
        other = threading.Thread(target=lambda: seen.setdefault("other thread", call(tag=2)))
        other.start()
        other.join()
    seen["after"] = call(tag=3)
    install()  # idempotent: still the same forwarder
    assert vars(splatfacto)["rasterization"] is call
    assert seen == {"here": ("override", 1), "other thread": ("gsplat", 2), "after": ("gsplat", 3)}


def test_splatfactos_camera_transform_is_forwarded_to_the_eager_world_to_camera(grid_trainer):
    """Within the model's renders splatfacto's compiled ``get_viewmat`` is replaced by ``world_to_camera``: the same
    values as splatfacto's own (run eagerly), and a training step compiles nothing."""
    import nerfstudio.models.splatfacto as splatfacto
    from torch._dynamo.utils import counters

    from semsplat_ns.model.compat import renders_run_eagerly
    from semsplat_ns.model.splatfacto_raster import install, viewmat_override

    install()
    forwarder = vars(splatfacto)["get_viewmat"]
    generator = torch.Generator().manual_seed(1)
    poses = torch.randn(3, 3, 4, generator=generator)  # [C, 3, 4]
    poses[:, :, :3] = torch.linalg.qr(poses[:, :, :3]).Q
    with renders_run_eagerly():
        theirs = forwarder.original(poses)  # [C, 4, 4]
        assert torch.equal(forwarder(poses), theirs)  # no override: splatfacto's own
    marker = torch.zeros(3, 4, 4)
    with viewmat_override(lambda c2w: marker):
        assert forwarder(poses) is marker
    assert torch.equal(world_to_camera(poses), theirs)

    model = grid_trainer.pipeline.model
    camera, batch = grid_trainer.pipeline.datamanager.next_train(0)
    torch._dynamo.reset()
    counters.clear()
    outputs = model.get_outputs(camera)
    model.get_loss_dict(outputs, batch)
    assert not counters["frames"], dict(counters["frames"])
    model.zero_grad(set_to_none=True)


def test_camera_centres_are_the_inverse_transforms_translations_and_give_gsplats_sh_colours():
    """The camera position of a rigid world-to-camera transform, -R^T t, is what gsplat's SH path reads from
    ``torch.inverse``; the degree-3 view colours of random Gaussians match up to rounding."""
    generator = torch.Generator().manual_seed(0)
    rotations = torch.linalg.qr(torch.randn(4, 3, 3, generator=generator)).Q  # [C, 3, 3] orthonormal
    viewmats = torch.eye(4).repeat(4, 1, 1)  # [C, 4, 4]
    viewmats[:, :3, :3] = rotations
    viewmats[:, :3, 3] = torch.randn(4, 3, generator=generator) * 3
    expected = torch.inverse(viewmats)[:, :3, 3]  # [C, 3]
    assert torch.allclose(camera_centres(viewmats), expected, atol=1e-5)

    means = torch.randn(500, 3, generator=generator)  # [N, 3]
    coefficients = torch.randn(500, 16, 3, generator=generator) * 0.3  # [N, K, 3] degree 3
    for viewmat, centre in zip(viewmats, expected):
        ours = spherical_harmonics(3, means - camera_centres(viewmat[None])[0], coefficients)  # [N, 3]
        theirs = spherical_harmonics(3, means - centre, coefficients)  # [N, 3]
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert not torch.allclose(ours, spherical_harmonics(3, means, coefficients), atol=1e-2)  # the view matters
