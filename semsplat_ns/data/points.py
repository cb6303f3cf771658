"""Seed points for splatfacto: SIFT features triangulated from the KNOWN poses with pycolmap, cached as a PLY.

The poses and intrinsics are never refined: COLMAP only matches features and triangulates them with the
cameras held fixed, so the points come back in the input world frame.

Pixel convention: the IRT data and COLMAP agree -- the top-left image corner is (0, 0) and pixel centres
lie at +0.5, so a centred principal point is cx = W / 2 in both. K is handed to COLMAP unchanged.
(On townA, shifting cx, cy by +-0.5 px raises COLMAP's mean reprojection error, as it should.)

The cache (e.g. ``<scene>/sparse/points3D.ply``) is a binary PLY with x y z (float) and red green blue
(uchar); a header comment carries a hash of the inputs, so a changed scene re-triangulates.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from plyfile import PlyData, PlyElement, PlyParseError
from rich.progress import Progress

from semsplat_ns.atomic import atomic_open
from semsplat_ns.console import CONSOLE, progress_bar
from semsplat_ns.errors import UserInputError

# Bump when the triangulation recipe changes: old caches then no longer match.
CACHE_FORMAT = "semsplat-points-v1"
CACHE_KEY_PREFIX = "semsplat-points key="


class PointsInputError(UserInputError):
    """Bad input to the triangulation: a missing or unreadable image, a malformed K or pose."""


class PointsFileError(UserInputError):
    """A points PLY file that cannot be read as x y z red green blue."""


class TriangulationError(RuntimeError):
    """pycolmap failed while processing a scene."""


class FewPointsWarning(UserWarning):
    """Too few points were triangulated: splatfacto falls back to random initialisation."""


@dataclass(frozen=True)
class TriangulationOptions:
    """How features are found, matched and triangulated. Every field but ``num_threads`` is part of the cache key."""

    max_num_features: int = 8192
    """Most SIFT features kept per image (COLMAP finds ~3k on a 512x512 town render)."""
    num_neighbors: int = 8
    """Each view is matched with this many views whose camera centres are nearest (pairs from the known poses,
    which also closes the loop of an orbit)."""
    min_track_length: int = 2
    """Fewest views a point must be observed in to be kept."""
    max_reprojection_error: float = 2.0
    """Largest mean reprojection error (pixels) of a kept point."""
    num_threads: int = -1
    """CPU threads for pycolmap; -1 uses all cores. SIFT and matching always run on the CPU."""


@dataclass
class Triangulation:
    """Triangulated points with their observations (every array index-aligned as documented)."""

    xyz: np.ndarray
    """Positions in the input world frame, float32 [P, 3]."""
    rgb: np.ndarray
    """Colours averaged over the observations, uint8 [P, 3]."""
    errors: np.ndarray
    """Mean reprojection error of each point in pixels, float32 [P]."""
    obs_point: np.ndarray
    """Point index of each observation, int64 [M]."""
    obs_image: np.ndarray
    """Index into the input views of each observation, int64 [M]."""
    obs_xy: np.ndarray
    """Observed feature location (pixels, top-left corner = (0, 0)), float32 [M, 2]."""

    @property
    def num_points(self) -> int:
        """Number of points P."""
        return int(self.xyz.shape[0])

    def track_lengths(self) -> np.ndarray:
        """Number of observations of each point, int64 [P]."""
        return np.bincount(self.obs_point, minlength=self.num_points)  # [P]


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


def select_image_pairs(c2ws_opencv: np.ndarray, num_neighbors: int) -> List[Tuple[int, int]]:
    """Pairs to match: each view with its ``num_neighbors`` nearest camera centres.

    Args:
        c2ws_opencv: Camera-to-world poses [N, 4, 4] (or [N, 3, 4]).
        num_neighbors: Neighbours per view (all other views if N - 1 is smaller).

    Returns:
        Sorted unique pairs (i, j) with i < j.
    """
    centres = np.asarray(c2ws_opencv, dtype=np.float64)[:, :3, 3]  # [N, 3]
    distances = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)  # [N, N]
    np.fill_diagonal(distances, np.inf)
    count = min(num_neighbors, len(centres) - 1)
    pairs = set()
    for i, row in enumerate(distances):
        for j in np.argsort(row, kind="stable")[:count]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def triangulate(
    image_paths: Sequence[Path],
    Ks: np.ndarray,
    c2ws_opencv: np.ndarray,
    options: TriangulationOptions = TriangulationOptions(),
) -> Triangulation:
    """Triangulate SIFT features of the views from their known, fixed cameras (pycolmap, CPU only).

    Works in a temporary folder (images symlinked there, database inside); nothing is written beside the
    images.

    Args:
        image_paths: The photos, in view order (N >= 2).
        Ks: Pinhole intrinsics [N, 3, 3], top-left image corner at (0, 0) (pixel centres at +0.5).
        c2ws_opencv: Camera-to-world poses [N, 4, 4] (or [N, 3, 4]), OpenCV axes (x right, y down, z forward).
        options: Feature, matching and filtering options.

    Returns:
        The points kept (track length >= ``options.min_track_length``, reprojection error below
        ``options.max_reprojection_error``) in the input world frame, with their observations.

    Raises:
        PointsInputError: Inputs of the wrong shape, a missing or unreadable image, a K that does not fit
            its image, a pose that is not rigid.
        TriangulationError: pycolmap failed; the message names the scene folder and the step.
    """
    import pycolmap

    image_paths = [Path(p) for p in image_paths]
    Ks, c2ws = _check_inputs(image_paths, Ks, c2ws_opencv)  # [N, 3, 3], [N, 4, 4]
    scene = Path(os.path.commonpath([str(p.resolve().parent) for p in image_paths]))
    pairs = select_image_pairs(c2ws, options.num_neighbors)
    old_log_level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 2  # errors only: COLMAP's INFO log would drown the progress bar
    try:
        with tempfile.TemporaryDirectory(prefix="semsplat_points_") as work, progress_bar() as progress:
            work = Path(work)
            names = _link_images(image_paths, work / "images")
            database_path = work / "database.db"
            _extract_features(database_path, work / "images", names, image_paths, Ks, options, scene, progress)
            _match_pairs(database_path, work, names, pairs, options, scene, progress)
            task = progress.add_task("Triangulating from the known poses", total=1)
            reconstruction = _known_pose_reconstruction(database_path, names, c2ws)
            pipeline_options = pycolmap.IncrementalPipelineOptions()
            pipeline_options.num_threads = options.num_threads
            # Known poses make two-view points as trustworthy as others; the filters below judge them.
            pipeline_options.triangulation.ignore_two_view_tracks = False
            try:
                reconstruction = pycolmap.triangulate_points(
                    reconstruction,
                    database_path,
                    work / "images",
                    work / "sparse",
                    clear_points=True,
                    options=pipeline_options,
                    refine_intrinsics=False,
                )
            except Exception as error:
                raise TriangulationError(f"{scene}: pycolmap triangulation failed: {error}") from error
            progress.update(task, completed=1)
            return _collect(reconstruction, names, options)
    finally:
        pycolmap.logging.minloglevel = old_log_level


def load_or_triangulate_points(
    image_paths: list[Path],
    Ks: np.ndarray,
    c2ws_opencv: np.ndarray,
    cache_path: Path,
    min_points: int = 100,
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


def _check_inputs(image_paths: List[Path], Ks: np.ndarray, c2ws_opencv: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Validated float64 copies of Ks [N, 3, 3] and c2ws [N, 4, 4]; one clear error otherwise."""
    count = len(image_paths)
    Ks = np.asarray(Ks, dtype=np.float64)
    c2ws = np.asarray(c2ws_opencv, dtype=np.float64)
    if count < 2:
        raise PointsInputError(f"triangulation needs at least 2 views, got {count}")
    if Ks.shape != (count, 3, 3):
        raise PointsInputError(f"Ks must be [{count}, 3, 3] for {count} images, got {list(Ks.shape)}")
    if c2ws.shape not in ((count, 4, 4), (count, 3, 4)):
        raise PointsInputError(f"c2ws_opencv must be [{count}, 4, 4] for {count} images, got {list(c2ws.shape)}")
    if c2ws.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (count, 1, 4))  # [N, 1, 4]
        c2ws = np.concatenate([c2ws, bottom], axis=1)  # [N, 4, 4]
    for index, (image_path, K, c2w) in enumerate(zip(image_paths, Ks, c2ws)):
        if not image_path.is_file():
            raise PointsInputError(f"{image_path}: image not found")
        try:
            with Image.open(image_path) as image:
                width, height = image.size
        except (OSError, ValueError) as error:
            raise PointsInputError(f"{image_path}: not a readable image ({error})") from error
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or K[0, 1] != 0 or np.any(K[2] != (0, 0, 1)):
            raise PointsInputError(f"{image_path}: K (view {index}) is not a pinhole matrix: {K.tolist()}")
        if not (0 < K[0, 2] < width and 0 < K[1, 2] < height):
            raise PointsInputError(
                f"{image_path}: principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside the "
                f"{width}x{height} image; K does not match this image's size"
            )
        rotation = c2w[:3, :3]  # [3, 3]
        rigid = (
            np.all(np.isfinite(c2w))
            and np.allclose(c2w[3], (0, 0, 0, 1))
            and np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4)
            and abs(np.linalg.det(rotation) - 1.0) < 1e-4
        )
        if not rigid:
            raise PointsInputError(f"{image_path}: pose (view {index}) is not a rigid camera-to-world transform")
    return Ks, c2ws


