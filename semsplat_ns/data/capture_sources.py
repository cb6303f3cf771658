"""What ``--data`` holds and how nerfstudio's own parsers read a capture, for the ``semsplat-data`` dataparser.

``--data`` names a folder (or a nerfstudio .json file); the first match decides: an IRT scene (``train/``), a
nerfstudio capture (``transforms.json``), a COLMAP model (``sparse/0/``, ``colmap/sparse/0/`` or ``sparse/`` with
``cameras.bin|txt``). nerfstudio's parsers read the capture's cameras; what they raise on bad input becomes one
line naming the file (:func:`nerfstudio_errors`).
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Iterator, Literal, Optional, Tuple, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParser
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio

from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir
from semsplat_ns.data.points import PointsFileError
from semsplat_ns.errors import UserInputError

Layout = Literal["irt", "nerfstudio", "colmap"]
"""The scene layouts ``semsplat-data`` reads."""

COLMAP_MODEL_DIRS = (Path("sparse/0"), Path("colmap/sparse/0"), Path("sparse"))
"""Where a COLMAP model is looked for in a capture, in order (COLMAP's own, ns-process-data's, a flat one)."""

FLAG = "--pipeline.datamanager.dataparser"
"""The ns-train prefix of this dataparser's options, for messages."""

SUPPORTED_CAMERA_TYPES = (CameraType.PERSPECTIVE, CameraType.FISHEYE, CameraType.FISHEYE624)
"""Camera types splatfacto can train on: nerfstudio's datamanager undistorts them into pinhole pictures."""


def has_colmap_model(folder: Path) -> bool:
    """Whether ``folder`` holds a COLMAP model (``cameras.bin`` or ``cameras.txt``)."""
    return (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file()


def model_files(folder: Path) -> list[Path]:
    """A COLMAP model's files that exist (cameras, images, points3D; .bin or .txt)."""
    names = [folder / f"{name}{ext}" for name in ("cameras", "images", "points3D") for ext in (".bin", ".txt")]
    return [path for path in names if path.is_file()]


def colmap_points_file(folder: Path) -> Optional[Path]:
    """A COLMAP model's ``points3D.bin`` or else ``points3D.txt`` (the order nerfstudio reads them in), or None."""
    return next((folder / f"points3D{ext}" for ext in (".bin", ".txt") if (folder / f"points3D{ext}").is_file()), None)


def holds_no_points(points_file: Path) -> bool:
    """Whether a COLMAP ``points3D.bin|txt`` holds no point (an empty file, a zero count, comments alone), read
    without parsing the points: nerfstudio's reader fails on such a model."""
    if points_file.suffix.lower() != ".bin":
        with open(points_file, encoding="utf-8", errors="replace") as stream:
            return not any(line.strip() and not line.lstrip().startswith("#") for line in stream)
    with open(points_file, "rb") as stream:
        head = stream.read(8)
    if 0 < len(head) < 8:
        raise IRTDataError(f"{points_file}: truncated ({len(head)} bytes, shorter than a COLMAP point count)")
    return not head or struct.unpack("<Q", head)[0] == 0


def named_ply(transforms: Path) -> Optional[Path]:
    """The point cloud a transforms.json names in ``ply_file_path`` (whether or not it exists), or None."""
    try:
        ply = json.loads(transforms.read_text()).get("ply_file_path")
    except (OSError, ValueError, AttributeError):
        return None
    return transforms.parent / ply if isinstance(ply, str) and ply else None


def detect_layout(data: Path) -> Tuple[Layout, Path]:
    """Tells what ``--data`` holds.

    Args:
        data: The resolved ``--data``: a folder, or a nerfstudio .json file.

    Returns:
        The layout and the file or folder that decided it: the scene folder (IRT), the transforms .json
        (nerfstudio) or the COLMAP model folder (colmap).

    Raises:
        IRTDataError: Nothing semsplat reads is there; the message lists what was looked for.
    """
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".json":
        return "nerfstudio", data
    if (data / "train").is_dir():
        return "irt", data
    if (data / "transforms.json").is_file():
        return "nerfstudio", data / "transforms.json"
    for model in COLMAP_MODEL_DIRS:
        if has_colmap_model(data / model):
            return "colmap", data / model
    present = sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) if data.is_dir() else []
    raise IRTDataError(
        f"{data}: not a scene semsplat reads: no train/ (IRT scene, docs/IRT_LAYOUT.md), no transforms.json "
        f"(nerfstudio capture, ns-process-data) and no COLMAP model in {', '.join(f'{m}/' for m in COLMAP_MODEL_DIRS)} "
        f"(folder has: {', '.join(present[:12]) or 'nothing'})"
    )


