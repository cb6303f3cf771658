"""``semsplat-predict`` as a user runs it: the console script on a semsplat run trained for real on the CPU.

The prediction runs the installed executable in a subprocess; the refusals call the script's entry point in
this process, which saves another ~15 s nerfstudio import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
from PIL import Image

from semsplat_ns.data import irt_io
from semsplat_ns.data.classes import read_scene_classes
from semsplat_ns.model.semsplat_model import SemSplatModelConfig

# A few dozen steps: a loadable checkpoint with a trained head, short enough for a 2-core CPU.
STEPS = 30
RESOLUTION = 48


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, demo_town: Callable[..., Path]) -> Dict[str, Path]:
    """A short CPU training run on a private copy of the tiny town: its config.yml and scene folder."""
    from tests.cpu_training import cpu_trainer_config, train

    # A private copy: training caches points in the scene, and a failed refusal must not touch shared files.
    scene = demo_town(n_views=20, resolution=RESOLUTION, n_labelled=2, writable=True)
    config = cpu_trainer_config(scene, tmp_path_factory.mktemp("predict") / "outputs", STEPS, "predict")
    model_config = config.pipeline.model
    assert isinstance(model_config, SemSplatModelConfig)
    # Few Gaussians and no densification: a 30-step run takes seconds.
    model_config.num_random = 1000
    model_config.warmup_length = 10 * STEPS
    train(config, STEPS)
    return {"config": config.get_base_dir() / "config.yml", "scene": scene}


def _run_console_script(args: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls the ``semsplat-predict`` console script's entry point in this process with ``args``."""
    from semsplat_ns.scripts.predict import entrypoint

    monkeypatch.setattr(sys, "argv", ["semsplat-predict", *args])
    entrypoint()


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_predicts_every_view_of_both_splits(run: Dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pred"
    executable = Path(sys.executable).parent / "semsplat-predict"
    done = subprocess.run(
        [str(executable), "--load-config", str(run["config"]), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert done.returncode == 0, f"semsplat-predict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    classes = read_scene_classes(run["scene"])
    palette = classes.colors  # [C, 3] uint8
    summary = json.loads((out / "predict.json").read_text())
    assert set(summary["splits"]) == {"train", "test"}
    for split in ("train", "test"):
        stems = sorted(p.stem for p in (run["scene"] / split / "color").iterdir())
        for kind in ("labels", "colormap", "confidence"):
            assert sorted(p.stem for p in (out / split / kind).glob("*.png")) == stems, (split, kind)
        assert summary["splits"][split]["views"] == len(stems)
        for stem in stems:
            label = _read(out / split / "labels" / f"{stem}.png")  # [H, W, 3]
            colour = _read(out / split / "colormap" / f"{stem}.png")  # [H, W, 3]
            confidence = _read(out / split / "confidence" / f"{stem}.png")  # [H, W]
            assert label.dtype == np.uint8 and label.shape == (RESOLUTION, RESOLUTION, 3)
            assert (label == label[..., :1]).all(), "IRT labels repeat the id in every channel"
            ids = label[..., 0]  # [H, W]
            assert ids.max() < classes.num_classes
            # Reads back as a label of the scene, exactly as the dataparser reads rgb/ files.
            read_back = irt_io.read_label(out / split / "labels" / f"{stem}.png", palette, classes.num_classes)
            np.testing.assert_array_equal(read_back, ids)
            np.testing.assert_array_equal(colour, palette[ids])
            assert confidence.dtype == np.uint8 and confidence.shape == (RESOLUTION, RESOLUTION)
            # round(255 p) with p the top softmax probability, which is at least 1 / C.
            assert confidence.min() >= np.floor(255 / classes.num_classes)


def test_refuses_output_inside_ground_truth(
    run: Dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rgb = run["scene"] / "test" / "rgb"
    before = sorted(p.name for p in rgb.iterdir())
    for target in (rgb / "pred", run["scene"]):  # inside rgb/; the scene root (its <split>/ would be train/)
        with pytest.raises(SystemExit) as exit_info:
            _run_console_script(["--load-config", str(run["config"]), "--output-dir", str(target)], monkeypatch)
        assert exit_info.value.code == 2
        assert "semsplat-predict: error: refusing to write predictions" in capsys.readouterr().err
    assert sorted(p.name for p in rgb.iterdir()) == before
    assert not (run["scene"] / "predict.json").exists()


def test_missing_config_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope" / "config.yml"
    with pytest.raises(SystemExit) as exit_info:
        _run_console_script(["--load-config", str(missing), "--output-dir", str(tmp_path / "out")], monkeypatch)
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
