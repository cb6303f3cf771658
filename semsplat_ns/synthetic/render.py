"""Ray casting of the demo town: one view's photo, label and depth.

Photos are ray-cast with numpy (Lambert shading under a sun with cast shadows, 2x2 + centre supersampling,
albedo from :mod:`semsplat_ns.synthetic.textures`); labels and depth come from the ray through each pixel
centre, so they are exact. K has pixel centres at ``+0.5``; poses are camera-to-world with OpenCV axes.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from semsplat_ns.synthetic.textures import GROUND_COLOUR_OF_TEXTURE, GROUND_TEXTURE_OF_CLASS, albedo
from semsplat_ns.synthetic.town import NUM_TEXTURE_KINDS, SKY, DemoScene, DemoSceneError, ground_class

__all__ = ["SUPERSAMPLE", "render_view"]

_HIT_SKY, _HIT_GROUND = -2, -1  # hit index of a ray that meets no object (objects are >= 0)
_SKY_COLOUR = np.array([0.62, 0.74, 0.88])
SUPERSAMPLE = 2  # photos average the centre ray and 2x2 rays per pixel


def _screen_rect(
    corners: np.ndarray, R: np.ndarray, origin: np.ndarray, K: np.ndarray, H: int, W: int
) -> Optional[Tuple[int, int, int, int]]:
    """Pixel rectangle (v0, v1, u0, u1) that holds the projection of a box with ``corners`` ``[8, 3]``.

    Returns the whole image when a corner lies behind the camera, None when the box is out of view.
    """
    cam = (corners - origin) @ R  # [8, 3] camera frame
    if (cam[:, 2] <= 1e-6).any():
        return 0, H, 0, W
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]  # [8]
    v = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]  # [8]
    # pixel j holds samples at u in [j, j + 1); one pixel of margin for rounding
    u0, u1 = max(0, int(math.floor(u.min())) - 1), min(W, int(math.floor(u.max())) + 2)
    v0, v1 = max(0, int(math.floor(v.min())) - 1), min(H, int(math.floor(v.max())) + 2)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def _box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners ``[8, 3]`` of the box [lo, hi]."""
    idx = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])  # [8, 3]
    return np.where(idx == 0, lo[None, :], hi[None, :])


