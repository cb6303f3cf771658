"""Seed points for splatfacto: triangulated from the known poses (:mod:`semsplat_ns.data.triangulation`) and
cached as a PLY.

The cache (e.g. ``<scene>/sparse/points3D.ply``) is a binary PLY with x y z (float) and red green blue
(uchar); a header comment carries a hash of the inputs, so a changed scene re-triangulates.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from semsplat_ns.atomic import atomic_open
from semsplat_ns.console import CONSOLE
from semsplat_ns.data.triangulation import PointsInputError, TriangulationOptions, triangulate
from semsplat_ns.errors import UserInputError

# Bump when the triangulation recipe changes: old caches then no longer match.
CACHE_FORMAT = "semsplat-points-v1"
CACHE_KEY_PREFIX = "semsplat-points key="


class PointsFileError(UserInputError):
    """A points PLY file that cannot be read as x y z red green blue."""


MIN_SEED_POINTS = 100
"""Fewest sparse points worth seeding splatfacto with, triangulated or a capture's own; below it, random
initialisation (splatfacto's kNN scale initialisation needs at least 4)."""


class FewPointsWarning(UserWarning):
    """Too few points were triangulated: splatfacto falls back to random initialisation."""


class PlyPoints(NamedTuple):
    """Contents of a points PLY file."""

    xyz: np.ndarray  # [P, 3] float32
    rgb: np.ndarray  # [P, 3] uint8
    comments: List[str]


def write_points_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, comment: str = "") -> None:
    """Write points atomically as a binary PLY (temp file in the same folder, then ``os.replace``).

    Args:
        path: Destination file; its folder is created if needed.
        xyz: Positions [P, 3]; stored as float32.
        rgb: Colours [P, 3]; stored as uint8.
        comment: Text for a header comment line (single line), e.g. the cache key.
    """
    path = Path(path)
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise PointsInputError(f"{path}: xyz and rgb must both be [P, 3], got {xyz.shape} and {rgb.shape}")
    if "\n" in comment or "\r" in comment:
        raise PointsInputError(f"{path}: a PLY comment must be a single line")
    vertices = np.empty(
        xyz.shape[0], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )  # [P]
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, channel]
    ply = PlyData(
        [PlyElement.describe(vertices, "vertex")], text=False, byte_order="<", comments=[comment] if comment else []
    )
    with atomic_open(path, "wb") as stream:
        ply.write(stream)


def read_points_ply(path: Path) -> PlyPoints:
    """Read a PLY (binary or ascii) with a ``vertex`` element holding x y z and red green blue.

    Args:
        path: The PLY file.

    Returns:
        ``PlyPoints(xyz float32 [P, 3], rgb uint8 [P, 3], comments)``.

    Raises:
        PointsFileError: The file is missing, not a PLY, or lacks one of the properties.
    """
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except (OSError, PlyParseError, ValueError, EOFError) as error:
        raise PointsFileError(f"{path}: not a readable PLY file ({error})") from error
    if "vertex" not in [element.name for element in ply.elements]:
        raise PointsFileError(f"{path}: PLY has no 'vertex' element")
    vertex = ply["vertex"]
    names = [prop.name for prop in vertex.properties]
    missing = [name for name in ("x", "y", "z", "red", "green", "blue") if name not in names]
    if missing:
        raise PointsFileError(f"{path}: PLY vertex element lacks {', '.join(missing)} (has {', '.join(names)})")
    xyz = np.stack([np.asarray(vertex[name], dtype=np.float32) for name in "xyz"], axis=1)  # [P, 3]
    rgb = np.stack([np.asarray(vertex[name]) for name in ("red", "green", "blue")], axis=1)  # [P, 3]
    if rgb.dtype != np.uint8:
        if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
            raise PointsFileError(f"{path}: colours must lie in 0..255")
        rgb = rgb.astype(np.uint8)
    return PlyPoints(xyz, rgb, list(ply.comments))