def _link_images(image_paths: List[Path], folder: Path) -> List[str]:
    """Symlink the images into ``folder`` under unique names in view order (copy where links fail)."""
    folder.mkdir(parents=True)
    names = []
    for index, image_path in enumerate(image_paths):
        name = f"{index:05d}{image_path.suffix.lower()}"
        try:
            os.symlink(image_path.resolve(), folder / name)
        except OSError:
            (folder / name).write_bytes(image_path.read_bytes())
        names.append(name)
    return names


def _extract_features(
    database_path: Path,
    image_folder: Path,
    names: List[str],
    image_paths: List[Path],
    Ks: np.ndarray,
    options: TriangulationOptions,
    scene: Path,
    progress: Progress,
) -> None:
    """SIFT on the CPU into the database, one PINHOLE camera per view set to its K."""
    import pycolmap

    reader_options = pycolmap.ImageReaderOptions()
    reader_options.camera_model = "PINHOLE"
    extraction_options = pycolmap.FeatureExtractionOptions()
    extraction_options.num_threads = options.num_threads
    extraction_options.use_gpu = False
    extraction_options.sift.max_num_features = options.max_num_features
    batch = max(8, 4 * max(os.cpu_count() or 1, 1))  # several images per call keeps all threads busy
    task = progress.add_task("Extracting SIFT features", total=len(names))
    for start in range(0, len(names), batch):
        try:
            pycolmap.extract_features(
                database_path,
                image_folder,
                image_names=names[start : start + batch],
                camera_mode=pycolmap.CameraMode.PER_IMAGE,
                reader_options=reader_options,
                extraction_options=extraction_options,
                device=pycolmap.Device.cpu,
            )
        except Exception as error:
            raise TriangulationError(f"{scene}: pycolmap feature extraction failed: {error}") from error
        progress.update(task, advance=len(names[start : start + batch]))
    database = pycolmap.Database.open(database_path)
    try:
        by_name = {image.name: image for image in database.read_all_images()}
        for name, image_path, K in zip(names, image_paths, Ks):
            if name not in by_name:
                raise PointsInputError(f"{image_path}: pycolmap could not read this image")
            camera = database.read_camera(by_name[name].camera_id)
            camera.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]  # PINHOLE: fx, fy, cx, cy
            camera.has_prior_focal_length = True  # lets two-view verification trust the focal length
            database.update_camera(camera)
    finally:
        database.close()


