"""The semantic datamanager: what each view yields (pseudo confidence too), the labelled : other draw ratio, label
downscaling, and the automatic prior pseudo labels (made, reused, rebuilt, kept)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pytest
import torch
from PIL import Image

from semsplat_ns.data import irt_io
from semsplat_ns.data.datamanager import (
    VIEW_LABELLED,
    VIEW_PSEUDO,
    VIEW_UNLABELLED,
    SemanticIRTDataset,
    SemSplatDataManagerConfig,
    TrainViewCamera,
)
from semsplat_ns.data.irt_dataparser import PSEUDO_LABEL_STAGE_PREFIX, STAGE_SECONDS_KEY, IRTDataParserConfig
from semsplat_ns.data.irt_io import IRTDataError
from semsplat_ns.geometry.visibility import ReprojectSettings
from semsplat_ns.pseudo.pipeline import PseudoLabelArgs, run
from semsplat_ns.pseudo.prior import PriorSettings
from semsplat_ns.pseudo.store import confidence_path
from semsplat_ns.pseudo.unet import UnetRecipe


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    scene = demo_town(n_views=30, resolution=32, n_labelled=3, seed=5, writable=True)
    labelled = {p.stem for p in (scene / "train" / "rgb").glob("*.png")}
    photos = sorted((scene / "train" / "color").iterdir())
    (scene / "train" / "pseudo").mkdir()
    (scene / "train" / "boundary").mkdir()
    (scene / "train" / "confidence").mkdir()
    # pseudo labels for all but the last two unlabelled views (those stay photo-only); a confidence map for
    # all but the first of them
    for number, photo in enumerate([p for p in photos if p.stem not in labelled][:-2]):
        label = np.asarray(Image.open(scene / "gt_all" / f"{photo.stem}.png"))[..., 0]
        Image.fromarray(label).save(scene / "train" / "pseudo" / f"{photo.stem}.png")
        boundary = np.zeros_like(label)
        boundary[:, :16] = 255
        Image.fromarray(boundary).save(scene / "train" / "boundary" / f"{photo.stem}.png")
        if number:
            Image.fromarray(_confidence_pattern(label.shape)).save(confidence_path(scene, photo.stem))
    return scene


def _confidence_pattern(shape) -> np.ndarray:
    """uint8 [H, W]: column index * 8, so every value from 0 to 248 occurs."""
    return np.broadcast_to((np.arange(shape[1]) * 8).astype(np.uint8), shape).copy()


def _datamanager(scene: Path, ratio: int = 8):
    config = SemSplatDataManagerConfig(
        dataparser=IRTDataParserConfig(data=scene, load_points=False), labelled_to_other_ratio=ratio
    )
    return config.setup(device="cpu")


def test_views_yield_their_semantic_maps(scene):
    dm = _datamanager(scene)
    kinds = dm.train_dataset.view_kinds
    assert kinds.count(VIEW_LABELLED) == 3 and kinds.count(VIEW_UNLABELLED) == 2
    assert kinds.count(VIEW_PSEUDO) == len(kinds) - 5
    for idx, kind in enumerate(kinds):
        data = dm.cached_train[idx]
        assert data["view_kind"] == kind
        H, W = data["image"].shape[:2]
        if kind == VIEW_LABELLED:
            assert data["semantics"].shape == (H, W) and "pseudo_semantics" not in data
            assert int(data["semantics"].max()) < 20
        elif kind == VIEW_PSEUDO:
            assert "semantics" not in data
            assert data["pseudo_semantics"].shape == (H, W)
            assert data["boundary_mask"].dtype == torch.bool and data["boundary_mask"][:, :16].all()
            assert not data["boundary_mask"][:, 16:].any()
        else:
            assert not any(k in data for k in ("semantics", "pseudo_semantics", "boundary_mask"))
    # every test view is labelled
    assert all("semantics" in data for data in dm.cached_eval)


def test_draw_order_is_one_labelled_per_eight_others_and_covers_every_view(scene):
    dm = _datamanager(scene, ratio=8)
    kinds = dm.train_dataset.view_kinds
    order = list(dm.train_unseen_cameras)  # the first pass, drawn at construction
    others = [i for i, k in enumerate(kinds) if k != VIEW_LABELLED]
    assert sorted(i for i in order if kinds[i] != VIEW_LABELLED) == others  # each other view once
    assert {i for i in order if kinds[i] == VIEW_LABELLED} <= {i for i, k in enumerate(kinds) if k == VIEW_LABELLED}
    # a labelled view opens every block of up to 8 others
    labelled_positions = [p for p, i in enumerate(order) if kinds[i] == VIEW_LABELLED]
    assert labelled_positions[0] == 0
    gaps = np.diff(labelled_positions + [len(order)]) - 1
    assert all(g == 8 for g in gaps[:-1]) and 1 <= gaps[-1] <= 8
    # next_train walks that order; the next pass is drawn afresh with the same rule
    first = [int(dm.next_train(step)[0].metadata["cam_idx"]) for step in range(len(order))]
    assert first == order
    assert sorted(i for i in dm.train_unseen_cameras if kinds[i] != VIEW_LABELLED) == others


def test_ratio_zero_falls_back_to_plain_random_order(scene):
    dm = _datamanager(scene, ratio=0)
    order = dm.sample_train_cameras()
    assert sorted(order) == list(range(len(dm.train_dataset)))


def test_next_train_draws_nerfstudios_views_with_prepared_cameras(scene):
    """The lean next_train (issue #13) hands out what nerfstudio's does: the same views in the same order, the same
    batch, and a camera whose values splatfacto reads (intrinsics and size at each downscale, pose) are nerfstudio's
    to the bit; splatfacto's rescale round trip on one step's camera leaves the prepared camera as it was."""
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager

    lean, reference = _datamanager(scene, ratio=3), _datamanager(scene, ratio=3)
    width = int(lean.train_dataset.cameras.width[0])
    for step in range(2 * len(lean.train_dataset)):  # two passes: every view drawn again from its prepared camera
        camera, batch = lean.next_train(step)
        expected_camera, expected_batch = FullImageDatamanager.next_train(reference, step)
        assert isinstance(camera, TrainViewCamera) and camera.metadata == expected_camera.metadata
        assert batch.keys() == expected_batch.keys()
        assert all(batch[key] is expected_batch[key] or torch.equal(batch[key], expected_batch[key]) for key in batch)
        assert torch.equal(camera.camera_to_worlds, expected_camera.camera_to_worlds)
        # splatfacto's round trip (down for the render, back after reading K and the size); 3 floors 32 to 10, back 30
        for factor in (4, 2, 1, 3):
            for cam in (camera, expected_camera):
                cam.rescale_output_resolution(1 / factor)
            assert torch.equal(camera.get_intrinsics_matrices().cpu(), expected_camera.get_intrinsics_matrices())
            assert (int(camera.width.item()), int(camera.height.item())) == (
                int(expected_camera.width.item()),
                int(expected_camera.height.item()),
            )
            for cam in (camera, expected_camera):
                cam.rescale_output_resolution(factor)
        assert camera.metadata is not None
        prepared = lean._train_view_cameras[camera.metadata["cam_idx"]]
        assert int(prepared.width.item()) == width  # the step's copy took the rescaling, not the prepared camera
    prepared = next(iter(lean._train_view_cameras.values()))
    # one intrinsics matrix per resolution, reused by later steps
    assert prepared.get_intrinsics_matrices() is prepared.for_step().get_intrinsics_matrices()


def test_labels_are_resized_nearest_with_the_images(scene):
    outputs = IRTDataParserConfig(data=scene, load_points=False).setup().get_dataparser_outputs("train")
    dataset = SemanticIRTDataset(outputs, scale_factor=0.5)
    idx = dataset.view_kinds.index(VIEW_LABELLED)
    data = dataset.get_data(idx)
    H, W = data["image"].shape[:2]
    assert data["semantics"].shape == (H, W) == (16, 16)
    full = np.asarray(Image.open(outputs.metadata["semantic_filenames"][idx]))[..., 0]
    # nearest sampling: every id in the small map exists in the full one (no averaged ids)
    assert set(np.unique(data["semantics"].numpy())) <= set(np.unique(full))


def test_pseudo_confidence_is_served_as_float_in_unit_range(scene):
    dm = _datamanager(scene)
    dataset = dm.train_dataset
    served = 0
    for idx, kind in enumerate(dataset.view_kinds):
        data = dm.cached_train[idx]
        if kind != VIEW_PSEUDO or dataset.confidence_filenames[idx] is None:
            assert "pseudo_confidence" not in data
            continue
        confidence = data["pseudo_confidence"]
        assert confidence.dtype == torch.float32 and confidence.shape == data["pseudo_semantics"].shape
        assert float(confidence.min()) >= 0.0 and float(confidence.max()) <= 1.0
        expected = _confidence_pattern(tuple(confidence.shape)).astype(np.float32) / 255.0
        assert np.allclose(confidence.cpu().numpy(), expected)
        served += 1
    pseudo_views = dataset.view_kinds.count(VIEW_PSEUDO)
    assert served == pseudo_views - 1  # the first pseudo view has no confidence map
    # Downscaled with the ids (nearest): values stay among the stored ones.
    outputs = IRTDataParserConfig(data=scene, load_points=False).setup().get_dataparser_outputs("train")
    half = SemanticIRTDataset(outputs, scale_factor=0.5)
    idx = next(i for i, path in enumerate(half.confidence_filenames) if path is not None)
    small = half.get_data(idx)["pseudo_confidence"]
    assert small.shape == (16, 16)
    assert set(np.round(small.numpy().ravel() * 255).astype(int)) <= set(range(0, 256, 8))


def test_bad_confidence_file_is_one_error_naming_it(scene, tmp_path):
    copy = tmp_path / "scene"
    shutil.copytree(scene, copy)
    victim = sorted((copy / "train" / "confidence").glob("*.png"))[0]
    Image.fromarray(np.zeros((32, 31), dtype=np.uint8)).save(victim)
    with pytest.raises(IRTDataError, match=rf"{victim}: size 31x32 differs from its photo .*\(32x32\)"):
        _datamanager(copy)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(victim)
    with pytest.raises(IRTDataError, match=rf"{victim}: a confidence map must be a 1-channel 8-bit PNG"):
        _datamanager(copy)


# ---------------------------------------------------------------------------------------------------------
# Automatic pseudo labels
# ---------------------------------------------------------------------------------------------------------

TINY_PRIOR = PriorSettings(unet=UnetRecipe(steps=40, crop=32, width=4, levels=2), threshold=0.5)


def _with_steps(steps: int) -> PriorSettings:
    return replace(TINY_PRIOR, unet=replace(TINY_PRIOR.unet, steps=steps))


def _auto(
    scene: Path,
    prior: PriorSettings = TINY_PRIOR,
    mode: Literal["prior", "off"] = "prior",
    reproject: Optional[ReprojectSettings] = None,
):
    config = SemSplatDataManagerConfig(
        dataparser=IRTDataParserConfig(data=scene, load_points=False), auto_pseudo_labels=mode, pseudo_prior=prior
    )
    if reproject is not None:
        config.pseudo_reproject = reproject
    return config.setup(device="cpu")


def _stamps(scene: Path) -> dict:
    folders = ("pseudo", "confidence", "boundary")
    return {p: p.stat().st_mtime_ns for folder in folders for p in (scene / "train" / folder).glob("*.png")}


@pytest.fixture
def town(demo_town, tmp_path, one_cpu_thread) -> Path:
    # 48 pixels: too small to triangulate points, so the prior learns from the labelled views alone (the
    # documented fallback) and the test stays fast; reprojection itself is tested in tests/pseudo.
    copy = tmp_path / "town"
    shutil.copytree(demo_town(n_views=16, resolution=48, n_labelled=3, seed=0), copy)
    return copy


def test_auto_pseudo_labels_are_off_by_default(town, capsys):
    assert SemSplatDataManagerConfig().auto_pseudo_labels == "off"
    dm = _auto(town, mode="off")
    assert not (town / "train" / "pseudo").exists()
    assert VIEW_PSEUDO not in dm.train_dataset.view_kinds
    assert "Pseudo labels:" not in capsys.readouterr().out


def test_auto_pseudo_labels_are_made_reused_and_rebuilt(town, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one console line each, whatever the terminal
    targets = [s for s, lab in zip(*_stems_and_labels(town)) if lab is None]

    dm = _auto(town)
    assert "none in" in capsys.readouterr().out
    meta = json.loads((town / "train" / "pseudo" / "meta.json").read_text())
    # ns-train's stage table gets the time of the whole and of each stage of the pipeline that made them
    seconds = dm.train_dataparser_outputs.metadata[STAGE_SECONDS_KEY]
    stages = {
        k[len(PSEUDO_LABEL_STAGE_PREFIX) :]: v for k, v in seconds.items() if k.startswith(PSEUDO_LABEL_STAGE_PREFIX)
    }
    assert stages == {k: pytest.approx(v) for k, v in meta["times_s"].items() if k != "total"}
    assert "prior_train" in stages and 0.0 < sum(stages.values()) <= seconds["pseudo_labels"]
    assert meta["origin"] == "auto" and meta["backend"] == "prior" and meta["cache_key"]["prior"]["steps"] == 40
    assert "too few points" in meta["counts"]["depth_error"] and meta["counts"]["prior_reprojected_views"] == 0
    kinds = dm.train_dataset.view_kinds
    assert kinds.count(VIEW_PSEUDO) == len(targets) and VIEW_UNLABELLED not in kinds
    served = [dm.cached_train[i] for i, kind in enumerate(kinds) if kind == VIEW_PSEUDO]
    assert all(0.0 <= float(d["pseudo_confidence"].min()) <= float(d["pseudo_confidence"].max()) <= 1.0 for d in served)
    stamps = _stamps(town)
    assert len(stamps) == 3 * len(targets)

    reused = _auto(town)  # unchanged: the cache is used as it is
    assert "reusing" in capsys.readouterr().out
    reused_seconds = reused.train_dataparser_outputs.metadata[STAGE_SECONDS_KEY]
    assert "pseudo_labels" in reused_seconds and not any(
        k.startswith(PSEUDO_LABEL_STAGE_PREFIX) for k in reused_seconds
    )
    assert _stamps(town) == stamps

    _auto(town, _with_steps(41))
    out = capsys.readouterr().out
    assert "rebuilding" in out and "prior.steps" in out
    assert all(_stamps(town)[p] != stamps[p] for p in stamps)
    assert json.loads((town / "train" / "pseudo" / "meta.json").read_text())["cache_key"]["prior"]["steps"] == 41

    # So does another reprojection tolerance (--pipeline.datamanager.pseudo-reproject.*).
    _auto(town, _with_steps(41), reproject=ReprojectSettings(color_tolerance=7.0))
    assert "color_tolerance" in capsys.readouterr().out
    assert json.loads((town / "train" / "pseudo" / "meta.json").read_text())["cache_key"]["color_tolerance"] == 7.0

    # A changed input (a photo) rebuilds them too.
    photo = next((town / "train" / "color").glob(f"{targets[0]}.*"))
    pixels = irt_io.read_photo(photo)
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(photo)
    _auto(town, _with_steps(41))
    assert "scene inputs changed" in capsys.readouterr().out


def test_ensure_pseudo_labels_says_what_it_did_and_how_long_the_pipeline_took(town):
    from semsplat_ns.pseudo.auto import ensure_pseudo_labels

    made = ensure_pseudo_labels(town, TINY_PRIOR, device="cpu")
    meta = json.loads((town / "train" / "pseudo" / "meta.json").read_text())
    assert made.status == "made"
    assert made.stage_seconds == {k: v for k, v in meta["times_s"].items() if k != "total"}
    assert {"read_scene", "prior_train", "prior_predict", "write"} <= set(made.stage_seconds)
    reused = ensure_pseudo_labels(town, TINY_PRIOR, device="cpu")
    assert reused.status == "reused" and reused.stage_seconds == {}  # nothing ran
    rebuilt = ensure_pseudo_labels(town, _with_steps(41), device="cpu")
    assert rebuilt.status == "rebuilt" and rebuilt.stage_seconds["prior_train"] > 0


def test_auto_pseudo_labels_keep_pseudo_labels_made_otherwise(town, capsys):
    # By hand: a pseudo label without any record.
    stem = next(s for s, lab in zip(*_stems_and_labels(town)) if lab is None)
    irt_io.atomic_write_png(town / "train" / "pseudo" / f"{stem}.png", np.zeros((48, 48), dtype=np.uint8))
    stamps = _stamps(town)
    dm = _auto(town)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "using those already" in out and "an unrecorded run" in out
    assert _stamps(town) == stamps
    assert dm.train_dataset.view_kinds.count(VIEW_PSEUDO) == 1
    # Made by semsplat-pseudo-labels: kept as well, whatever their backend or parameters.
    run(PseudoLabelArgs(data=town, backend="prior", prior=_with_steps(5), overwrite=True))
    stamps = _stamps(town)
    _auto(town)
    out = " ".join(capsys.readouterr().out.split())
    assert "using those already" in out and "backend prior" in out
    assert _stamps(town) == stamps


def _stems_and_labels(scene: Path):
    files = irt_io.find_split_stems(scene / "train")
    return files.stems, files.label_paths


def test_training_with_auto_pseudo_labels_uses_them(town, tmp_path, capsys):
    # What `ns-train semsplat --data X --pipeline.datamanager.auto-pseudo-labels prior` does, on the CPU.
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig
    from tests.cpu_training import cpu_trainer_config, train

    config = cpu_trainer_config(town, tmp_path / "outputs", 3, "auto")
    datamanager, model = config.pipeline.datamanager, config.pipeline.model
    assert isinstance(datamanager, SemSplatDataManagerConfig) and isinstance(model, SemSplatModelConfig)
    # Only the pseudo labels matter here: few Gaussians, no aggregation losses (their kNN work dominates).
    model.num_random = 500
    model.agg2d_loss_weight = model.agg3d_loss_weight = 0.0
    datamanager.auto_pseudo_labels = "prior"
    # Threshold 0: every pixel of every unlabelled view gets the prior's class.
    datamanager.pseudo_prior = replace(_with_steps(20), threshold=0.0)
    datamanager.dataparser.load_points = False
    losses = []
    trainer = train(config, 3, on_step=lambda step, loss_dict: losses.append(float(loss_dict["pseudo_loss"])))
    assert "making them with the prior" in " ".join(capsys.readouterr().out.split())
    kinds = trainer.pipeline.datamanager.train_dataset.view_kinds
    assert VIEW_PSEUDO in kinds and VIEW_UNLABELLED not in kinds
    assert any(loss > 0 for loss in losses) and all(np.isfinite(losses))
