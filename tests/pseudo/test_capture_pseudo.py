"""Pseudo labels on captures (issue #14): a nerfstudio capture and a COLMAP model of the demo town get the same
pseudo labels as its IRT form, in ``<capture>/semsplat_pseudo/``, drawn on the pictures nerfstudio trains on
(undistorted when the camera has distortion), read back and checked by ``semsplat-data``, served by the
datamanager, and made, reused and rebuilt by the automatic path with the run's own split. Nothing is written
into the capture's ``labels/``, ``images/`` or model."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

from semsplat_ns.data import irt_io
from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig
from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.data.irt_dataparser import STAGE_SECONDS_KEY
from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError
from semsplat_ns.geometry.depth import DepthError
from semsplat_ns.pseudo.pipeline import PseudoLabelArgs, run
from semsplat_ns.pseudo.prior import PriorSettings
from semsplat_ns.pseudo.scene import read_photo, read_scene
from semsplat_ns.pseudo.unet import UnetRecipe
from semsplat_ns.synthetic.capture_writer import generator_cameras, write_capture
from semsplat_ns.synthetic.render import render_view
from semsplat_ns.synthetic.town import build_town

TOWN = dict(n_views=12, resolution=32, n_labelled=2, seed=5)
"""The town of tests/data/test_capture.py: frames 3 and 9 labelled, frame 5 the test view."""
TARGETS = ["000000", "000001", "000002", "000004", "000006", "000007", "000008", "000010", "000011"]
"""Its unlabelled training frames."""
TINY_PRIOR = PriorSettings(unet=UnetRecipe(steps=20, crop=16, width=4, levels=2), threshold=0.0)
"""A prior that trains in a second on the CPU (every prediction kept: threshold 0)."""
DISTORTION = (-0.08, 0.02, 0.002, -0.001)


@pytest.fixture(scope="module")
def town(demo_town) -> Path:
    return demo_town(**TOWN)


@pytest.fixture(scope="module")
def depth_dir(town: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exact z-depth <stem>.npy of every frame, from the generator (the capture's frame is the town's)."""
    folder = tmp_path_factory.mktemp("depth")
    stems, K, c2ws, size = generator_cameras(town)
    geometry = build_town(TOWN["seed"])
    for stem, c2w in zip(stems, c2ws):
        _, _, depth = render_view(geometry, K, c2w, size, size, 1)
        np.save(folder / f"{stem}.npy", depth.astype(np.float32))
    return folder


def _digests(folder: Path) -> Dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _printed(capsys: pytest.CaptureFixture) -> str:
    """What was printed, without whitespace: rich wraps long lines at the console width."""
    return "".join(capsys.readouterr().out.split())


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _user_files(capture: Path) -> Dict[str, str]:
    """Digests of everything in the capture that semsplat must not write: all but its semsplat_* folders."""
    return {k: v for k, v in _digests(capture).items() if not k.startswith("semsplat_")}


@pytest.mark.slow
def test_pseudo_labels_of_captures_equal_the_irt_forms(town, depth_dir, tmp_path, monkeypatch, capsys):
    irt = tmp_path / "irt"
    shutil.copytree(town, irt)
    run(PseudoLabelArgs(data=irt, backend="reproject", depth_dir=depth_dir))
    expected = {s: irt_io.read_pseudo_label(irt / "train" / "pseudo" / f"{s}.png") for s in TARGETS}
    # Something to compare: 8 % of pixels carry a class at the colour tolerance 3 (the default since 8e073a1).
    assert np.mean([(ids != IGNORE_ID).mean() for ids in expected.values()]) > 0.05

    for layout in ("nerfstudio", "colmap"):
        capture = write_capture(town, tmp_path / layout, layout)  # type: ignore[arg-type]
        before = _user_files(capture)
        # The console script, as a user runs it.
        from semsplat_ns.scripts.pseudo_labels import main

        argv = ["semsplat-pseudo-labels", "--data", str(capture), "--backend", "reproject"]
        monkeypatch.setattr(sys, "argv", argv + ["--depth-dir", str(depth_dir)])
        main()
        root = capture / "semsplat_pseudo"
        assert _squeezed(f"record: {root / 'pseudo' / 'meta.json'}") in _printed(capsys)
        for stem in TARGETS:
            pseudo = irt_io.read_pseudo_label(root / "pseudo" / f"{stem}.png")
            assert np.array_equal(pseudo, expected[stem]), (layout, stem)  # the same cameras, the same labels
            assert irt_io.read_boundary_mask(root / "boundary" / f"{stem}.png").all()  # reproject: B = all
        assert not (root / "pseudo" / "000003.png").exists()  # labelled views get none
        assert not (root / "pseudo" / "000005.png").exists()  # nor evaluation views
        meta = json.loads((root / "pseudo" / "meta.json").read_text())
        assert meta["origin"] == "semsplat-pseudo-labels" and meta["counts"]["target_views"] == len(TARGETS)
        assert _user_files(capture) == before  # labels/, images/, the model: untouched

        # Read back by semsplat-data and served by the datamanager.
        train = SemSplatDataParserConfig(data=capture).setup().get_dataparser_outputs("train")
        listed = dict(zip(train.metadata["stems"], train.metadata["pseudo_filenames"]))
        assert {s for s, p in listed.items() if p is not None} == set(TARGETS)
        assert all(p is None for p in train.metadata["confidence_filenames"])  # reprojection has none
        assert _squeezed("pseudo labels for 9 unlabelled training images (semsplat_pseudo/)") in _printed(capsys)
        if layout == "colmap":
            config = SemSplatDataManagerConfig(dataparser=SemSplatDataParserConfig(data=capture, load_points=False))
            datamanager = config.setup(device="cpu", test_mode="val")
            served = {
                train.metadata["stems"][int(d["image_idx"])]: d
                for d in datamanager.cached_train
                if "pseudo_semantics" in d
            }
            assert set(served) == set(TARGETS)
            assert np.array_equal(served["000004"]["pseudo_semantics"].numpy(), expected["000004"])
            assert bool(served["000004"]["boundary_mask"].all())


