"""The classes of a scene: their names, their colours, and the one rule for how many there are.

An IRT scene (docs/IRT_LAYOUT.md) may name its classes in ``<scene>/classes.json``
(``{"names": [...], "colors": [[r, g, b], ...]}``, index = class id); without it the classes are
``class_<i>`` up to the largest id found in the labels, coloured by :func:`default_palette` (the
'carla8' CARLA palette first). Class id :data:`~semsplat_ns.data.irt_io.IGNORE_ID` (255) means "no class".
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np

from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError, decode_label, palette_codes

# 'carla8' class order of the IRT CARLA scenes (CARLA 0.9.10-0.9.13 palette), ids 0-19 (docs/IRT_LAYOUT.md).
CARLA8_NAMES: Tuple[str, ...] = (
    "Building", "Water", "Sky", "Sidewalk", "Vegetation", "Terrain", "Static", "Pole", "Other", "Dynamic",
    "Road", "RoadLine", "Vehicles", "TrafficSign", "TrafficLight", "Wall", "Fence", "Ground", "RailTrack", "Bridge",
)  # fmt: skip
CARLA8_COLORS = np.array(
    [
        [70, 70, 70],
        [45, 60, 150],
        [70, 130, 180],
        [244, 35, 232],
        [107, 142, 35],
        [145, 170, 100],
        [110, 190, 160],
        [153, 153, 153],
        [55, 90, 80],
        [170, 120, 50],
        [128, 64, 128],
        [157, 234, 50],
        [0, 0, 142],
        [220, 220, 0],
        [250, 170, 30],
        [102, 102, 156],
        [100, 40, 40],
        [81, 0, 81],
        [230, 150, 140],
        [150, 100, 100],
    ],
    dtype=np.uint8,
)  # [20, 3]


def default_palette(num_classes: int) -> np.ndarray:
    """A fixed palette of distinct colours, the carla8 colours first.

    Args:
        num_classes: Number of colours wanted.

    Returns:
        uint8 [num_classes, 3].
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0; got {num_classes}")
    colors = [tuple(int(v) for v in c) for c in CARLA8_COLORS[:num_classes]]
    seen = set(colors)
    step = 0
    while len(colors) < num_classes:
        # Golden-ratio hues over a few saturation/value rings: deterministic and well spread.
        hue = (step * 0.618033988749895) % 1.0
        saturation = (0.85, 0.55, 0.95, 0.4)[(step // 7) % 4]
        value = (0.95, 0.7, 0.5, 0.85, 0.35)[(step // 3) % 5]
        rgb = tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, saturation, value))
        step += 1
        if rgb not in seen:
            seen.add(rgb)
            colors.append(rgb)
    return np.array(colors, dtype=np.uint8).reshape(num_classes, 3)


def read_classes_json(path: Path) -> Tuple[List[str], np.ndarray]:
    """Reads ``classes.json``: ``{"names": [...], "colors": [[r, g, b], ...]}``, index = class id.

    Args:
        path: The file; "colors" may be left out (then :func:`default_palette` is used).

    Returns:
        Class names and uint8 [C, 3] colours (distinct, so colour-coded labels decode unambiguously).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise IRTDataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise IRTDataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise IRTDataError(f'{path}: expected an object {{"names": [...], "colors": [[r, g, b], ...]}}')
    names = data["names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise IRTDataError(f'{path}: "names" must be a non-empty list of strings')
    if len(names) > IGNORE_ID:
        raise IRTDataError(f"{path}: {len(names)} classes; at most 255 are possible (id 255 means ignore)")
    if "colors" not in data:
        return list(names), default_palette(len(names))
    try:
        colors = np.array(data["colors"], dtype=np.float64)  # [C, 3]
    except (TypeError, ValueError):
        raise IRTDataError(f'{path}: "colors" must be a list of [r, g, b] integers') from None
    if colors.shape != (len(names), 3):
        raise IRTDataError(
            f'{path}: "colors" must hold one [r, g, b] per name ({len(names)} x 3); got shape {colors.shape}'
        )
    if not np.all((colors >= 0) & (colors <= 255) & (colors == np.round(colors))):
        raise IRTDataError(f'{path}: "colors" must be integers in 0..255')
    colors8 = colors.astype(np.uint8)  # [C, 3]
    codes = palette_codes(colors8)  # [C]
    if len(np.unique(codes)) != len(codes):
        _, first, counts = np.unique(codes, return_index=True, return_counts=True)
        dup = int(first[counts > 1][0])
        raise IRTDataError(f"{path}: colour {colors8[dup].tolist()} is used by more than one class")
    return list(names), colors8


@dataclass(frozen=True)
class SceneClasses:
    """The classes of a scene."""

    names: List[str]
    colors: np.ndarray  # [C, 3] uint8
    label_is_color: bool
    """Labels are colour-coded through the palette (else channel 0 holds the class id)."""

    @property
    def num_classes(self) -> int:
        return len(self.names)


def read_scene_classes(scene_dir: Path) -> SceneClasses:
    """The classes of a scene: names and colours from classes.json, else ``class_<i>`` up to the largest id
    over the labels of every split (the one rule for the number of classes), and whether labels are
    colour-coded.

    Args:
        scene_dir: The IRT scene folder.
    """
    scene = Path(scene_dir)
    label_paths: List[Path] = []
    for name in ("train", "test", "validation"):
        rgb_dir = scene / name / "rgb"
        if rgb_dir.is_dir():
            label_paths += sorted(p for p in rgb_dir.glob("*.png") if not p.name.startswith("."))
    classes_json = scene / "classes.json"
    if classes_json.is_file():
        names, colors = read_classes_json(classes_json)
        is_color = False
        for path in label_paths:
            is_color |= decode_label(path, colors, len(names))[1]
    else:
        max_id = -1
        is_color = False
        for path in label_paths:
            ids, _ = decode_label(path, None, None)  # [H, W]
            valid = ids[ids != IGNORE_ID]  # [M]
            if valid.size:
                max_id = max(max_id, int(valid.max()))
        if max_id < 0:
            raise IRTDataError(
                f"{scene}: no classes.json and no label holds a class id; cannot tell the number of classes"
            )
        names = [f"class_{i}" for i in range(max_id + 1)]
        colors = default_palette(max_id + 1)
    return SceneClasses(names=names, colors=colors, label_is_color=is_color)
