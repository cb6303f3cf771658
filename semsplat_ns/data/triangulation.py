"""Triangulation of SIFT features from the KNOWN poses with pycolmap (CPU only).

The poses and intrinsics are never refined: COLMAP only matches features and triangulates them with the
cameras held fixed, so the points come back in the input world frame.

Pixel convention: the IRT data and COLMAP agree -- the top-left image corner is (0, 0) and pixel centres
lie at +0.5, so a centred principal point is cx = W / 2 in both. K is handed to COLMAP unchanged.
(On townA, shifting cx, cy by +-0.5 px raises COLMAP's mean reprojection error, as it should.)

pycolmap is imported only inside the functions that run it: the seed-point cache
(:mod:`semsplat_ns.data.points`) is read on machines without it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image
from rich.progress import Progress

from semsplat_ns.console import progress_bar
from semsplat_ns.errors import UserInputError


class PointsInputError(UserInputError):
    """Bad input to the triangulation: a missing or unreadable image, a malformed K or pose."""


class TriangulationError(RuntimeError):
    """pycolmap failed while processing a scene."""


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