@pytest.mark.slow
def test_prior_on_a_distorted_capture_draws_on_the_undistorted_pictures(town, tmp_path):
    capture = write_capture(town, tmp_path / "distorted", "nerfstudio", distortion=DISTORTION)
    before = _user_files(capture)
    # Depth from the capture's own sparse points: the exact depth maps are of the distorted photos.
    record = run(PseudoLabelArgs(data=capture, backend="prior", prior=TINY_PRIOR))
    assert record["depth"] == "points" and record["counts"]["written"] == len(TARGETS)
    assert _user_files(capture) == before and not (capture / "sparse").exists()  # nothing triangulated

    scene = read_scene(capture)
    # uint8 caching, as semsplat's preset (ns-train semsplat) has it.
    parser = SemSplatDataParserConfig(data=capture, load_points=False)
    config = SemSplatDataManagerConfig(dataparser=parser, cache_images_type="uint8")
    datamanager = config.setup(device="cpu", test_mode="val")
    stems = datamanager.train_dataparser_outputs.metadata["stems"]
    assert stems == scene.stems
    checked = 0
    for data in datamanager.cached_train:
        index = int(data["image_idx"])
        height, width = scene.sizes[index]
        assert (height, width) != (32, 32) and tuple(data["image"].shape[:2]) == (height, width)
        # The picture the pseudo labels were made on is the one nerfstudio trains on, bit for bit.
        assert np.array_equal(read_photo(scene, index), data["image"].cpu().numpy())
        if stems[index] in TARGETS:
            assert tuple(data["pseudo_semantics"].shape) == (height, width)
            assert tuple(data["pseudo_confidence"].shape) == (height, width)
            checked += 1
    assert checked == len(TARGETS)
    # K of the undistorted picture: nerfstudio's, as its datamanager set it on the training cameras.
    cameras = datamanager.train_dataset.cameras
    np.testing.assert_allclose(scene.Ks[0], cameras[0].get_intrinsics_matrices().numpy(), atol=1e-4)