def _match_pairs(
    database_path: Path,
    work: Path,
    names: List[str],
    pairs: List[Tuple[int, int]],
    options: TriangulationOptions,
    scene: Path,
    progress: Progress,
) -> None:
    """Match and geometrically verify the chosen pairs on the CPU."""
    import pycolmap

    matching_options = pycolmap.FeatureMatchingOptions()
    matching_options.num_threads = options.num_threads
    matching_options.use_gpu = False
    chunk = 64
    task = progress.add_task("Matching view pairs", total=len(pairs))
    for start in range(0, len(pairs), chunk):
        pair_list = work / f"pairs_{start:06d}.txt"
        pair_list.write_text("".join(f"{names[i]} {names[j]}\n" for i, j in pairs[start : start + chunk]))
        pairing_options = pycolmap.ImportedPairingOptions()
        pairing_options.match_list_path = pair_list
        try:
            pycolmap.match_image_pairs(
                database_path,
                matching_options=matching_options,
                pairing_options=pairing_options,
                device=pycolmap.Device.cpu,
            )
        except Exception as error:
            raise TriangulationError(f"{scene}: pycolmap feature matching failed: {error}") from error
        progress.update(task, advance=len(pairs[start : start + chunk]))


def _known_pose_reconstruction(database_path: Path, names: List[str], c2ws: np.ndarray):
    """A pycolmap.Reconstruction of the database's cameras and images, each registered at its known pose."""
    import pycolmap

    reconstruction = pycolmap.Reconstruction()
    database = pycolmap.Database.open(database_path)
    try:
        for camera in database.read_all_cameras():
            reconstruction.add_camera_with_trivial_rig(camera)
        view_of = {name: index for index, name in enumerate(names)}
        for db_image in database.read_all_images():
            world_from_cam = c2ws[view_of[db_image.name]]  # [4, 4]
            cam_from_world = np.linalg.inv(world_from_cam)[:3, :4]  # [3, 4]
            image = pycolmap.Image(name=db_image.name, camera_id=db_image.camera_id, image_id=db_image.image_id)
            reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(cam_from_world))
    finally:
        database.close()
    return reconstruction