def _cast(
    scene: DemoScene, K: np.ndarray, c2w: np.ndarray, H: int, W: int, offsets: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Casts S rays per pixel and finds the nearest surface along each.

    Args:
        scene: The town.
        K: Intrinsics ``[3, 3]``.
        c2w: Camera-to-world pose ``[4, 4]``, OpenCV axes.
        H: Image height.
        W: Image width.
        offsets: Sub-pixel sample positions ``[S, 2]`` as (du, dv) in [0, 1); 0.5 is the pixel centre.

    Returns:
        dirs ``[H, W, S, 3]`` world directions scaled so that their camera z is 1 (so the hit distance t is the
        camera-frame depth), t ``[H, W, S]`` (inf for sky), hit ``[H, W, S]`` (object index, -1 ground, -2 sky),
        face_axis ``[H, W, S]`` (axis of a box face's normal, -1 otherwise).
    """
    R, origin = c2w[:3, :3], c2w[:3, 3]  # [3, 3], [3]
    u = np.arange(W)[None, :, None] + offsets[None, None, :, 0]  # [1, W, S]
    v = np.arange(H)[:, None, None] + offsets[None, None, :, 1]  # [H, 1, S]
    x_cam = np.broadcast_to((u - K[0, 2]) / K[0, 0], (H, W, len(offsets)))  # [H, W, S]
    y_cam = np.broadcast_to((v - K[1, 2]) / K[1, 1], (H, W, len(offsets)))  # [H, W, S]
    d_cam = np.stack([x_cam, y_cam, np.ones_like(x_cam)], axis=-1)  # [H, W, S, 3]
    dirs = d_cam @ R.T  # [H, W, S, 3]
    t = np.full((H, W, len(offsets)), np.inf)  # [H, W, S]
    hit = np.full((H, W, len(offsets)), _HIT_SKY, np.int64)  # [H, W, S]
    face_axis = np.full((H, W, len(offsets)), -1, np.int64)  # [H, W, S]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = -origin[2] / dirs[..., 2]  # [H, W, S]
    down = (dirs[..., 2] < 0) & (t_ground > 0)  # [H, W, S]
    t[down], hit[down] = t_ground[down], _HIT_GROUND
    # boxes, each tested only on the pixels its projection covers
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)  # [H, W, S, 3] no division by zero on axis-aligned rays
    inv = 1.0 / safe  # [H, W, S, 3]
    for k in range(scene.num_boxes):
        lo, hi = scene.box_lo[k], scene.box_hi[k]  # [3], [3]
        rect = _screen_rect(_box_corners(lo, hi), R, origin, K, H, W)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        inv_sub = inv[v0:v1, u0:u1]  # [h, w, S, 3]
        t1, t2 = (lo - origin) * inv_sub, (hi - origin) * inv_sub  # [h, w, S, 3]
        t_near = np.minimum(t1, t2)  # [h, w, S, 3]
        t_in = t_near.max(axis=-1)  # [h, w, S]
        t_out = np.maximum(t1, t2).min(axis=-1)  # [h, w, S]
        t_sub = t[v0:v1, u0:u1]  # [h, w, S] view into t
        closer = (t_in <= t_out) & (t_in > 0) & (t_in < t_sub)  # [h, w, S]
        t_sub[closer] = t_in[closer]
        hit[v0:v1, u0:u1][closer] = k
        face_axis[v0:v1, u0:u1][closer] = t_near.argmax(axis=-1)[closer]
    # ellipsoids: intersect the unit sphere in the ellipsoid's scaled frame
    for e in range(len(scene.blob_centre)):
        c, r = scene.blob_centre[e], scene.blob_radii[e]  # [3], [3]
        rect = _screen_rect(_box_corners(c - r, c + r), R, origin, K, H, W)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        d = dirs[v0:v1, u0:u1] / r  # [h, w, S, 3]
        o = (origin - c) / r  # [3]
        a = (d * d).sum(-1)  # [h, w, S]
        b = 2.0 * (d @ o)  # [h, w, S]
        disc = b * b - 4.0 * a * (o @ o - 1.0)  # [h, w, S]
        t_e = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)  # [h, w, S] entry point
        t_sub = t[v0:v1, u0:u1]  # [h, w, S]
        closer = (disc >= 0) & (t_e > 0) & (t_e < t_sub)  # [h, w, S]
        t_sub[closer] = t_e[closer]
        hit[v0:v1, u0:u1][closer] = scene.num_boxes + e
        face_axis[v0:v1, u0:u1][closer] = -1
    return dirs, t, hit, face_axis


def _in_shadow(scene: DemoScene, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Whether the ray from each surface point towards the sun hits an object (a cast shadow).

    Points are first bucketed by their coordinates across the sun direction so that each object is tested
    only against the points its shadow can cover.

    Args:
        scene: The town.
        points: Surface points ``[M, 3]`` (world units).
        normal: Unit surface normals ``[M, 3]``; points are lifted off their surface along it.

    Returns:
        Shadow mask ``[M]``.
    """
    sun = scene.sun_dir  # [3]
    e1 = np.cross(sun, [0.0, 0.0, 1.0])  # [3]
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(sun, e1)  # [3]
    origin = points + 1e-5 * normal  # [M, 3] no self-shadowing
    a, b_coord, height = origin @ e1, origin @ e2, origin @ sun  # [M], [M], [M] coordinates across / along the sun
    order = np.argsort(a, kind="stable")  # [M]
    a_sorted = a[order]  # [M]
    shadow = np.zeros(len(points), bool)  # [M]
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.where(np.abs(sun) < 1e-12, 1e-12, sun)  # [3]
    bounds = [(scene.box_lo[k], scene.box_hi[k]) for k in range(scene.num_boxes)]
    bounds += [(c - r, c + r) for c, r in zip(scene.blob_centre, scene.blob_radii)]
    for k, (lo, hi) in enumerate(bounds):
        corners = _box_corners(lo, hi)  # [8, 3]
        ca, cb, ch = corners @ e1, corners @ e2, corners @ sun  # [8], [8], [8]
        start, stop = np.searchsorted(a_sorted, [ca.min(), ca.max()])
        cand = order[start:stop]  # [C]
        cand = cand[(b_coord[cand] >= cb.min()) & (b_coord[cand] <= cb.max()) & (height[cand] < ch.max())]  # [C']
        cand = cand[~shadow[cand]]
        if len(cand) == 0:
            continue
        o = origin[cand]  # [C', 3]
        if k < scene.num_boxes:
            t1, t2 = (lo - o) * inv, (hi - o) * inv  # [C', 3]
            t_in, t_out = np.minimum(t1, t2).max(axis=1), np.maximum(t1, t2).min(axis=1)  # [C'], [C']
            blocked = (t_in > 0) & (t_in <= t_out)  # [C']
        else:
            e = k - scene.num_boxes
            r = scene.blob_radii[e]  # [3]
            oc = (o - scene.blob_centre[e]) / r  # [C', 3]
            d = sun / r  # [3]
            qa, qb, qc = d @ d, 2.0 * (oc @ d), (oc * oc).sum(axis=1) - 1.0  # scalar, [C'], [C']
            disc = qb * qb - 4.0 * qa * qc  # [C']
            blocked = (disc >= 0) & (-qb - np.sqrt(np.maximum(disc, 0.0)) > 0)  # [C'] entry point ahead
        shadow[cand[blocked]] = True
    return shadow


def _shade(
    scene: DemoScene, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray, hit: np.ndarray, face_axis: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Colour and class of flat lists of ray hits.

    Args:
        scene: The town.
        origin: Camera centre ``[3]``.
        dirs: Ray directions ``[N, 3]``.
        t: Hit distances ``[N]`` (inf for sky).
        hit: Object index ``[N]`` (-1 ground, -2 sky).
        face_axis: Box face normal axis ``[N]`` (-1 otherwise).

    Returns:
        Linear colour in [0, 1] ``[N, 3]`` and 'carla8' class ids ``[N]``.
    """
    sky = hit == _HIT_SKY  # [N]
    ground = np.nonzero(hit == _HIT_GROUND)[0]  # [Ng]
    boxes = np.nonzero((hit >= 0) & (hit < scene.num_boxes))[0]  # [Nb]
    blobs = np.nonzero(hit >= scene.num_boxes)[0]  # [Ne]
    p = origin + np.where(sky, 0.0, t)[:, None] * dirs  # [N, 3] world hit points (camera centre for sky)
    p[ground, 2] = 0.0  # exactly on the plane (rounding), which lets the noise skip a lattice layer
    axis = face_axis.copy()  # [N]
    axis[ground] = 2
    normal = np.zeros_like(p)  # [N, 3]
    normal[ground, 2] = 1.0
    normal[boxes, axis[boxes]] = -np.sign(dirs[boxes, axis[boxes]])  # the face the ray enters faces it
    e = hit[blobs] - scene.num_boxes  # [Ne]
    grad = (p[blobs] - scene.blob_centre[e]) / scene.blob_radii[e] ** 2  # [Ne, 3]
    normal[blobs] = grad / np.linalg.norm(grad, axis=1, keepdims=True)
    obj = np.maximum(hit, 0)  # [N] object index; ground and sky rows are overwritten below
    cls = scene.obj_class[obj]  # [N]
    cls[ground] = ground_class(scene, p[ground, :2])
    cls[sky] = SKY
    tex = scene.obj_texture[obj]  # [N]
    tex[ground] = GROUND_TEXTURE_OF_CLASS[cls[ground]]
    base, top = scene.obj_colour[obj], scene.obj_colour_top[obj]  # [N, 3], [N, 3]
    base[ground] = top[ground] = GROUND_COLOUR_OF_TEXTURE[tex[ground]]
    seed = scene.seed * 1009 + hit + 1  # [N] per-object texture seed (all ground shares one)
    p_m = p / scene.units_per_metre  # [N, 3] textures are laid out in metres
    surface_albedo = np.empty_like(p)  # [N, 3]
    tex[sky] = -1
    order = np.argsort(tex, kind="stable")  # [N] samples grouped by texture kind
    bounds = np.cumsum(np.bincount(tex + 1, minlength=NUM_TEXTURE_KINDS + 1))  # [T + 1]
    for k in range(len(bounds) - 1):
        rows = order[bounds[k] : bounds[k + 1]]  # [Nk] samples of texture kind k
        if len(rows):
            surface_albedo[rows] = albedo(k, p_m[rows], axis[rows], base[rows], top[rows], seed[rows])
    lambert = np.clip(normal @ scene.sun_dir, 0.0, None)  # [N] zero for sky (zero normal)
    lit = np.nonzero(lambert > 0)[0]  # [Nl] faces turned away from the sun are dark anyway
    lambert[lit] *= ~_in_shadow(scene, p[lit], normal[lit])
    colour = surface_albedo * (0.38 + 0.72 * lambert)[:, None]  # [N, 3]
    colour[sky] = _SKY_COLOUR
    return np.clip(colour, 0.0, 1.0), cls


def _check_camera(K: np.ndarray, c2w: np.ndarray, H: int, W: int) -> Tuple[np.ndarray, np.ndarray]:
    """Validates and returns K ``[3, 3]`` and c2w ``[4, 4]`` as float64."""
    K = np.asarray(K, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    if K.shape not in ((3, 3), (4, 4)):
        raise DemoSceneError(f"K must be [3, 3] or [4, 4], got shape {K.shape}")
    if c2w.shape not in ((3, 4), (4, 4)):
        raise DemoSceneError(f"c2w must be [3, 4] or [4, 4], got shape {c2w.shape}")
    if int(H) < 1 or int(W) < 1:
        raise DemoSceneError(f"image size must be positive, got H={H}, W={W}")
    K = K[:3, :3]
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DemoSceneError(f"K must be finite with positive focal lengths, got {K.tolist()}")
    R = c2w[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise DemoSceneError("the rotation of c2w must be orthonormal with determinant +1")
    out = np.eye(4)
    out[:3, :4] = c2w[:3, :4]
    return K, out


def render_view(
    scene: DemoScene, K: np.ndarray, c2w: np.ndarray, H: int, W: int, supersample: int = SUPERSAMPLE
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-casts one view of the town.

    Args:
        scene: The town from :func:`~semsplat_ns.synthetic.town.build_town`.
        K: Intrinsics ``[3, 3]`` (or ``[4, 4]`` with K top-left), pixel centres at +0.5.
        c2w: Camera-to-world pose ``[4, 4]`` (or ``[3, 4]``), OpenCV axes (x right, y down, z forward).
        H: Image height in pixels.
        W: Image width in pixels.
        supersample: The photo averages the pixel-centre ray and ``supersample`` x ``supersample`` rays spread
            over the pixel (1: centre ray only). Labels and depth always come from the centre ray.

    Returns:
        rgb uint8 ``[H, W, 3]``, label uint8 ``[H, W]`` ('carla8' ids, Sky where nothing is hit) and depth
        float64 ``[H, W]`` (z of the centre ray's hit in the camera frame, inf where nothing is hit).
    """
    K, c2w = _check_camera(K, c2w, H, W)
    H, W = int(H), int(W)
    if int(supersample) < 1:
        raise DemoSceneError(f"supersample must be >= 1, got {supersample}")
    grid = (np.arange(supersample) + 0.5) / supersample  # [s]
    spread = np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1).reshape(-1, 2)  # [s * s, 2]
    offsets = np.concatenate([[[0.5, 0.5]], spread]) if supersample > 1 else np.array([[0.5, 0.5]])  # [S, 2]
    dirs, t, hit, face_axis = _cast(scene, K, c2w, H, W, offsets)
    S = len(offsets)
    colour, cls = _shade(scene, c2w[:3, 3], dirs.reshape(-1, 3), t.reshape(-1), hit.reshape(-1),
                         face_axis.reshape(-1))  # fmt: skip
    colour = colour.reshape(H, W, S, 3).mean(axis=2)  # [H, W, 3] box filter over the samples
    # a display gamma makes the linear albedo look like a photo
    rgb = np.round(255.0 * colour ** (1 / 2.2)).astype(np.uint8)  # [H, W, 3]
    label = cls.reshape(H, W, S)[:, :, 0].astype(np.uint8)  # [H, W] centre ray
    depth = t[:, :, 0].copy()  # [H, W]
    return rgb, label, depth
