"""The training step without splatfacto's host syncs gives splatfacto's losses and the same training (CPU).

``SemSplatModel.photometric_loss_dict`` stands in for ``SplatfactoModel.get_loss_dict`` (a device zero instead of a
host one, semsplat's SSIM module), and ``CappedDefaultStrategy._update_state`` for gsplat's (no boolean masks). The
dict is compared with splatfacto's own on one model, and a short training, densification included, with the one
that takes splatfacto's and gsplat's code paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.models.splatfacto import SplatfactoModel
from pytorch_msssim import SSIM as ReferenceSSIM

from semsplat_ns.model import semsplat_model
from semsplat_ns.model.semsplat_model import SemSplatModel
from semsplat_ns.model.ssim import SSIM
from semsplat_ns.model.strategy import CappedDefaultStrategy
from tests.cpu_training import DENSIFYING_EVERY_3, run_steps, seeded_trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

RESOLUTION = 33


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    return demo_town(n_views=10, resolution=RESOLUTION, n_labelled=2, seed=11)


@pytest.fixture(scope="module")
def trainer(scene, tmp_path_factory):
    trainer = seeded_trainer(scene, tmp_path_factory.mktemp("photometric"), 20, "photometric")
    run_steps(trainer, [0])  # the model's step and optimisers, as the trainer's callbacks set them
    return trainer


def test_the_model_scores_with_semsplats_ssim(trainer):
    model = trainer.pipeline.model
    assert isinstance(model.ssim, SSIM) and model.ssim.window.device == model.device
    assert not any(key.startswith("ssim.") for key in model.state_dict())  # checkpoints as splatfacto's


@pytest.mark.parametrize("scale_regularization", [False, True])
@pytest.mark.parametrize("step", [10, 11])
@pytest.mark.parametrize("masked", [False, True])
def test_loss_dict_equals_splatfactos(trainer, monkeypatch, step: int, scale_regularization: bool, masked: bool):
    model = trainer.pipeline.model
    monkeypatch.setattr(model, "step", step)
    monkeypatch.setattr(model.config, "use_scale_regularization", scale_regularization)
    monkeypatch.setattr(model.config, "max_gauss_ratio", 1.0)  # the random Gaussians are nearly round
    camera, batch = trainer.pipeline.datamanager.next_train(step)
    if masked:
        height, width = batch["image"].shape[:2]
        batch = {**batch, "mask": (torch.arange(width) % 3 != 0).float().expand(height, width)[..., None]}  # [H, W, 1]
    torch.manual_seed(step)  # the same random background in both renders
    outputs = model.get_outputs(camera)
    ours = model.photometric_loss_dict(outputs, batch)
    ssim = model.ssim  # swapped by hand: monkeypatch does not restore a submodule
    model.ssim = ReferenceSSIM(data_range=1.0, size_average=True, channel=3)
    try:
        theirs = SplatfactoModel.get_loss_dict(model, outputs, batch)
    finally:
        model.ssim = ssim
    assert ours.keys() == theirs.keys() >= {"main_loss", "scale_reg", "camera_opt_regularizer", "tv_loss"}
    for name, value in theirs.items():
        assert ours[name].shape == value.shape and ours[name].device == value.device, name
        torch.testing.assert_close(ours[name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert (float(ours["scale_reg"]) > 0.0) == (scale_regularization and step % 10 == 0)
    # the loss flows back through both SSIMs alike; one render each: splatfacto's compiled camera transform may
    # donate its buffers, and a graph that donates them cannot be walked back twice (retain_graph)
    model.zero_grad(set_to_none=True)
    ours["main_loss"].backward()
    our_gradient = model.gauss_params["features_dc"].grad.clone()  # [N, 3]
    model.zero_grad(set_to_none=True)
    model.ssim = ReferenceSSIM(data_range=1.0, size_average=True, channel=3)
    try:
        torch.manual_seed(step)
        SplatfactoModel.get_loss_dict(model, model.get_outputs(camera), batch)["main_loss"].backward()
    finally:
        model.ssim = ssim
    torch.testing.assert_close(our_gradient, model.gauss_params["features_dc"].grad, rtol=1e-5, atol=1e-9)
    model.zero_grad(set_to_none=True)


def test_loss_dict_out_of_training_has_no_training_terms(trainer):
    model = trainer.pipeline.model
    camera, batch = trainer.pipeline.datamanager.next_train(12)
    model.eval()
    try:
        with torch.no_grad():
            losses = model.photometric_loss_dict(model.get_outputs(camera), batch)
    finally:
        model.train()
    assert losses.keys() == {"main_loss", "scale_reg"}


STEPS = 8


def _train(scene: Path, output_dir: Path) -> Tuple[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor], int]:
    """STEPS steps with scale regularisation, densifying at steps 3 and 6; the losses, Gaussians and their count."""
    trainer = seeded_trainer(
        scene, output_dir, STEPS, "photometric", use_scale_regularization=True, **DENSIFYING_EVERY_3
    )
    model = trainer.pipeline.model
    model.strategy.pause_refine_after_reset = 0  # splatfacto's pause (views + refine_every) outlasts the run
    initial_count = model.num_points
    history = run_steps(trainer, range(STEPS))
    assert model.num_points != initial_count  # densification ran
    assert model.strategy.refine_scale2d_stop_iter > 0  # the 2D-scale state is kept
    gaussians = {name: value.detach().clone() for name, value in model.gauss_params.items()}
    return history, gaussians, model.num_points


def test_training_is_bit_for_bit_splatfactos_and_gsplats(scene, tmp_path_factory):
    ours = _train(scene, tmp_path_factory.mktemp("ours"))
    with pytest.MonkeyPatch.context() as patch:
        # splatfacto's loss dict with pytorch_msssim, gsplat's state update
        patch.setattr(
            SemSplatModel,
            "photometric_loss_dict",
            lambda self, outputs, batch: SplatfactoModel.get_loss_dict(self, outputs, batch),
        )
        patch.setattr(
            semsplat_model, "SSIM", lambda data_range, channel: ReferenceSSIM(data_range, True, channel=channel)
        )
        patch.setattr(CappedDefaultStrategy, "_update_state", DefaultStrategy._update_state)
        reference = _train(scene, tmp_path_factory.mktemp("reference"))
    (our_losses, our_gaussians, our_count), (their_losses, their_gaussians, their_count) = ours, reference
    assert our_count == their_count
    for step, (mine, theirs) in enumerate(zip(our_losses, their_losses)):
        assert mine.keys() == theirs.keys(), step
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), (step, name, mine[name], theirs[name])
    for name, value in our_gaussians.items():
        assert torch.equal(value, their_gaussians[name]), name