def _collect(reconstruction, names: List[str], options: TriangulationOptions) -> Triangulation:
    """Filtered points of a pycolmap reconstruction, with their observations mapped to view indices."""
    view_of = {name: index for index, name in enumerate(names)}
    images = {image_id: image for image_id, image in reconstruction.images.items()}
    xyz, rgb, errors, obs_point, obs_image, obs_xy = [], [], [], [], [], []
    for point_id in sorted(reconstruction.point3D_ids()):
        point = reconstruction.point3D(point_id)
        elements = point.track.elements
        if len(elements) < options.min_track_length or not point.error < options.max_reprojection_error:
            continue
        index = len(xyz)
        xyz.append(point.xyz)
        rgb.append(point.color)
        errors.append(point.error)
        for element in elements:
            image = images[element.image_id]
            obs_point.append(index)
            obs_image.append(view_of[image.name])
            obs_xy.append(image.points2D[element.point2D_idx].xy)
    return Triangulation(
        xyz=np.asarray(xyz, dtype=np.float32).reshape(-1, 3),  # [P, 3]
        rgb=np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),  # [P, 3]
        errors=np.asarray(errors, dtype=np.float32),  # [P]
        obs_point=np.asarray(obs_point, dtype=np.int64),  # [M]
        obs_image=np.asarray(obs_image, dtype=np.int64),  # [M]
        obs_xy=np.asarray(obs_xy, dtype=np.float32).reshape(-1, 2),  # [M, 2]
    )
