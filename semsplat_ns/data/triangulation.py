"""Triangulation of SIFT features from the KNOWN poses with pycolmap.

The poses and intrinsics are never refined: COLMAP extracts features on the CPU and triangulates them with the
cameras held fixed, so the points come back in the input world frame. The pairs' features are matched by
:mod:`semsplat_ns.data.matching` on a GPU when there is one, else by pycolmap on the CPU
(:attr:`TriangulationOptions.matcher`).

Pixel convention: the IRT data and COLMAP agree -- the top-left image corner is (0, 0) and pixel centres
lie at +0.5, so a centred principal point is cx = W / 2 in both. K is handed to COLMAP unchanged.
(On townA, shifting cx, cy by +-0.5 px raises COLMAP's mean reprojection error, as it should.)

pycolmap is imported only inside the functions that run it: the seed-point cache
(:mod:`semsplat_ns.data.points`) is read on machines without it.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Sequence, Tuple

import numpy as np
from PIL import Image
from rich.progress import Progress

from semsplat_ns.console import progress_bar
from semsplat_ns.errors import UserInputError


class PointsInputError(UserInputError):
    """Bad input to the triangulation: a missing or unreadable image, a malformed K or pose."""


class TriangulationError(RuntimeError):
    """pycolmap failed while processing a scene."""


Matcher = Literal["auto", "torch", "colmap"]
"""The feature matchers of :attr:`TriangulationOptions.matcher`."""

MATCHERS: Dict[str, str] = {
    "torch": "exact mutual nearest neighbours in torch (GPU when there is one), verified by the known cameras",
    "colmap": "pycolmap's CPU matcher, verified by RANSAC of two-view models",
}
"""The matchers that run (``auto`` picks one of them: :func:`resolve_matcher`), with what each does."""


def resolve_matcher(matcher: str) -> str:
    """The matcher that runs for ``matcher``: itself, or for ``auto`` torch where CUDA is available, else colmap.

    Raises:
        ValueError: An unknown matcher.
    """
    if matcher == "auto":
        import torch

        return "torch" if torch.cuda.is_available() else "colmap"
    if matcher not in MATCHERS:
        raise ValueError(f"unknown matcher {matcher!r}; one of auto, {', '.join(MATCHERS)}")
    return matcher


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
    matcher: Matcher = "auto"
    """How the pairs' features are matched (:data:`MATCHERS`): torch (exact mutual nearest neighbours, kept where
    the known cameras' epipolar geometry agrees; on the GPU when there is one), colmap (pycolmap's CPU matcher and
    its RANSAC verification), or auto: torch where CUDA is available, else colmap (faster on a CPU). The two give
    nearly the same points (:mod:`semsplat_ns.data.matching`); with auto, a cache made on a GPU machine is reused on
    a CPU one and the other way round."""
    refinements: int = 1
    """Rounds of pycolmap's global refinement after triangulating: bundle adjustment of the points (cameras held
    fixed), then re-triangulation and track merging. COLMAP's default is 5. On townA with 16 cores
    (benchmarks/results/triangulation_variants.json) one round took 2.3-2.8 s against 4.1-4.5 s for five and kept
    the same points (39.6k against 39.7k, mean error 0.336 against 0.333-0.336 px, nine in ten unmoved); none took
    1.4-1.9 s but left a mean error of 0.38 px and moved the points (p90 0.005 scene units, ~80 cm)."""
    num_threads: int = -1
    """CPU threads for pycolmap; -1 uses all cores. SIFT extraction always runs on the CPU."""


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
            _match_pairs(database_path, work, names, pairs, Ks, c2ws, options, scene, progress)
            task = progress.add_task("Triangulating from the known poses", total=1)
            reconstruction = _triangulate_matches(database_path, work, names, c2ws, options, scene)
            progress.update(task, completed=1)
            return _collect(reconstruction, work / "points", names, options)
    finally:
        pycolmap.logging.minloglevel = old_log_level


def _triangulate_matches(
    database_path: Path, work: Path, names: List[str], c2ws: np.ndarray, options: TriangulationOptions, scene: Path
):
    """pycolmap's triangulation of the database's verified matches, the cameras held at their known poses (images
    under ``work/images``, its own output under ``work/sparse``); the pycolmap.Reconstruction it returns."""
    import pycolmap

    reconstruction = _known_pose_reconstruction(database_path, names, c2ws)
    pipeline_options = pycolmap.IncrementalPipelineOptions()
    pipeline_options.num_threads = options.num_threads
    pipeline_options.ba_global_max_refinements = options.refinements
    # Known poses make two-view points as trustworthy as others; the filters of _collect judge them.
    pipeline_options.triangulation.ignore_two_view_tracks = False
    (work / "sparse").mkdir(exist_ok=True)
    try:
        return pycolmap.triangulate_points(
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
    Ks: np.ndarray,
    c2ws: np.ndarray,
    options: TriangulationOptions,
    scene: Path,
    progress: Progress,
) -> None:
    """Match and verify the chosen pairs into the database with the options' matcher (:data:`MATCHERS`)."""
    if resolve_matcher(options.matcher) == "torch":
        _match_pairs_torch(database_path, names, pairs, Ks, c2ws, progress)
    else:
        _match_pairs_colmap(database_path, work, names, pairs, options, scene, progress)


