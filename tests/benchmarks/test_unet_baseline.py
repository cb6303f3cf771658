"""Tests of the Unet baseline benchmark and of the benchmark row helpers (CPU, tiny sizes).

The baseline reads scenes through semsplat_ns.data.irt_io (tested in tests/data); here only what the baseline
itself adds: which views it reads, its own checks, training, scoring and rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.baselines.unet import (  # noqa: E402
    CropSampler,
    Unet,
    UnetBaselineConfig,
    evaluate_unet,
    load_scene,
    main,
)
from benchmarks.common import ROW_KEYS, ResultsFileError, append_rows, read_rows, result_row  # noqa: E402
from semsplat_ns.data.irt_io import IRTDataError  # noqa: E402
from semsplat_ns.pseudo.unet import UnetRecipe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tests/conftest.py


# Three classes whose colours are far apart, so that a few steps suffice to tell them apart.
PALETTE = np.array([[220, 30, 30], [30, 200, 40], [40, 50, 210]], dtype=np.uint8)  # [3, 3]


def _class_map(rng: np.random.Generator, height: int, width: int, block: int = 8) -> np.ndarray:
    """Random blocky class ids ``[H, W]`` in {0, 1, 2}."""
    coarse = rng.integers(0, 3, size=(-(-height // block), -(-width // block)))  # [h, w]
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)  # [H, W]


def _photo(rng: np.random.Generator, ids: np.ndarray) -> np.ndarray:
    """The class colour plus noise ``[H, W, 3]`` uint8."""
    noise = rng.integers(-20, 21, size=ids.shape + (3,))  # [H, W, 3]
    return np.clip(PALETTE[ids].astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _write_label(path: Path, ids: np.ndarray) -> None:
    """Writes an IRT label: the class id in all three channels."""
    Image.fromarray(np.repeat(ids[..., None], 3, axis=2)).save(path)


def _write_camera(split_dir: Path, stem: str, size) -> None:
    """An identity pose and a centred pinhole K: the baseline ignores cameras, but a scene has them."""
    height, width = size
    K = np.eye(4)
    K[0, 0] = K[1, 1] = 50.0
    K[0, 2], K[1, 2] = width / 2, height / 2
    for folder, matrix in (("pose", np.eye(4)), ("intrinsics", K)):
        (split_dir / folder).mkdir(exist_ok=True)
        np.savetxt(split_dir / folder / f"{stem}.txt", matrix)


def make_scene(
    root: Path,
    labelled=("000", "002"),
    unlabelled=("001", "003"),
    test=("100", "101", "102"),
    train_size=(64, 64),
    test_size=(56, 72),
    classes_json=True,
    seed=0,
) -> Path:
    """Writes a tiny IRT scene: JPEG/PNG photos, labels only for the labelled training stems."""
    rng = np.random.default_rng(seed)
    for split, stems, size in (("train", tuple(labelled) + tuple(unlabelled), train_size), ("test", test, test_size)):
        (root / split / "color").mkdir(parents=True, exist_ok=True)
        (root / split / "rgb").mkdir(parents=True, exist_ok=True)
        for index, stem in enumerate(stems):
            ids = _class_map(rng, *size)  # [H, W]
            suffix = ".jpg" if index % 2 else ".png"
            Image.fromarray(_photo(rng, ids)).save(root / split / "color" / f"{stem}{suffix}", quality=95)
            _write_camera(root / split, stem, size)
            if split == "test" or stem in labelled:
                _write_label(root / split / "rgb" / f"{stem}.png", ids)
    if classes_json:
        (root / "classes.json").write_text(json.dumps({"names": ["red", "green", "blue"], "colors": PALETTE.tolist()}))
    return root


def tiny_config(scene: Path, out: Path, **overrides) -> UnetBaselineConfig:
    """A recipe small enough for a few seconds on a 2-core CPU."""
    recipe = {name: overrides.pop(name) for name in list(overrides) if name in UnetRecipe.__dataclass_fields__}
    tiny = {"steps": 40, "crop": 32, "labelled_batch": 4, "width": 8}
    unet = replace(UnetBaselineConfig(data=[]).unet, **{**tiny, **recipe})
    return UnetBaselineConfig(data=[scene], out=out, device="cpu", unet=unet, **{"warmup_views": 1, **overrides})


def a_row(scene="townA", method="unet", miou=0.5) -> dict:
    return result_row(
        scene,
        method,
        miou=miou,
        miou_present=0.6,
        acc=0.9,
        test_ms_per_view=3.0,
        train_s=50.0,
        steps=3000,
        peak_gpu_mem_gb=None,
        n_gaussians=None,
        command="python x.py",
        device="cpu",
    )


# ---------------------------------------------------------------------------------------------------------
# Scene reading
# ---------------------------------------------------------------------------------------------------------


def test_load_scene_reads_labelled_train_views_and_every_test_view(tmp_path):
    scene = load_scene(make_scene(tmp_path / "tiny"))
    assert scene.name == "tiny"
    assert scene.train_stems == ["000", "002"]  # unlabelled 001, 003 are left out
    assert scene.test_stems == ["100", "101", "102"]
    assert scene.num_classes == 3 and scene.class_names == ["red", "green", "blue"]
    assert scene.train_photos[0].shape == (64, 64, 3) and scene.train_photos[0].dtype == np.uint8
    assert scene.test_labels[0].shape == (56, 72)
    assert set(np.unique(np.concatenate([label.ravel() for label in scene.test_labels]))) <= {0, 1, 2}


def test_num_classes_without_classes_json_is_largest_id_plus_one(tmp_path):
    root = make_scene(tmp_path / "noclasses", classes_json=False)
    ids = np.full((56, 72), 4, dtype=np.uint8)
    _write_label(root / "test" / "rgb" / "101.png", ids)  # the only view with id 4
    scene = load_scene(root)
    assert scene.num_classes == 5
    assert scene.class_names == [f"class_{index}" for index in range(5)]


def test_colour_coded_label_is_decoded_through_classes_json(tmp_path):
    root = make_scene(tmp_path / "coloured")
    ids = _class_map(np.random.default_rng(3), 64, 64)
    Image.fromarray(PALETTE[ids]).save(root / "train" / "rgb" / "000.png")
    scene = load_scene(root)
    np.testing.assert_array_equal(scene.train_labels[0], ids)


def test_colour_coded_label_with_unknown_colour_names_the_file(tmp_path):
    root = make_scene(tmp_path / "badcolour")
    pixels = PALETTE[_class_map(np.random.default_rng(3), 64, 64)]
    pixels[5, 7] = (1, 2, 3)
    Image.fromarray(pixels).save(root / "train" / "rgb" / "002.png")
    with pytest.raises(IRTDataError, match=r"002\.png.*\(1, 2, 3\)"):
        load_scene(root)


def test_old_photo_only_arrangement_gets_an_explanation(tmp_path):
    root = make_scene(tmp_path / "old")
    for path in (root / "train" / "color").iterdir():
        path.unlink()
    (root / "train" / "color").rmdir()
    with pytest.raises(IRTDataError, match="older photo-only"):
        load_scene(root)


def test_test_view_without_label_is_an_error(tmp_path):
    root = make_scene(tmp_path / "unlabelledtest")
    (root / "test" / "rgb" / "101.png").unlink()
    with pytest.raises(IRTDataError, match=r"test.rgb.*every test view needs a label.*101"):
        load_scene(root)


def test_label_size_mismatch_names_the_file(tmp_path):
    root = make_scene(tmp_path / "mismatch")
    _write_label(root / "train" / "rgb" / "002.png", np.zeros((32, 64), dtype=np.uint8))
    with pytest.raises(IRTDataError, match=r"002\.png: label is 64x32 but its photo 002\.jpg is 64x64"):
        load_scene(root)


def test_label_id_beyond_classes_json_names_the_file(tmp_path):
    root = make_scene(tmp_path / "toomany")
    _write_label(root / "test" / "rgb" / "102.png", np.full((56, 72), 7, dtype=np.uint8))
    with pytest.raises(IRTDataError, match=r"102\.png: class id 7 .* 3 classes"):
        load_scene(root)


# ---------------------------------------------------------------------------------------------------------
# Augmentation and model
# ---------------------------------------------------------------------------------------------------------


def _symmetries(array: np.ndarray):
    """The 8 symmetries of a square array over its first two axes."""
    for mirror in (array, array[:, ::-1]):
        for turns in range(4):
            yield np.rot90(mirror, turns)


def test_crop_sampler_makes_consistent_symmetric_crops_of_real_windows():
    rng = np.random.default_rng(0)
    sizes = [(12, 12), (10, 14), (13, 9)]  # views of different sizes share one padded stack
    photos = [rng.integers(0, 256, size=size + (3,), dtype=np.uint8) for size in sizes]
    # A label that is a function of the photo: any mismatch in how the two are cropped shows.
    labels = [(photo[..., 0] % 7).astype(np.uint8) for photo in photos]
    crop = 4
    sampler = CropSampler(photos, labels, crop, brightness=0.0, device=torch.device("cpu"))
    images, targets = sampler.sample(64, torch.Generator().manual_seed(1))
    assert images.shape == (64, 3, crop, crop) and images.dtype == torch.float32
    assert targets.shape == (64, crop, crop) and targets.dtype == torch.long
    seen_symmetries = set()
    for image, target in zip(images, targets):
        pixels = np.rint(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # [S, S, 3]
        np.testing.assert_array_equal(target.numpy(), pixels[..., 0] % 7)
        matches = [
            index
            for photo in photos
            for top in range(photo.shape[0] - crop + 1)
            for left in range(photo.shape[1] - crop + 1)
            for index, candidate in enumerate(_symmetries(photo[top : top + crop, left : left + crop]))
            if np.array_equal(candidate, pixels)
        ]
        assert matches, "a crop is not a flipped/rotated window of any view"
        seen_symmetries.update(matches)
    assert len(seen_symmetries) == 8  # all symmetries of the square occur


def test_crop_sampler_brightness_stays_in_range():
    photos = [np.full((8, 8, 3), 200, dtype=np.uint8)]
    labels = [np.zeros((8, 8), dtype=np.uint8)]
    sampler = CropSampler(photos, labels, 8, brightness=0.5, device=torch.device("cpu"))
    images, _ = sampler.sample(32, torch.Generator().manual_seed(0))
    scales = images[:, 0, 0, 0] / (200 / 255)  # [B]
    assert float(images.max()) <= 1.0 and float(images.min()) >= 0.5 * 200 / 255 - 1e-6
    assert float(scales.std()) > 0.05  # the factor varies per crop


def test_unet_shapes_and_width():
    model = Unet(num_classes=5, width=4, levels=5)
    logits = model(torch.rand(2, 3, 32, 48))  # [2, 5, 32, 48]
    assert logits.shape == (2, 5, 32, 48)
    assert model.divisor == 16
    first_conv = next(model.encoder[-1].children())
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.out_channels == 4 * 16


# ---------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------


def test_main_trains_scores_and_replaces_the_row_of_the_same_scene(tmp_path):
    scene_dir = make_scene(tmp_path / "tiny")
    out = tmp_path / "results" / "unet.json"
    stale = a_row(scene="tiny", method="unet", miou=0.01)
    other = a_row(scene="tiny", method="semsplat", miou=0.7)
    append_rows(out, [other, stale])

    torch.manual_seed(0)
    (row,) = main(tiny_config(scene_dir, out))

    assert list(row)[: len(ROW_KEYS)] == list(ROW_KEYS)
    assert row["test_ms_per_view_p95"] >= row["test_ms_per_view"] and row["timing_warmup_views"] == 1
    assert row["scene"] == "tiny" and row["method"] == "unet" and row["steps"] == 40
    for key in ("miou", "miou_present", "acc"):
        assert 0.0 <= row[key] <= 1.0
    # Colour decides the class: even 40 steps beat chance (a constant guess scores about 1/9 mIoU).
    assert row["miou"] > 0.5 and row["acc"] > 0.7
    assert row["miou_present"] == pytest.approx(row["miou"])  # every class is in the test labels
    assert row["test_ms_per_view"] > 0 and row["train_s"] > 0
    assert row["peak_gpu_mem_gb"] is None and row["n_gaussians"] is None and row["device"] == "cpu"

    rows = json.loads(out.read_text())
    assert [(r["scene"], r["method"]) for r in rows] == [("tiny", "semsplat"), ("tiny", "unet")]
    assert rows[0] == other
    assert rows[1] == row  # the stale row was replaced in place, and the file round-trips


def test_evaluate_matches_a_direct_confusion_count(tmp_path):
    # Scoring a fixed untrained model must equal an independent count over all test pixels at once.
    scene = load_scene(make_scene(tmp_path / "tiny"))
    torch.manual_seed(0)
    model = Unet(scene.num_classes, width=4)
    figures = evaluate_unet(model, scene, torch.device("cpu"), warmup_views=0)
    with torch.no_grad():
        preds, gts = [], []
        for photo, label in zip(scene.test_photos, scene.test_labels):
            image = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255  # [1, 3, 56, 72]
            padded = torch.nn.functional.pad(image, (0, 8, 0, 8), mode="replicate")  # [1, 3, 64, 80]
            preds.append(model(padded)[0, :, :56, :72].argmax(0).numpy().ravel())
            gts.append(label.ravel())
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    ious = []
    for cls in range(3):
        union = np.sum((pred == cls) | (gt == cls))
        if union:
            ious.append(np.sum((pred == cls) & (gt == cls)) / union)
    assert figures["miou"] == pytest.approx(np.mean(ious))
    assert figures["acc"] == pytest.approx(np.mean(pred == gt))


def test_crop_larger_than_views_is_refused(tmp_path):
    scene_dir = make_scene(tmp_path / "tiny")
    with pytest.raises(IRTDataError, match="smaller than --crop 80"):
        main(tiny_config(scene_dir, tmp_path / "out.json", crop=80))
    with pytest.raises(ValueError, match="multiple of 16"):
        main(tiny_config(scene_dir, tmp_path / "out.json", crop=40))
    assert not (tmp_path / "out.json").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_main_on_cuda_with_bf16_records_memory(tmp_path):
    scene_dir = make_scene(tmp_path / "tiny")
    (row,) = main(tiny_config(scene_dir, tmp_path / "out.json", device="cuda"))
    assert row["peak_gpu_mem_gb"] > 0 and row["device"] == torch.cuda.get_device_name()
    assert 0.0 <= row["miou"] <= 1.0


# ---------------------------------------------------------------------------------------------------------
# Result rows
# ---------------------------------------------------------------------------------------------------------


def test_result_row_stamps_device_date_commit_and_drops_nan():
    row = result_row(
        "townA",
        "unet",
        miou=math.nan,
        miou_present=0.5,
        acc=0.9,
        test_ms_per_view=2.0,
        train_s=1.0,
        steps=10,
        peak_gpu_mem_gb=None,
        n_gaussians=None,
        command="cmd",
    )
    assert list(row) == list(ROW_KEYS)
    assert row["miou"] is None  # JSON has no NaN
    assert row["device"] == (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    assert len(row["date"]) == 10 and row["date"][4] == "-"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert row["commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    json.dumps(row, allow_nan=False)


def test_git_commit_outside_a_checkout_is_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMSPLAT_COMMIT", raising=False)
    assert common.git_commit(tmp_path) == "unknown"


def test_git_commit_from_environment_wins(tmp_path, monkeypatch):
    # The GPU box gets the tree without .git; the sender names the commit.
    monkeypatch.setenv("SEMSPLAT_COMMIT", "abc1234")
    assert common.git_commit(tmp_path) == "abc1234"


def test_append_rows_replaces_same_pair_in_place_and_appends_new(tmp_path):
    path = tmp_path / "deep" / "results.json"
    append_rows(path, [a_row("townA", "unet", 0.1), a_row("townB", "unet", 0.2)])
    merged = append_rows(path, [a_row("townA", "unet", 0.3), a_row("townA", "semsplat", 0.4)])
    on_disk = read_rows(path)
    assert on_disk == merged
    assert [(r["scene"], r["method"], r["miou"]) for r in on_disk] == [
        ("townA", "unet", 0.3),
        ("townB", "unet", 0.2),
        ("townA", "semsplat", 0.4),
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temp file left


def test_append_rows_failure_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "results.json"
    append_rows(path, [a_row("townA", "unet", 0.1)])
    before = path.read_bytes()
    broken = a_row("townB", "unet")
    broken["miou"] = object()  # not JSON
    with pytest.raises(TypeError):
        append_rows(path, [broken])
    nan_row = a_row("townB", "unet")
    nan_row["acc"] = math.nan  # a NaN bypassing result_row is refused, not written as invalid JSON
    with pytest.raises(ValueError):
        append_rows(path, [nan_row])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_append_rows_refuses_bad_files_and_rows(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(ResultsFileError, match="results.json: not valid JSON"):
        append_rows(path, [a_row()])
    path.write_text(json.dumps({"scene": "townA"}))
    with pytest.raises(ResultsFileError, match="expected a JSON list"):
        append_rows(path, [a_row()])
    path.write_text("[]")
    incomplete = a_row()
    del incomplete["commit"]
    with pytest.raises(ResultsFileError, match=r"lacks the keys \['commit'\]"):
        append_rows(path, [incomplete])
    assert path.read_text() == "[]"