def points_cache_key(
    image_paths: Sequence[Path],
    Ks: np.ndarray,
    c2ws_opencv: np.ndarray,
    options: TriangulationOptions = TriangulationOptions(),
) -> str:
    """Hash of everything that decides the points: image names and contents, Ks, poses, options.

    Contents rather than mtimes, so a copied scene keeps its cache. The pycolmap version is left out on
    purpose: a cache made elsewhere stays usable on machines without pycolmap (e.g. a GPU box).

    Args:
        image_paths: The photos, in view order.
        Ks: Intrinsics [N, 3, 3].
        c2ws_opencv: Camera-to-world poses [N, 4, 4] (or [N, 3, 4]).
        options: Triangulation options (``num_threads`` excluded: it does not change the recipe).

    Returns:
        A hex SHA-256 digest.
    """
    digest = hashlib.sha256()
    recipe = {k: v for k, v in asdict(options).items() if k != "num_threads"}
    digest.update(f"{CACHE_FORMAT};{sorted(recipe.items())}".encode())
    for image_path in image_paths:
        image_path = Path(image_path)
        digest.update(image_path.name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256(image_path.read_bytes()).digest())
        except OSError as error:
            raise PointsInputError(f"{image_path}: cannot read image ({error})") from error
    digest.update(np.ascontiguousarray(Ks, dtype=np.float64).tobytes())  # [N, 3, 3]
    digest.update(np.ascontiguousarray(c2ws_opencv, dtype=np.float64).tobytes())  # [N, 4, 4]
    return digest.hexdigest()


def load_or_triangulate_points(
    image_paths: list[Path],
    Ks: np.ndarray,
    c2ws_opencv: np.ndarray,
    cache_path: Path,
    min_points: int = MIN_SEED_POINTS,
    *,
    options: Optional[TriangulationOptions] = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed points for splatfacto: read them from ``cache_path`` if its key matches, else triangulate and cache.

    Args:
        image_paths: The photos, in view order.
        Ks: Pinhole intrinsics [N, 3, 3], top-left image corner at (0, 0) (cx = W / 2 when centred).
        c2ws_opencv: Camera-to-world poses [N, 4, 4], OpenCV axes, in the input world frame.
        cache_path: PLY cache, e.g. ``<scene>/sparse/points3D.ply``; written atomically.
        min_points: Fewest points worth seeding with; below it a single ``FewPointsWarning`` is issued.
        options: Triangulation options (defaults if None).

    Returns:
        ``(xyz float32 [P, 3], rgb uint8 [P, 3])`` in the input world frame, or None when fewer than
        ``min_points`` points came out (random initialisation is then used).
    """
    options = options or TriangulationOptions()
    cache_path = Path(cache_path)
    if cache_path.parent.name == "rgb":
        raise PointsInputError(f"{cache_path}: rgb/ holds ground-truth labels; put the points cache elsewhere")
    key = points_cache_key(image_paths, Ks, c2ws_opencv, options)
    cached = _read_cache(cache_path, key)
    if cached is not None:
        xyz, rgb = cached
    else:
        result = triangulate(image_paths, Ks, c2ws_opencv, options)
        xyz, rgb = result.xyz, result.rgb
        # Cached even when too few: re-running would give the same few points.
        write_points_ply(cache_path, xyz, rgb, comment=CACHE_KEY_PREFIX + key)
        CONSOLE.print(f"[green]{len(xyz)} points triangulated from {len(image_paths)} views, cached in {cache_path}")
    if len(xyz) < min_points:
        warnings.warn(
            f"{cache_path}: only {len(xyz)} points triangulated (fewer than min_points={min_points}); "
            "random initialisation will be used.",
            FewPointsWarning,
            stacklevel=2,
        )
        return None
    return xyz, rgb


def _read_cache(cache_path: Path, key: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Cached points if ``cache_path`` exists, reads, and carries ``key``; else None."""
    if not cache_path.exists():
        return None
    try:
        cached = read_points_ply(cache_path)
    except PointsFileError as error:
        CONSOLE.print(f"[yellow]Ignoring unreadable points cache: {error}")
        return None
    if CACHE_KEY_PREFIX + key not in cached.comments:
        CONSOLE.print(f"[yellow]{cache_path} was made from other inputs; triangulating again")
        return None
    return cached.xyz, cached.rgb