def _match_pairs_torch(
    database_path: Path,
    names: List[str],
    pairs: List[Tuple[int, int]],
    Ks: np.ndarray,
    c2ws: np.ndarray,
    progress: Progress,
) -> None:
    """:func:`semsplat_ns.data.matching.match_pairs` on the database's features; each pair's matches are written as
    its verified two-view geometry (calibrated, with the known cameras' F, E and relative pose)."""
    import pycolmap
    import torch

    from semsplat_ns.data.matching import fundamental_matrix, match_pairs

    task = progress.add_task("Matching view pairs", total=len(pairs))
    database = pycolmap.Database.open(database_path)
    try:
        image_ids = {image.name: image.image_id for image in database.read_all_images()}
        ids = [image_ids[name] for name in names]
        # copies: pycolmap's arrays are read-only, which torch does not wrap
        descriptors = [torch.tensor(database.read_descriptors(image_id).data) for image_id in ids]  # uint8 [M_i, 128]
        keypoints = [torch.tensor(database.read_keypoints(image_id)[:, :2]) for image_id in ids]  # [M_i, 2] each
        matches = match_pairs(
            descriptors, keypoints, pairs, Ks, c2ws, on_pair=lambda count: progress.advance(task, count)
        )
        for (i, j), pair_matches in zip(pairs, matches):
            if not len(pair_matches):
                continue
            cam2_from_cam1 = np.linalg.inv(c2ws[j]) @ c2ws[i]  # [4, 4]
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            geometry.inlier_matches = pair_matches  # [K, 2]
            geometry.F = fundamental_matrix(Ks[i], Ks[j], c2ws[i], c2ws[j])
            geometry.E = Ks[j].T @ geometry.F @ Ks[i]
            geometry.cam2_from_cam1 = pycolmap.Rigid3d(cam2_from_cam1[:3, :4])
            database.write_matches(ids[i], ids[j], pair_matches)
            database.write_two_view_geometry(ids[i], ids[j], geometry)
    finally:
        database.close()


def _match_pairs_colmap(
    database_path: Path,
    work: Path,
    names: List[str],
    pairs: List[Tuple[int, int]],
    options: TriangulationOptions,
    scene: Path,
    progress: Progress,
) -> None:
    """Match and geometrically verify the chosen pairs with pycolmap on the CPU."""
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


POINT_RECORD = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8"), ("track_length", "<u8")])
"""The fixed head of a point in COLMAP's ``points3D.bin`` (51 bytes, packed); ``track_length`` (image id, point2D
index) pairs of uint32 follow it."""

POINT2D_RECORD = np.dtype([("xy", "<f8", 2), ("point3D_id", "<u8")])
"""A 2D point of an image in COLMAP's ``images.bin`` (24 bytes)."""

NO_POINT3D = np.iinfo(np.uint64).max
"""COLMAP's point3D id of a 2D point that observes no 3D point."""


