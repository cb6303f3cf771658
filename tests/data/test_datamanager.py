"""The semantic datamanager: what each view yields, the labelled : other draw ratio, label downscaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semsplat_ns.data.datamanager import (
    VIEW_LABELLED,
    VIEW_PSEUDO,
    VIEW_UNLABELLED,
    SemanticIRTDataset,
    SemSplatDataManagerConfig,
)
from semsplat_ns.data.irt_dataparser import IRTDataParserConfig


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    scene = demo_town(n_views=30, resolution=32, n_labelled=3, seed=5, writable=True)
    labelled = {p.stem for p in (scene / "train" / "rgb").glob("*.png")}
    photos = sorted((scene / "train" / "color").iterdir())
    (scene / "train" / "pseudo").mkdir()
    (scene / "train" / "boundary").mkdir()
    # pseudo labels for all but the last two unlabelled views (those stay photo-only)
    for photo in [p for p in photos if p.stem not in labelled][:-2]:
        label = np.asarray(Image.open(scene / "gt_all" / f"{photo.stem}.png"))[..., 0]
        Image.fromarray(label).save(scene / "train" / "pseudo" / f"{photo.stem}.png")
        boundary = np.zeros_like(label)
        boundary[:, :16] = 255
        Image.fromarray(boundary).save(scene / "train" / "boundary" / f"{photo.stem}.png")
    return scene


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