def capture_layout(data: Union[str, Path]) -> Layout:
    """What a ``--data`` folder (or nerfstudio .json) holds, for commands that treat captures differently.

    Args:
        data: As ``ns-train --data`` takes it (a bare name is resolved as there).
    """
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() == ".json":
        return "nerfstudio"
    return detect_layout(resolve_scene_dir(path))[0]


class NerfstudioCapture(Nerfstudio):
    """nerfstudio's transforms.json parser, reading ``ply_file_path`` with plyfile instead of open3d.

    open3d is an optional dependency of nerfstudio that often fails to import (it needs system libraries);
    the points and their transform are the same.
    """

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float):
        """The points, or None (no seed points) when the file is missing, empty or holds no vertex; a file that
        is not a PLY stops parsing with one line naming it."""
        from plyfile import PlyData, PlyParseError

        if not ply_file_path.is_file() or ply_file_path.stat().st_size == 0:
            return None  # the dataparser's warning names the file
        try:
            ply = PlyData.read(str(ply_file_path))
        except (PlyParseError, ValueError, EOFError) as error:
            raise PointsFileError(f"{ply_file_path}: not a readable PLY file ({error})") from None
        if "vertex" not in [element.name for element in ply.elements]:
            raise PointsFileError(f"{ply_file_path}: PLY has no 'vertex' element")
        vertex = ply["vertex"]
        if vertex.count == 0:
            return None
        xyz = torch.from_numpy(np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=-1).astype(np.float32))  # [P, 3]
        names = {prop.name for prop in vertex.properties}
        if {"red", "green", "blue"} <= names:
            rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=-1).astype(np.uint8)  # [P, 3]
        else:
            rgb = np.full((vertex.count, 3), 128, dtype=np.uint8)  # [P, 3] grey, as no colour is known
        # nerfstudio's own formula: the ply is in transforms.json's frame, so only transform_matrix applies.
        points = torch.cat((xyz, torch.ones_like(xyz[..., :1])), -1) @ transform_matrix.T  # [P, 3]
        return {"points3D_xyz": points * scale_factor, "points3D_rgb": torch.from_numpy(rgb)}


class ColmapCapture(ColmapDataParser):
    """nerfstudio's COLMAP parser, reading a model whose points3D file holds no point as no points (nerfstudio's
    own reader fails on it); the dataparser then warns and splatfacto starts from random points."""

    def _load_3D_points(self, colmap_path: Path, transform_matrix: torch.Tensor, scale_factor: float):
        points_file = colmap_points_file(colmap_path)
        if points_file is not None and holds_no_points(points_file):
            return {"points3D_xyz": torch.zeros((0, 3)), "points3D_rgb": torch.zeros((0, 3), dtype=torch.uint8)}
        return super()._load_3D_points(colmap_path, transform_matrix, scale_factor)


@contextlib.contextmanager
def nerfstudio_errors(source: Path, parser: str) -> Iterator[None]:
    """Turns what nerfstudio's parsers raise on bad input (asserts, KeyErrors, missing files) into one line."""
    try:
        yield
    except UserInputError:
        raise
    except FileNotFoundError as err:
        missing = err.filename or source
        raise IRTDataError(
            f"{missing}: file does not exist (nerfstudio's {parser} parser reads it for {source})"
        ) from None
    except (AssertionError, KeyError, ValueError, RuntimeError, IndexError, TypeError, OSError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise IRTDataError(f"{source}: nerfstudio's {parser} parser cannot read it: {detail}") from None
