"""The README's walkthrough "From a folder of drone photos" (issue #14), its commands read from README.md and run
as written, offline, on the CPU.

Step 1 (``ns-process-data images``) needs the ``colmap`` binary, which the project's install does not bring, so
the test starts from the capture that step leaves: ``images/frame_00001.png``, ... , ``colmap/sparse/0`` and
``transforms.json`` written by nerfstudio's own ``colmap_to_json``, from the demo town's exact cameras
(:func:`~semsplat_ns.synthetic.capture_writer.write_capture`). Step 2 labels three images as a labelling tool
would: class-id PNGs named by the image stem. Step 3 runs ``ns-train`` (a real process, the README's flags plus a
tiny prior, label-support weighting and 10 CPU steps appended) and ``semsplat-predict`` (its console script's
entry point, in this process). ``ns-viewer`` is covered by tests/scripts/test_viewer_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from semsplat_ns.data import irt_io
from semsplat_ns.synthetic.capture_writer import write_capture

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## From a folder of drone photos"
BIN = Path(sys.executable).parent
TOWN = dict(n_views=12, resolution=32, n_labelled=2, seed=5)
"""The town of tests/data/test_capture.py (built once per session)."""
LABELLED = {"000003": "frame_00004", "000009": "frame_00010", "000010": "frame_00011"}
"""The three labelled images: town frame -> image stem after ns-process-data's renaming (frame_00011 is the one
evaluation image of nerfstudio's default split of 12 images)."""
TIMESTAMP = "walkthrough"
APPENDED = [
    # Few CPU steps and a tiny prior, so the walkthrough takes seconds; label support weights the pseudo loss.
    *("--max-num-iterations", "10", "--machine.device-type", "cpu", "--vis", "tensorboard"),
    *("--timestamp", TIMESTAMP, "--pipeline.model.pseudo-weight-by-label-support", "True"),
    *("--pipeline.datamanager.pseudo-prior.steps", "20", "--pipeline.datamanager.pseudo-prior.crop", "16"),
    *("--pipeline.datamanager.pseudo-prior.width", "4", "--pipeline.datamanager.pseudo-prior.levels", "2"),
    *("--pipeline.datamanager.pseudo-prior.threshold", "0.5"),
]


def walkthrough_commands() -> List[List[str]]:
    """The commands of the README section's code block, comments left out, each split as a shell splits it."""
    text = README.read_text()
    section = text[text.index(SECTION) :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)]
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _digests(folder: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(demo_town, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    commands = walkthrough_commands()
    assert [command[0] for command in commands] == ["ns-process-data", "ns-train", "semsplat-predict", "ns-viewer"]
    assert commands[0][1:] == ["images", "--data", "photos/", "--output-dir", "capture/"]

    # Step 1's result: the capture as ns-process-data leaves it, photos renamed frame_00001.png, ...
    town = demo_town(**TOWN)
    capture = write_capture(
        town, tmp_path / "capture", "nerfstudio", keep_split=False, label_stems=[], image_names="ns-process-data"
    )
    assert sorted(p.name for p in (capture / "images").iterdir())[:2] == ["frame_00001.png", "frame_00002.png"]
    assert "train_filenames" not in json.loads((capture / "transforms.json").read_text())

    # Step 2: three class-id PNGs named by the image stem (the README's example: capture/labels/frame_00012.png).
    assert "capture/labels/frame_00012.png" in README.read_text()
    (capture / "labels").mkdir()
    for frame, stem in LABELLED.items():
        ids = np.asarray(Image.open(town / "gt_all" / f"{frame}.png"))[..., 0]  # [32, 32] channel 0 = class id
        Image.fromarray(np.ascontiguousarray(ids)).save(capture / "labels" / f"{stem}.png")
    labels_before = _digests(capture / "labels")
    photos_before = _digests(capture / "images")

    # Step 3: ns-train as written (from the folder that holds capture/), plus the appended test flags.
    assert commands[1][1:4] == ["semsplat", "--data", "capture/"]
    env = {k: v for k, v in os.environ.items() if k != "SEMSPLAT_TRACEBACK"}
    done = subprocess.run(
        [str(BIN / "ns-train"), *commands[1][1:], *APPENDED],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = " ".join(done.stdout.split())
    assert "making them with the prior" in out
    assert "labelled: 2 training (frame_00004, frame_00010), 1 evaluation (frame_00011)" in out
    assert "pseudo labels for 9 unlabelled training images (semsplat_pseudo/, 9 with confidence)" in out
    meta = json.loads((capture / "semsplat_pseudo" / "pseudo" / "meta.json").read_text())
    assert meta["origin"] == "auto" and meta["counts"]["written"] == 9

    # semsplat-predict as written, <time> being the run's timestamp.
    predict = [argument.replace("<time>", TIMESTAMP) for argument in commands[2]]
    config = tmp_path / predict[predict.index("--load-config") + 1]
    assert config == tmp_path / "outputs" / "capture" / "semsplat" / TIMESTAMP / "config.yml" and config.is_file()
    from semsplat_ns.scripts.predict import entrypoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", predict)
    entrypoint()
    summary = json.loads((config.parent / "predict" / "predict.json").read_text())
    stems = summary["splits"]["train"]["stems"] + summary["splits"]["test"]["stems"]
    assert sorted(stems) == [f"frame_{i:05d}" for i in range(1, 13)] and summary["splits"]["test"]["stems"] == [
        "frame_00011"
    ]
    for split in ("train", "test"):
        for stem in summary["splits"][split]["stems"]:
            ids = irt_io.read_label(config.parent / "predict" / split / "labels" / f"{stem}.png", None, None)
            assert ids.shape == (32, 32) and int(ids.max()) < len(summary["class_names"])

    # ns-viewer opens the same run (its own test starts it); the user's files were only read.
    viewer = [argument.replace("<time>", TIMESTAMP) for argument in commands[3]]
    assert tmp_path / viewer[viewer.index("--load-config") + 1] == config
    assert _digests(capture / "labels") == labels_before and _digests(capture / "images") == photos_before