def _write(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


@pytest.mark.slow
def test_bad_pseudo_files_of_a_capture_name_the_file(town, depth_dir, tmp_path):
    base = write_capture(town, tmp_path / "base", "colmap")
    run(PseudoLabelArgs(data=base, backend="prior", prior=TINY_PRIOR, depth_dir=depth_dir))
    damages = {
        "pseudo size": ("pseudo/000004.png", np.zeros((32, 30), np.uint8), "size 30x32 differs from the picture"),
        "pseudo id": ("pseudo/000004.png", np.full((32, 32), 40, np.uint8), "pseudo class id 40 but the scene has"),
        "boundary size": ("boundary/000006.png", np.zeros((31, 32), np.uint8), "size 32x31 differs from the picture"),
        "confidence mode": ("confidence/000007.png", np.zeros((32, 32, 3), np.uint8), "must be a 1-channel 8-bit"),
    }
    for name, (relative, pixels, words) in damages.items():
        capture = tmp_path / name.replace(" ", "_")
        shutil.copytree(base, capture)
        path = capture / "semsplat_pseudo" / relative
        _write(path, pixels)
        with pytest.raises(IRTDataError) as err:
            SemSplatDataParserConfig(data=capture).setup().get_dataparser_outputs("train")
        message = str(err.value)
        assert message.startswith(f"{path}: ") and words in message and "\n" not in message, (name, message)
        if name == "pseudo id":
            # Ignored pseudo labels are not read (their confidence maps neither).
            outputs = SemSplatDataParserConfig(data=capture, load_pseudo_labels=False).setup().get_dataparser_outputs()
            assert outputs.metadata["pseudo_filenames"] == [None] * 11

    # --depth points on a capture without sparse points: one line; the prior trains on the labelled views alone.
    bare = tmp_path / "bare"
    shutil.copytree(base, bare)
    (bare / "sparse" / "0" / "points3D.txt").unlink()
    shutil.rmtree(bare / "semsplat_pseudo")
    with pytest.raises(DepthError, match=f"^{bare}: the capture gives no sparse points"):
        run(PseudoLabelArgs(data=bare, backend="reproject"))
    record = run(PseudoLabelArgs(data=bare, backend="prior", prior=TINY_PRIOR))
    assert "no sparse points" in record["counts"]["depth_error"] and record["counts"]["written"] == len(TARGETS)


def _auto(capture: Path, prior: PriorSettings = TINY_PRIOR, **parser_options):
    """The datamanager of an ns-train run with automatic prior pseudo labels."""
    parser = SemSplatDataParserConfig(data=capture, load_points=True, **parser_options)
    config = SemSplatDataManagerConfig(dataparser=parser, auto_pseudo_labels="prior", pseudo_prior=prior)
    return config.setup(device="cpu", test_mode="val")


@pytest.mark.slow
def test_automatic_pseudo_labels_on_a_capture_follow_the_runs_split_and_are_cached(town, tmp_path, capsys):
    capture = write_capture(town, tmp_path / "auto", "nerfstudio", keep_split=False)
    before = _user_files(capture)
    # The run's own split: every 4th image for evaluation (000000, 000004, 000008), not nerfstudio's default.
    nerfstudio = replace(SemSplatDataParserConfig().nerfstudio, eval_mode="interval", eval_interval=4)
    datamanager = _auto(capture, nerfstudio=nerfstudio)
    out = _printed(capsys)
    assert _squeezed(f"none in {capture / 'semsplat_pseudo' / 'pseudo'}; making them with the prior") in out
    train = datamanager.train_dataparser_outputs.metadata
    wanted = {s for s, label in zip(train["stems"], train["semantic_filenames"]) if label is None}
    assert wanted == {"000001", "000002", "000006", "000007", "000010", "000011"}  # 000005 has a label
    assert {s for s, p in zip(train["stems"], train["pseudo_filenames"]) if p is not None} == wanted
    assert sum(1 for d in datamanager.cached_train if "pseudo_confidence" in d) == len(wanted)
    assert train[STAGE_SECONDS_KEY]["pseudo_labels"] > 0  # what ns-train's stage times report
    assert _user_files(capture) == before
    meta = json.loads((capture / "semsplat_pseudo" / "pseudo" / "meta.json").read_text())
    assert meta["origin"] == "auto" and meta["cache_key"]["prior"]["steps"] == 20

    _auto(capture, nerfstudio=nerfstudio)
    assert _squeezed("reusing the prior's") in _printed(capsys)
    # A changed label changes the inputs: rebuilt. So does another split (other photos are training views).
    label = capture / "labels" / "000003.png"
    ids = np.asarray(Image.open(label)).copy()
    ids[:4] = IGNORE_ID
    _write(label, ids)
    _auto(capture, nerfstudio=nerfstudio)
    assert _squeezed("rebuilding the prior's pseudo labels") in _printed(capsys)
    datamanager = _auto(capture)  # nerfstudio's default split (fraction): 000010 is evaluation, 000000/4/8 train
    out = _printed(capsys)
    assert _squeezed("scene inputs changed") in out and _squeezed("files missing") in out
    train = datamanager.train_dataparser_outputs.metadata
    wanted = {s for s, label in zip(train["stems"], train["semantic_filenames"]) if label is None}
    assert wanted == set(TARGETS) - {"000010"}
    assert {s for s, p in zip(train["stems"], train["pseudo_filenames"]) if p is not None} == wanted
    assert _user_files(capture) == before | {"labels/000003.png": _digests(capture)["labels/000003.png"]}
