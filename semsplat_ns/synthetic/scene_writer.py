"""Writes the procedural town as an IRT scene folder (plus ``gt_all/``, every frame's label, for tests)."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
from PIL import Image

from semsplat_ns.atomic import make_temp_dir
from semsplat_ns.atomic import write_bytes_atomic as _atomic_write
from semsplat_ns.console import progress_bar
from semsplat_ns.data.classes import CARLA8_COLORS, CARLA8_NAMES
from semsplat_ns.synthetic.orbit import HFOV_DEG, orbit_cameras
from semsplat_ns.synthetic.render import SUPERSAMPLE, render_view
from semsplat_ns.synthetic.town import DemoSceneError, build_town


def _png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 image ``[H, W]`` or ``[H, W, 3]``."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _matrix_text(m: np.ndarray) -> bytes:
    """A 4x4 matrix as 4 lines of 4 whitespace-separated floats."""
    return "".join(" ".join(f"{x:.10g}" for x in row) + "\n" for row in m).encode()


def split_frames(n_views: int, n_labelled: int, test_every: int) -> Tuple[List[int], List[int], List[int]]:
    """Splits frames like the IRT scenes.

    Args:
        n_views: Number of frames.
        n_labelled: Number of labelled training frames, spread evenly over the orbit (the train frame nearest
            to ``(k + 0.5) * n_views / n_labelled``; 17, 50, 83 for 100 frames and 3 labels, as in the real data).
        test_every: Frame i is a test frame when ``i % test_every == test_every // 2``.

    Returns:
        Train frames, test frames and labelled train frames, each sorted.
    """
    if test_every < 2:
        raise DemoSceneError(f"test_every must be >= 2, got {test_every}")
    test = [i for i in range(n_views) if i % test_every == test_every // 2]
    train = [i for i in range(n_views) if i % test_every != test_every // 2]
    if not test:
        raise DemoSceneError(f"test_every={test_every} leaves no test view among {n_views} views")
    if not 0 <= n_labelled <= len(train):
        raise DemoSceneError(f"n_labelled must lie in [0, {len(train)}] (the number of train views), got {n_labelled}")
    labelled: List[int] = []
    for k in range(n_labelled):
        want = (k + 0.5) * n_views / n_labelled  # evenly over the orbit
        free = [i for i in train if i not in labelled]
        labelled.append(min(free, key=lambda i: (abs(i - want), i)))
    return train, test, sorted(labelled)


def make_scene(
    out_dir: Union[str, Path],
    n_views: int = 40,
    resolution: int = 96,
    n_labelled: int = 3,
    seed: int = 0,
    test_every: int = 10,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Builds a procedural town and writes it as an IRT scene (plus ``gt_all/``, every frame's label).

    The scene is written into a temporary sibling folder and renamed to ``out_dir`` at the end, so a
    half-written scene never appears.

    Args:
        out_dir: Scene folder to create; must not exist (or be empty) unless ``overwrite``.
        n_views: Number of frames on the orbit.
        resolution: Width and height of each image in pixels.
        n_labelled: Number of training views that get a label in ``train/rgb``, spread evenly over the orbit.
        seed: Seed of the town and the cameras; the same arguments give byte-identical files.
        test_every: Frame i is a test view when ``i % test_every == test_every // 2``.
        overwrite: Replace an existing non-empty ``out_dir``.
        progress: Show a rich progress bar over the views.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DemoSceneError: On unusable arguments or an existing ``out_dir``.
    """
    out = Path(out_dir)
    if n_views < 2:
        raise DemoSceneError(f"n_views must be >= 2, got {n_views}")
    if resolution < 8:
        raise DemoSceneError(f"resolution must be >= 8 pixels, got {resolution}")
    train, test, labelled = split_frames(n_views, n_labelled, test_every)
    if out.exists() and not out.is_dir():
        raise DemoSceneError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DemoSceneError(f"{out} already exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    scene = build_town(seed)
    K, c2w = orbit_cameras(n_views, resolution, seed)
    K4 = np.eye(4)  # [4, 4]
    K4[:3, :3] = K
    tmp = make_temp_dir(out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        for split in ("train", "test"):
            for sub in ("color", "rgb", "intrinsics", "pose"):
                (tmp / split / sub).mkdir(parents=True)
        (tmp / "gt_all").mkdir()
        counts = np.zeros(20, np.int64)  # [20] pixels per class over all frames
        test_set, labelled_set = set(test), set(labelled)

        def write_frame(i: int) -> None:
            rgb, label, _ = render_view(scene, K, c2w[i], resolution, resolution)
            stem, split = f"{i:06d}", "test" if i in test_set else "train"
            label_png = _png_bytes(np.repeat(label[:, :, None], 3, axis=2))  # 3 equal channels = class id
            _atomic_write(tmp / split / "color" / f"{stem}.png", _png_bytes(rgb))
            if split == "test" or i in labelled_set:
                _atomic_write(tmp / split / "rgb" / f"{stem}.png", label_png)
            _atomic_write(tmp / split / "intrinsics" / f"{stem}.txt", _matrix_text(K4))
            _atomic_write(tmp / split / "pose" / f"{stem}.txt", _matrix_text(c2w[i]))
            _atomic_write(tmp / "gt_all" / f"{stem}.png", label_png)
            counts[:] += np.bincount(label.reshape(-1), minlength=20)[:20]

        if progress:
            with progress_bar() as bar:
                for i in bar.track(range(n_views), total=n_views, description="Rendering views"):
                    write_frame(i)
        else:
            for i in range(n_views):
                write_frame(i)
        classes = {"names": list(CARLA8_NAMES), "colors": CARLA8_COLORS.tolist()}
        _atomic_write(tmp / "classes.json", json.dumps(classes, indent=1).encode())
        freq = counts / max(1, counts.sum())  # [20]
        stems = lambda frames: [f"{i:06d}" for i in frames]  # noqa: E731
        meta = {
            "generator": "semsplat_ns.synthetic.town",
            "seed": seed,
            "frames": n_views,
            "res": [resolution, resolution],
            "test_every": test_every,
            "n_labelled": n_labelled,
            "supersample": SUPERSAMPLE,
            "hfov_deg": HFOV_DEG,
            "sun": scene.content["sun"],
            "world_units": "metres * scale; origin at town centre, ground at z=0, +z up",
            "scale": scene.units_per_metre,
            "town_radius_m": scene.content["town_radius_m"],
            "altitude": [float(c2w[:, 2, 3].min()), float(c2w[:, 2, 3].max())],
            "pitch_deg": [
                float(np.degrees(np.arcsin(-c2w[:, 2, 2])).min()),
                float(np.degrees(np.arcsin(-c2w[:, 2, 2])).max()),
            ],  # fmt: skip
            "train_stems": stems(train),
            "test_stems": stems(test),
            "labelled_train_stems": stems(labelled),
            "class_names": list(CARLA8_NAMES),
            "class_pixel_freq_all_frames": {name: float(f) for name, f in zip(CARLA8_NAMES, freq)},
            "content": {k: v for k, v in scene.content.items() if k not in ("sun", "town_radius_m")},
            "landmarks": [{"name": k, "xyz": v} for k, v in scene.landmarks.items()],
            "gt_all": "gt_all/<stem>.png is the label of every frame, for measuring pseudo labels in tests only; "
            "semsplat never reads it",
        }
        _atomic_write(tmp / "meta.json", json.dumps(meta, indent=1).encode())
        if out.exists():
            old = make_temp_dir(out.parent, prefix=f".{out.name}.", suffix=".old")
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
