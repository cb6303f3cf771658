"""A training step without per-step host work gives the same training, bit for bit (CPU).

The lean step (issue #13): the datamanager hands out each view's prepared camera (:class:`TrainViewCamera`) instead of
nerfstudio's per-step copy; the model keeps the label maps and the photo it derives from a view's cached tensors
(:class:`DerivedTensors`) and the world-to-camera transform and camera position it derives from a view's pose, builds
L2D's neighbour offsets once, and takes the camera's position from its rigid transform (``camera_centres``) instead of
``torch.inverse``. The reference run takes the code paths before that change: nerfstudio's own ``next_train`` (its
cameras rescaled by 1 and back, their intrinsics built every step), splatfacto's own ``get_gt_img``, label maps,
transforms and offsets computed afresh every step, ``torch.inverse``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager
from nerfstudio.models.splatfacto import SplatfactoModel
from PIL import Image

from semsplat_ns.data.datamanager import SemSplatDataManager, SemSplatDataManagerConfig, TrainViewCamera
from semsplat_ns.model import losses, semsplat_model
from semsplat_ns.model.semsplat_model import SemSplatModel, SemSplatModelConfig
from semsplat_ns.model.step_cache import DerivedTensors
from semsplat_ns.pseudo.store import confidence_path
from tests.cpu_training import cpu_trainer_config, run_steps

STEPS = 14
RESOLUTION = 33  # odd: a downscaled render's size floors, which splatfacto's rescale round trip must not keep


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    """A small town whose unlabelled views have pseudo labels, boundary masks and confidence maps."""
    scene = demo_town(n_views=10, resolution=RESOLUTION, n_labelled=2, seed=11, writable=True)
    labelled = {path.stem for path in (scene / "train" / "rgb").glob("*.png")}
    for folder in ("pseudo", "boundary", "confidence"):
        (scene / "train" / folder).mkdir(exist_ok=True)
    for photo in sorted((scene / "train" / "color").iterdir()):
        if photo.stem in labelled:
            continue
        label = np.asarray(Image.open(scene / "gt_all" / f"{photo.stem}.png"))[..., 0]  # [H, W]
        pseudo = label.copy()
        pseudo[: label.shape[0] // 4] = 255
        boundary = np.zeros_like(label)
        boundary[:, : label.shape[1] // 2] = 255
        confidence = np.broadcast_to((np.arange(label.shape[1]) * 7 % 256).astype(np.uint8), label.shape).copy()
        Image.fromarray(pseudo).save(scene / "train" / "pseudo" / f"{photo.stem}.png")
        Image.fromarray(boundary).save(scene / "train" / "boundary" / f"{photo.stem}.png")
        Image.fromarray(confidence).save(confidence_path(scene, photo.stem))
    return scene


def _train(scene: Path, output_dir: Path) -> Tuple[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor], object]:
    """Trains STEPS steps from fixed seeds; returns the loss dicts, the final Gaussians and the trainer."""
    config = cpu_trainer_config(scene, output_dir, STEPS, "lean")
    model_config = config.pipeline.model
    assert isinstance(model_config, SemSplatModelConfig)
    # every step-dependent path within a few steps: two downscale levels, densification, a kNN refresh
    model_config.num_downscales = 1
    model_config.resolution_schedule = 6
    model_config.warmup_length = 4
    model_config.refine_every = 4
    model_config.agg2d_num_samples = 64
    model_config.agg3d_num_samples = 64
    model_config.agg3d_knn_refresh_every = 5
    model_config.class_balance = "inverse-sqrt-frequency"
    model_config.num_random = 3000  # the scene triangulates no seed points: a few random Gaussians keep it quick
    datamanager_config = config.pipeline.datamanager
    assert isinstance(datamanager_config, SemSplatDataManagerConfig)
    datamanager_config.labelled_to_other_ratio = 2  # labelled and pseudo-labelled views in few steps
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    history = run_steps(trainer, range(STEPS))
    model = trainer.pipeline.model
    gaussians = {name: value.detach().clone() for name, value in model.gauss_params.items()}
    return [{name: value.detach().clone() for name, value in step.items()} for step in history], gaussians, trainer


@pytest.fixture(scope="module")
def lean_and_reference(scene, tmp_path_factory):
    threads = torch.get_num_threads()
    # one thread: with more, CPU kernels' sums split between threads make two runs of the same code differ in
    # the last bits (measured: two identical runs on 2 threads parted at step 1)
    torch.set_num_threads(1)
    try:
        return _lean_and_reference(scene, tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _lean_and_reference(scene, tmp_path_factory):
    lean = _train(scene, tmp_path_factory.mktemp("lean"))
    with pytest.MonkeyPatch.context() as patch:
        # the code paths before the lean step
        patch.setattr(SemSplatDataManager, "next_train", FullImageDatamanager.next_train)
        patch.setattr(SemSplatModel, "get_gt_img", SplatfactoModel.get_gt_img)
        patch.setattr(DerivedTensors, "get", lambda self, source, key, derive: derive(source))
        patch.setattr(losses, "_offset_tables", losses._offset_tables.__wrapped__)
        patch.setattr(semsplat_model, "camera_centres", lambda viewmats: torch.inverse(viewmats)[:, :3, 3])
        reference = _train(scene, tmp_path_factory.mktemp("reference"))
    return lean, reference


def test_lean_step_took_its_own_paths(lean_and_reference):
    (_, _, lean_trainer), (_, _, reference_trainer) = lean_and_reference
    datamanager, model = lean_trainer.pipeline.datamanager, lean_trainer.pipeline.model
    assert datamanager._train_view_cameras and all(
        isinstance(camera, TrainViewCamera) for camera in datamanager._train_view_cameras.values()
    )
    # label maps were kept at the downscaled size (full-size maps are their own source and not kept)
    assert len(model._step_label_maps) > 0 and len(model._step_gt_images) == 1
    # one transform and camera position per view drawn, kept from its first draw
    drawn = len(datamanager._train_view_cameras)
    assert len(model._step_viewmats) == len(model._step_camera_centres) == drawn > 0
    assert not reference_trainer.pipeline.datamanager.__dict__.get("_train_view_cameras")


def test_lean_step_trains_bit_for_bit_as_before(lean_and_reference):
    (lean_losses, lean_gaussians, _), (reference_losses, reference_gaussians, _) = lean_and_reference
    assert len(lean_losses) == len(reference_losses) == STEPS
    for step, (lean, reference) in enumerate(zip(lean_losses, reference_losses)):
        assert lean.keys() == reference.keys(), step
        for name in lean:
            assert torch.equal(lean[name], reference[name]), (step, name, lean[name], reference[name])
    assert {"semantic_loss", "pseudo_loss", "agg2d_loss", "agg3d_loss"} <= set(lean_losses[-1])
    assert any(float(step["pseudo_loss"]) > 0 for step in lean_losses)  # pseudo-labelled views were trained on
    assert lean_gaussians.keys() == reference_gaussians.keys()
    for name, value in lean_gaussians.items():
        assert torch.equal(value, reference_gaussians[name]), name


@pytest.mark.parametrize("benchmark", [True, False])
def test_ground_truth_downscaling_runs_without_cudnn_timing_and_restores_the_flag(monkeypatch, benchmark):
    from semsplat_ns.model.compat import cudnn_benchmark_off

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", benchmark)
    with cudnn_benchmark_off():
        assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.benchmark is benchmark
    with pytest.raises(RuntimeError), cudnn_benchmark_off():
        raise RuntimeError("a failed downscale")
    assert torch.backends.cudnn.benchmark is benchmark