def _collect(reconstruction, folder: Path, names: List[str], options: TriangulationOptions) -> Triangulation:
    """Filtered points of a pycolmap reconstruction, with their observations mapped to view indices.

    Read from the reconstruction written in COLMAP's binary format (``folder``) with numpy: walking pycolmap's
    objects point by point took 1.3-2.2 s for townA's ~40k points and ~200k observations on the GPU box.
    Points come in the order of their ids, observations in view order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    reconstruction.write_binary(str(folder))
    points = _read_points3d_binary(folder / "points3D.bin")  # [P'] records
    kept = points[
        (points["track_length"] >= options.min_track_length) & (points["error"] < options.max_reprojection_error)
    ]
    kept = kept[np.argsort(kept["id"], kind="stable")]  # [P]
    view_of = {name: index for index, name in enumerate(names)}
    obs_point, obs_image, obs_xy = [], [], []
    for name, points2d in _read_images_binary(folder / "images.bin"):
        observing = points2d[points2d["point3D_id"] != NO_POINT3D]  # [K] 2D points that observe a 3D point
        index = np.searchsorted(kept["id"], observing["point3D_id"])  # [K]
        found = index < len(kept)
        found[found] = kept["id"][index[found]] == observing["point3D_id"][found]  # filtered points observe nothing
        obs_point.append(index[found])
        obs_image.append(np.full(int(found.sum()), view_of[name], dtype=np.int64))
        obs_xy.append(observing["xy"][found])
    return Triangulation(
        xyz=kept["xyz"].astype(np.float32).reshape(-1, 3),  # [P, 3]
        rgb=kept["rgb"].astype(np.uint8).reshape(-1, 3),  # [P, 3]
        errors=kept["error"].astype(np.float32),  # [P]
        obs_point=np.concatenate(obs_point or [np.zeros(0)]).astype(np.int64),  # [M]
        obs_image=np.concatenate(obs_image or [np.zeros(0)]).astype(np.int64),  # [M]
        obs_xy=np.concatenate(obs_xy or [np.zeros((0, 2))]).astype(np.float32).reshape(-1, 2),  # [M, 2]
    )


def _read_points3d_binary(path: Path) -> np.ndarray:
    """The fixed heads (:data:`POINT_RECORD`) of every point in a COLMAP ``points3D.bin``, in file order [P]."""
    data = path.read_bytes()
    count = struct.unpack_from("<Q", data, 0)[0]
    offsets = np.empty(count, dtype=np.int64)  # [P]: where each point's record starts
    offset = 8
    fields = POINT_RECORD.fields
    assert fields is not None
    track_length_at = fields["track_length"][1]  # its byte offset in the head
    for index in range(count):
        offsets[index] = offset
        offset += POINT_RECORD.itemsize + 8 * struct.unpack_from("<Q", data, offset + track_length_at)[0]
    if offset != len(data):
        raise TriangulationError(f"{path}: {len(data)} bytes, but its {count} points take {offset}")
    heads = np.frombuffer(data, dtype=np.uint8)[offsets[:, None] + np.arange(POINT_RECORD.itemsize)]  # [P, 51]
    return heads.view(POINT_RECORD).reshape(count)


def _read_images_binary(path: Path) -> List[Tuple[str, np.ndarray]]:
    """(name, 2D points as :data:`POINT2D_RECORD` [K]) of every image in a COLMAP ``images.bin``."""
    data = path.read_bytes()
    count = struct.unpack_from("<Q", data, 0)[0]
    offset = 8
    images = []
    for _ in range(count):
        offset += 4 + 8 * 7 + 4  # image id, rotation quaternion, translation, camera id
        end = data.index(b"\0", offset)
        name = data[offset:end].decode()
        offset = end + 1
        num_points2d = struct.unpack_from("<Q", data, offset)[0]
        offset += 8
        images.append((name, np.frombuffer(data, dtype=POINT2D_RECORD, count=num_points2d, offset=offset)))
        offset += POINT2D_RECORD.itemsize * num_points2d
    if offset != len(data):
        raise TriangulationError(f"{path}: {len(data)} bytes, but its {count} images take {offset}")
    return images
