"""The README walkthrough "From a folder of drone photos" from its first command (issue #14): the real
``ns-process-data images`` (COLMAP and ffmpeg as subprocesses) on the demo town's photos, three labels, ``ns-train
semsplat --data capture/`` and ``semsplat-predict``, each read from README.md.

The town has 16 views of 192x192 (fewer or smaller views leave some unregistered; 20 take half as long again). Flags
the test adds to the README's lines:

* ns-process-data: ``--matching-method exhaustive --no-gpu``, which the walkthrough tells offline users and a
  COLMAP without CUDA to add (the default vocab-tree matching downloads a vocabulary file; GPU feature extraction
  aborts without CUDA or a display);
* ns-train: a few CPU steps, labelled views alone (``auto-pseudo-labels off``, as the walkthrough offers; the
  prior's pseudo labels on a capture are tested in test_capture.py), and nerfstudio's ``images_2/`` (half size), as
  nerfstudio itself picks a downscaled folder for photos above 1600 px: labels are downscaled and undistorted, and
  predictions land in that folder's pixels.

ns-process-data's default camera model gives OPENCV distortion (k1, k2, p1, p2), which the capture parser reads
through nerfstudio's nerfstudio-data parser.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from semsplat_ns.data import irt_io

BIN = Path(sys.executable).parent
README = Path(__file__).resolve().parents[2] / "README.md"
WALKTHROUGH = "## From a folder of drone photos"
MISSING = [tool for tool in ("colmap", "ffmpeg") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"ns-process-data needs the colmap and ffmpeg binaries on PATH (Debian/Ubuntu: apt install colmap "
        f"ffmpeg); missing: {', '.join(MISSING)}",
    ),
]

TOWN = dict(n_views=16, resolution=192, n_labelled=3, seed=3, test_every=10)
"""16 photos of 192x192 (the town's train/color and test/color together): COLMAP registers all of them."""
N_PHOTOS = 16
PROCESS_FLAGS = ["--matching-method", "exhaustive", "--no-gpu"]
"""Appended to the walkthrough's ns-process-data line, as its comment tells offline users to."""
TIMESTAMP = "run"
TRAIN_FLAGS = [
    *("--max-num-iterations", "5", "--machine.device-type", "cpu", "--vis", "tensorboard", "--timestamp", TIMESTAMP),
    *("--pipeline.datamanager.auto-pseudo-labels", "off"),
    *("--pipeline.datamanager.dataparser.nerfstudio.downscale-factor", "2"),
]
"""Appended to the walkthrough's ns-train line: a few CPU steps on the labelled views, on images_2/."""
TRAINING_LABELS = ["frame_00004", "frame_00010"]
"""Two labelled training images; the third label goes on nerfstudio's one evaluation image."""


def walkthrough() -> str:
    text = README.read_text()
    section = text[text.index(WALKTHROUGH) :]
    return section[: section.index("\n## ", len(WALKTHROUGH))]


def walkthrough_commands() -> List[List[str]]:
    """The commands of the walkthrough's code block (comments left out), each split as a shell splits it."""
    section = walkthrough()
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)]
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _digests(folder: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _pixels(path: Path) -> bytes:
    return np.asarray(Image.open(path).convert("RGB")).tobytes()


def _one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def _tail(result) -> str:
    return f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def capture(demo_town, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Step 1 (ns-process-data, run from the folder that holds photos/) and step 2 (three class-id PNGs from the
    town's ground truth, named by the processed images' stems, plus the town's classes.json)."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

    town = demo_town(**TOWN)
    folder = tmp_path_factory.mktemp("walkthrough")
    photos = folder / "photos"
    photos.mkdir()
    for photo in sorted((town / "train" / "color").iterdir()) + sorted((town / "test" / "color").iterdir()):
        shutil.copyfile(photo, photos / photo.name)

    command = walkthrough_commands()[0]
    assert command == ["ns-process-data", "images", "--data", "photos/", "--output-dir", "capture/"]
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:], *PROCESS_FLAGS],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, _tail(result)
    capture = folder / "capture"

    # The processed images' stems, back to the town's photos by content.
    by_pixels = {_pixels(photo): photo.stem for photo in photos.iterdir()}
    assert len(by_pixels) == N_PHOTOS  # every photo differs from the others
    source = {image.stem: by_pixels.get(_pixels(image)) for image in sorted((capture / "images").iterdir())}
    assert None not in source.values(), f"images/ pictures that are none of the photos: {source}"

    stems = sorted(source)
    _, eval_indices = get_train_eval_split_fraction(stems, NerfstudioDataParserConfig().train_split_fraction)
    labelled = TRAINING_LABELS + [stems[i] for i in eval_indices]
    (capture / "labels").mkdir()
    for stem in labelled:
        ids = np.asarray(Image.open(town / "gt_all" / f"{source[stem]}.png"))[..., 0]  # [192, 192] class ids
        Image.fromarray(np.ascontiguousarray(ids)).save(capture / "labels" / f"{stem}.png")
    shutil.copyfile(town / "classes.json", capture / "classes.json")
    return dict(
        town=town,
        folder=folder,
        photos=photos,
        capture=capture,
        result=result,
        source=source,
        labelled=labelled,
        untouched=(_digests(capture / "labels"), _digests(capture / "images"), _digests(capture / "images_2")),
    )


def test_ns_process_data_registers_every_photo_with_opencv_distortion(capture: dict):
    assert "--matching-method exhaustive --no-gpu" in _one_line(walkthrough())  # what the README tells to add
    out = _one_line(capture["result"].stdout)
    assert f"Starting with {N_PHOTOS} images" in out and f"Colmap matched {N_PHOTOS} images" in out, out[-3000:]
    assert "COLMAP found poses for all images" in out

    root: Path = capture["capture"]
    transforms = json.loads((root / "transforms.json").read_text())
    names = [f"frame_{i:05d}" for i in range(1, N_PHOTOS + 1)]
    assert sorted(frame["file_path"] for frame in transforms["frames"]) == [f"images/{n}.png" for n in names]
    # Photos are numbered in the order of their names, each pixel for pixel the same picture.
    assert capture["source"] == {name: f"{i:06d}" for i, name in enumerate(names)}
    assert transforms["camera_model"] == "OPENCV"
    lens = [transforms[key] for key in ("k1", "k2", "p1", "p2")]
    assert all(np.isfinite(lens)) and any(value != 0 for value in lens)
    assert (transforms["w"], transforms["h"]) == (192, 192)
    assert (root / transforms["ply_file_path"]).is_file() and (root / "colmap" / "sparse" / "0").is_dir()
    for factor in (2, 4, 8):  # ffmpeg's downscaled copies
        sizes = {Image.open(p).size for p in (root / f"images_{factor}").iterdir()}
        assert sizes == {(192 // factor, 192 // factor)}, factor
    assert capture["labelled"] == ["frame_00004", "frame_00010", "frame_00015"]  # frame_00015: the eval image


def test_capture_parser_reads_the_opencv_cameras(capture: dict):
    from nerfstudio.cameras.cameras import CameraType

    from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig, detect_layout
    from semsplat_ns.data.capture_labels import PREPARED_DIR

    root: Path = capture["capture"]
    assert detect_layout(root) == ("nerfstudio", root / "transforms.json")
    transforms = json.loads((root / "transforms.json").read_text())
    outputs = {
        split: SemSplatDataParserConfig(data=root).setup().get_dataparser_outputs(split) for split in ("train", "val")
    }
    train, evaluation = outputs["train"], outputs["val"]
    assert len(train.image_filenames) + len(evaluation.image_filenames) == N_PHOTOS
    assert evaluation.metadata["stems"] == ["frame_00015"]
    cameras = train.cameras
    assert (cameras.camera_type == CameraType.PERSPECTIVE.value).all()
    assert cameras.distortion_params is not None
    expected = [transforms[k] for k in ("k1", "k2")] + [0.0, 0.0] + [transforms[k] for k in ("p1", "p2")]
    np.testing.assert_allclose(cameras.distortion_params.numpy(), np.tile(expected, (len(cameras), 1)), rtol=1e-6)
    np.testing.assert_allclose(cameras.fx.numpy(), transforms["fl_x"], rtol=1e-6)
    np.testing.assert_allclose(cameras.cy.numpy(), transforms["cy"], rtol=1e-6)
    # Labels are brought to nerfstudio's undistorted photos (never changed in place).
    labelled = {
        stem: path
        for stem, path in zip(train.metadata["stems"], train.metadata["semantic_filenames"], strict=True)
        if path
    }
    assert sorted(labelled) == TRAINING_LABELS
    assert all(path.parent == root / PREPARED_DIR / "images_undistorted" for path in labelled.values())
    assert train.metadata["points3D_xyz"].shape[0] > 100  # COLMAP's sparse points are the seeds


def test_walkthrough_trains_and_predicts_on_the_capture(
    capture: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, console_scripts
):
    commands = walkthrough_commands()
    assert [command[0] for command in commands] == ["ns-process-data", "ns-train", "semsplat-predict", "ns-viewer"]
    folder: Path = capture["folder"]
    root: Path = capture["capture"]

    # Step 3: ns-train as written, from the folder that holds capture/ (its own process: see the console_scripts
    # fixture).
    train = commands[1]
    assert train == ["ns-train", "semsplat", "--data", "capture/"]
    result = console_scripts({"ns-train": ([*train, *TRAIN_FLAGS], folder)}, None, tmp_path)["ns-train"]
    assert result.returncode == 0, _tail(result)
    out = _one_line(result.stdout)
    assert "semsplat-data: capture is a nerfstudio capture (transforms.json): 15 training and 1 evaluation" in out
    assert "labelled: 2 training (frame_00004, frame_00010), 1 evaluation (frame_00015)" in out
    assert "labels downscaled and undistorted as nerfstudio's photos are" in out
    run_dir = folder / "outputs" / "capture" / "semsplat" / TIMESTAMP
    assert [p.name for p in (run_dir / "nerfstudio_models").glob("step-*.ckpt")] == ["step-000000004.ckpt"]

    # semsplat-predict as written (its console script's entry point, in this process), <time> the timestamp.
    predict = [argument.replace("<time>", TIMESTAMP) for argument in commands[2]]
    assert folder / predict[predict.index("--load-config") + 1] == run_dir / "config.yml"
    from semsplat_ns.scripts.predict import entrypoint

    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", predict)
    entrypoint()
    summary = json.loads((run_dir / "predict" / "predict.json").read_text())
    splits = {split: summary["splits"][split]["stems"] for split in ("train", "test")}
    assert sorted(splits["train"] + splits["test"]) == sorted(capture["source"]) and splits["test"] == ["frame_00015"]
    n_classes = len(summary["class_names"])
    assert summary["class_names"] == json.loads((root / "classes.json").read_text())["names"]
    for split, stems in splits.items():
        for stem in stems:
            # Each prediction lies on the photo nerfstudio read (images_2/, 96x96), in its distorted pixels.
            size = Image.open(root / "images_2" / f"{stem}.png").size
            for kind in ("labels", "colormap", "confidence"):
                assert Image.open(run_dir / "predict" / split / kind / f"{stem}.png").size == size, (kind, stem)
            ids = irt_io.read_label(run_dir / "predict" / split / "labels" / f"{stem}.png", None, None)  # [96, 96]
            known = ids != irt_io.IGNORE_ID  # the rim the undistorted picture leaves out is unknown
            assert known.mean() > 0.8 and int(ids[known].max()) < n_classes, stem

    # ns-viewer opens the same run.
    viewer = [argument.replace("<time>", TIMESTAMP) for argument in commands[3]]
    assert folder / viewer[viewer.index("--load-config") + 1] == run_dir / "config.yml"
    # labels/ and images*/ were only read.
    assert (_digests(root / "labels"), _digests(root / "images"), _digests(root / "images_2")) == capture["untouched"]
