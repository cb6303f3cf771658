"""A small procedural town written in the IRT scene layout, for demos and tests.

The town is made of axis-aligned boxes (buildings, cars, poles, walls, fences, kiosks, tree trunks), ellipsoids
(tree crowns) and the ground plane ``z = 0`` (roads with dashed centre lines, sidewalks, grass, a parking lot,
a pond). Every surface carries a 3D procedural texture (value noise, tiles, windows, stripes) evaluated at the
hit point, so the photos are view-consistent and SIFT finds features to match between views. Photos are
ray-cast with numpy (Lambert shading under a sun, 2x2 + centre supersampling); labels and depth come from the
ray through each pixel centre, so they are exact.

World frame: metres times ``units_per_metre``, origin at the town centre, ground at ``z = 0``, ``+z`` up,
scaled NeRF++-style so that every object lies inside the unit sphere (cameras are outside it). Cameras fly an
aerial orbit like the real IRT scenes: full 360 degrees, 35-50 degree pitch, small altitude jitter, looking at
the town centre. Poses are camera-to-world with OpenCV axes (x right, y down, z forward); K has pixel centres at
``+0.5`` (the ray of pixel ``(u, v)`` passes through ``(u + 0.5, v + 0.5)``).

Besides the IRT layout (see ``IRT_LAYOUT.md``) :func:`make_scene` writes ``gt_all/<stem>.png``, the label of
EVERY frame. It exists only so that tests can measure pseudo-label accuracy; semsplat itself never reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from semsplat_ns.errors import UserInputError

__all__ = [
    "CARLA8_NAMES",
    "CARLA8_COLORS",
    "DemoSceneError",
    "DemoScene",
    "build_town",
    "orbit_cameras",
    "render_view",
]

# 'carla8' class order and CARLA 0.9.10-0.9.13 palette, as in IRT_LAYOUT.md.
CARLA8_NAMES: Tuple[str, ...] = (
    "Building", "Water", "Sky", "Sidewalk", "Vegetation", "Terrain", "Static", "Pole", "Other", "Dynamic",
    "Road", "RoadLine", "Vehicles", "TrafficSign", "TrafficLight", "Wall", "Fence", "Ground", "RailTrack", "Bridge",
)  # fmt: skip
CARLA8_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (70, 70, 70), (45, 60, 150), (70, 130, 180), (244, 35, 232), (107, 142, 35), (145, 170, 100),
    (110, 190, 160), (153, 153, 153), (55, 90, 80), (170, 120, 50), (128, 64, 128), (157, 234, 50),
    (0, 0, 142), (220, 220, 0), (250, 170, 30), (102, 102, 156), (100, 40, 40), (81, 0, 81),
    (230, 150, 140), (150, 100, 100),
)  # fmt: skip

BUILDING, WATER, SKY, SIDEWALK, VEGETATION, TERRAIN, STATIC, POLE = 0, 1, 2, 3, 4, 5, 6, 7
ROAD, ROADLINE, VEHICLES, TRAFFIC_LIGHT, WALL, FENCE, GROUND = 10, 11, 12, 14, 15, 16, 17

# Texture kinds (how a surface's albedo is made).
TEX_GRASS, TEX_ASPHALT, TEX_LINE, TEX_TILES, TEX_SLABS, TEX_WATER = 0, 1, 2, 3, 4, 5
TEX_FACADE, TEX_FOLIAGE, TEX_PAINT, TEX_STRIPES = 6, 7, 8, 9
_GROUND_TEXTURE = {TERRAIN: TEX_GRASS, ROAD: TEX_ASPHALT, ROADLINE: TEX_LINE, SIDEWALK: TEX_TILES,
                   GROUND: TEX_SLABS, WATER: TEX_WATER}  # fmt: skip
_GROUND_TEXTURE_OF_CLASS = np.zeros(20, np.int64)  # [20] lookup table of the dict above
for _cls, _tex in _GROUND_TEXTURE.items():
    _GROUND_TEXTURE_OF_CLASS[_cls] = _tex
_GROUND_COLOUR = {TEX_GRASS: (0.30, 0.42, 0.15), TEX_ASPHALT: (0.30, 0.30, 0.31), TEX_LINE: (0.92, 0.90, 0.80),
                  TEX_TILES: (0.66, 0.60, 0.56), TEX_SLABS: (0.52, 0.47, 0.40),
                  TEX_WATER: (0.12, 0.24, 0.42)}  # fmt: skip

_GROUND_COLOUR_OF_TEXTURE = np.zeros((10, 3))  # [T, 3] lookup table of the dict above, T texture kinds
for _tex, _rgb in _GROUND_COLOUR.items():
    _GROUND_COLOUR_OF_TEXTURE[_tex] = _rgb

_HIT_SKY, _HIT_GROUND = -2, -1
_SKY_COLOUR = np.array([0.62, 0.74, 0.88])
_HFOV_DEG = 50.0
_SUPERSAMPLE = 2  # photos average the centre ray and 2x2 rays per pixel
_PITCH_RANGE_DEG = (35.0, 50.0)
_ALTITUDE = 0.75  # mean camera height above the ground, world units


class DemoSceneError(UserInputError):
    """Parameters or inputs that the demo-scene generator cannot use."""


@dataclass
class DemoScene:
    """A procedural town in normalised world units (see the module docstring for the frame)."""

    box_lo: np.ndarray
    """Minimum corner of each box, ``[B, 3]``."""
    box_hi: np.ndarray
    """Maximum corner of each box, ``[B, 3]``."""
    blob_centre: np.ndarray
    """Centre of each ellipsoid (tree crown), ``[E, 3]``."""
    blob_radii: np.ndarray
    """Semi-axes of each ellipsoid along x, y, z, ``[E, 3]``."""
    obj_class: np.ndarray
    """'carla8' class id of each object, boxes first then ellipsoids, ``[B + E]``."""
    obj_texture: np.ndarray
    """Texture kind (``TEX_*``) of each object, ``[B + E]``."""
    obj_colour: np.ndarray
    """Base albedo in [0, 1] of each object's sides, ``[B + E, 3]``."""
    obj_colour_top: np.ndarray
    """Albedo of each object's upward faces (roofs, car roofs), ``[B + E, 3]``."""
    road_x: np.ndarray
    """x of the centre line of each north-south road, ``[Rx]``."""
    road_y: np.ndarray
    """y of the centre line of each east-west road, ``[Ry]``."""
    road_half_width: float
    """Half the width of a road's carriageway."""
    sidewalk_width: float
    """Width of the sidewalk on either side of a road."""
    road_extent: float
    """Roads run from ``-road_extent`` to ``+road_extent``; beyond it the ground is terrain."""
    block_rect: np.ndarray
    """Ground rectangle of each block inside its sidewalks, ``[K, 4]`` as (x0, y0, x1, y1)."""
    block_class: np.ndarray
    """Ground class of each block's rectangle (Terrain, Sidewalk or Ground), ``[K]``."""
    pond_ellipse: np.ndarray
    """Ponds (Water) as (cx, cy, rx, ry), ``[P, 4]``."""
    sun_dir: np.ndarray
    """Unit vector towards the sun, ``[3]``."""
    units_per_metre: float
    """World units per metre; textures are laid out in metres."""
    seed: int
    """Seed the town was built from."""
    landmarks: Dict[str, List[float]] = field(default_factory=dict)
    """Named 3D points in world units (building roof corners and centres) for checking camera conventions."""
    content: Dict[str, object] = field(default_factory=dict)
    """What was built: block kinds and object counts (for meta.json)."""

    @property
    def num_boxes(self) -> int:
        """Number of boxes B."""
        return int(self.box_lo.shape[0])


# ----------------------------------------------------------------------------------------------------------------
# Procedural textures
# ----------------------------------------------------------------------------------------------------------------


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point and seed (a 32-bit integer mix).

    All arguments are int64 arrays of one shape ``[N]`` (``seed`` may also be a scalar).
    """
    mask = np.uint64(0xFFFFFFFF)
    salt = (np.asarray(seed, np.int64).astype(np.uint64) * np.uint64(0x9E3779B9)) & mask  # [N]
    h = (ix.astype(np.uint64) * np.uint64(0x8DA6B343) + iy.astype(np.uint64) * np.uint64(0xD8163841)
         + iz.astype(np.uint64) * np.uint64(0xCB1AB31F) + salt) & mask  # fmt: skip
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & mask
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & mask
    h ^= h >> np.uint64(16)
    return h.astype(np.float64) / 4294967296.0


def _value_noise(p: np.ndarray, freq: float, seed: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise in [0, 1) at points ``p`` ``[N, 3]`` (metres), feature size ~ 1 / ``freq``.

    ``seed`` ``[N]`` picks an independent noise field per point (per object).
    """
    q = p * freq  # [N, 3]
    cell = np.floor(q)  # [N, 3]
    frac = q - cell  # [N, 3]
    w = frac * frac * (3.0 - 2.0 * frac)  # [N, 3] smoothstep weights
    cell = cell.astype(np.int64)  # [N, 3]
    out = np.zeros(len(p))  # [N]
    # on the ground plane (z = 0 exactly) the upper lattice layer has zero weight: skip half the lookups
    layers = (0, 1) if w[:, 2].any() else (0,)
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]  # [N]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]  # [N]
            for dz in layers:
                wz = w[:, 2] if dz else 1.0 - w[:, 2]  # [N]
                out += wx * wy * wz * _hash01(cell[:, 0] + dx, cell[:, 1] + dy, cell[:, 2] + dz, seed)
    return out


def _fbm(p: np.ndarray, freq: float, seed: np.ndarray, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise in [0, 1) at ``p`` ``[N, 3]``; each octave doubles the frequency."""
    total, norm, amp = np.zeros(len(p)), 0.0, 1.0  # [N]
    for k in range(octaves):
        total += amp * _value_noise(p, freq * 2.0**k, seed + 7919 * k)
        norm += amp
        amp *= 0.5
    return total / norm


def _cell_random(p2: np.ndarray, size: float, seed: np.ndarray) -> np.ndarray:
    """Random value in [0, 1) constant over square cells of ``size`` metres; ``p2`` ``[N, 2]``, ``seed`` ``[N]``."""
    cell = np.floor(p2 / size).astype(np.int64)  # [N, 2]
    return _hash01(cell[:, 0], cell[:, 1], np.zeros(len(p2), np.int64), seed)


def _albedo(
    tex: int, p: np.ndarray, axis: np.ndarray, colour: np.ndarray, colour_top: np.ndarray, seed: np.ndarray
) -> np.ndarray:
    """Albedo of samples that share one texture kind.

    Args:
        tex: Texture kind (``TEX_*``).
        p: Hit points in metres, ``[N, 3]``.
        axis: Axis of the surface normal (0 = x, 1 = y, 2 = z; -1 = curved), ``[N]``.
        colour: Base albedo of the object's sides, ``[N, 3]``.
        colour_top: Albedo of the object's upward faces, ``[N, 3]``.
        seed: Per-object texture seed, ``[N]`` (ground samples share one).

    Returns:
        Albedo in [0, 1], ``[N, 3]``.
    """
    s = seed  # [N]
    if tex == TEX_GRASS:
        n = _fbm(p, 0.12, s, 3)  # [N]
        dirt = np.clip((_value_noise(p, 0.035, s + 1) - 0.55) * 6.0, 0.0, 1.0)[:, None]  # [N, 1] dry patches
        base = colour * (0.55 + 0.9 * n)[:, None]  # [N, 3]
        return base * (1 - dirt) + np.array([0.48, 0.42, 0.30]) * (0.7 + 0.6 * n)[:, None] * dirt
    if tex == TEX_ASPHALT:
        n = _fbm(p, 0.35, s, 2)  # [N]
        patch = _cell_random(p[:, :2], 3.0, s + 2)  # [N] repaired patches
        return colour * (0.75 + 0.4 * n + 0.25 * (patch > 0.8))[:, None]
    if tex == TEX_LINE:
        return colour * (0.9 + 0.15 * _value_noise(p, 0.8, s))[:, None]
    if tex == TEX_TILES:
        tile = _cell_random(p[:, :2], 2.0, s + 3)  # [N]
        frac = np.abs(p[:, :2] / 2.0 - np.round(p[:, :2] / 2.0))  # [N, 2] distance to a joint, in tiles
        joint = (frac.min(axis=1) < 0.06)[:, None]  # [N, 1]
        return colour * (0.7 + 0.5 * tile)[:, None] * np.where(joint, 0.6, 1.0)
    if tex == TEX_SLABS:
        slab = _cell_random(p[:, :2], 4.0, s + 4)  # [N]
        return colour * (0.7 + 0.35 * slab + 0.3 * _fbm(p, 0.25, s, 2))[:, None]
    if tex == TEX_WATER:
        return colour * (0.75 + 0.5 * _fbm(p, 0.18, s, 2))[:, None]
    if tex == TEX_FACADE:
        out = np.empty_like(colour)  # [N, 3]
        top = axis == 2  # [N]
        # roof: noise and panels of random brightness
        pt = p[top]  # [T, 3]
        panel = _cell_random(pt[:, :2], 4.0, s[top] + 5)  # [T]
        out[top] = colour_top[top] * (0.7 + 0.3 * panel + 0.35 * _fbm(pt, 0.3, s[top], 2))[:, None]
        # walls: a grid of windows, some lit, on noisy render
        side = ~top  # [S]
        ps = p[side]  # [S, 3]
        along = np.where(axis[side] == 0, ps[:, 1], ps[:, 0])  # [S] horizontal coordinate on the face
        a, b = along / 3.5, ps[:, 2] / 3.4  # [S], [S] in window-bay units
        fa, fb = a - np.floor(a), b - np.floor(b)  # [S], [S]
        window = (fa > 0.22) & (fa < 0.78) & (fb > 0.3) & (fb < 0.82) & (ps[:, 2] > 1.5)  # [S]
        lit = _hash01(np.floor(a).astype(np.int64), np.floor(b).astype(np.int64), axis[side], s[side])  # [S]
        glass = np.array([0.10, 0.13, 0.18]) * (0.6 + 2.2 * lit**3)[:, None]  # [S, 3]
        wall = colour[side] * (0.8 + 0.4 * _fbm(ps, 0.25, s[side], 2))[:, None]  # [S, 3]
        out[side] = np.where(window[:, None], glass, wall)
        return out
    if tex == TEX_FOLIAGE:
        return colour * (0.45 + 1.0 * _fbm(p, 0.45, s, 3))[:, None]
    if tex == TEX_PAINT:
        base = np.where((axis == 2)[:, None], colour_top, colour)  # [N, 3]
        return base * (0.85 + 0.3 * _value_noise(p, 0.6, s))[:, None]
    if tex == TEX_STRIPES:
        along = np.where(axis == 0, p[:, 1], p[:, 0])  # [N]
        stripe = (along / 1.2 - np.floor(along / 1.2)) < 0.5  # [N]
        return colour * np.where(stripe, 1.0, 0.6)[:, None]
    raise DemoSceneError(f"unknown texture kind {tex}")


# ----------------------------------------------------------------------------------------------------------------
# The town
# ----------------------------------------------------------------------------------------------------------------


class _Builder:
    """Collects objects in metres while the town is laid out."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.boxes: List[Tuple[np.ndarray, np.ndarray, int, int, np.ndarray, np.ndarray]] = []
        self.blobs: List[Tuple[np.ndarray, np.ndarray, int, int, np.ndarray, np.ndarray]] = []
        self.roofs: List[Tuple[np.ndarray, np.ndarray]] = []

    def box(self, lo: Sequence[float], hi: Sequence[float], cls: int, tex: int, colour, colour_top=None) -> None:
        """Adds the box [lo, hi] (metres) of class ``cls``; ``colour_top`` colours its upward face."""
        colour = np.clip(np.asarray(colour, float), 0, 1)  # [3]
        top = colour if colour_top is None else np.clip(np.asarray(colour_top, float), 0, 1)  # [3]
        self.boxes.append((np.asarray(lo, float), np.asarray(hi, float), cls, tex, colour, top))

    def blob(self, centre: Sequence[float], radii: Sequence[float], cls: int, tex: int, colour) -> None:
        """Adds an axis-aligned ellipsoid (metres) of class ``cls``."""
        colour = np.clip(np.asarray(colour, float), 0, 1)  # [3]
        self.blobs.append((np.asarray(centre, float), np.asarray(radii, float), cls, tex, colour, colour))

    def jitter(self, colour: Sequence[float], amount: float = 0.12) -> np.ndarray:
        """A colour with random per-object variation."""
        return np.asarray(colour) * (1.0 + self.rng.uniform(-amount, amount, 3))

    def building(self, x0: float, y0: float, x1: float, y1: float, height: float) -> None:
        """A building box, maybe with a set-back upper tier; the top roof becomes a landmark."""
        rng = self.rng
        wall = self.jitter([(0.72, 0.66, 0.56), (0.62, 0.62, 0.64), (0.66, 0.42, 0.34), (0.78, 0.76, 0.70)]
                           [rng.integers(4)])  # fmt: skip
        roof = self.jitter([(0.36, 0.36, 0.38), (0.50, 0.48, 0.44), (0.42, 0.30, 0.26)][rng.integers(3)])
        if height > 16 and rng.uniform() < 0.5 and min(x1 - x0, y1 - y0) > 10:
            low = height * rng.uniform(0.45, 0.65)
            self.box((x0, y0, 0), (x1, y1, low), BUILDING, TEX_FACADE, wall, roof)
            inset = 0.5 * rng.uniform(0.25, 0.4)
            dx, dy = (x1 - x0) * inset, (y1 - y0) * inset
            x0, y0, x1, y1 = x0 + dx, y0 + dy, x1 - dx, y1 - dy
        self.box((x0, y0, 0), (x1, y1, height), BUILDING, TEX_FACADE, wall, roof)
        self.roofs.append((np.array([x0, y0, height]), np.array([x1, y1, height])))

    def tree(self, x: float, y: float) -> None:
        """A trunk and one or two overlapping crowns (all Vegetation, as CARLA labels trunks)."""
        rng = self.rng
        trunk_h, r = rng.uniform(2.0, 3.5), rng.uniform(2.2, 3.8)
        self.box((x - 0.3, y - 0.3, 0), (x + 0.3, y + 0.3, trunk_h + 0.5 * r), VEGETATION, TEX_PAINT,
                 self.jitter((0.35, 0.25, 0.16)))  # fmt: skip
        green = self.jitter((0.22, 0.36, 0.12), 0.2)
        rz = r * rng.uniform(0.9, 1.3)
        self.blob((x, y, trunk_h + rz), (r, r * rng.uniform(0.85, 1.15), rz), VEGETATION, TEX_FOLIAGE, green)
        if rng.uniform() < 0.5:
            off = rng.uniform(-0.5, 0.5, 2) * r
            self.blob((x + off[0], y + off[1], trunk_h + 1.4 * rz), (0.7 * r, 0.7 * r, 0.7 * rz), VEGETATION,
                      TEX_FOLIAGE, green * 1.1)  # fmt: skip

    def car(self, x: float, y: float, along_x: bool) -> None:
        """A car body and cabin (Vehicles), oriented along x or y."""
        rng = self.rng
        length, width = rng.uniform(4.0, 4.8), rng.uniform(1.7, 1.95)
        hx, hy = (length / 2, width / 2) if along_x else (width / 2, length / 2)
        paint = self.jitter([(0.75, 0.1, 0.1), (0.1, 0.2, 0.6), (0.85, 0.85, 0.85), (0.1, 0.1, 0.1),
                             (0.8, 0.65, 0.1), (0.3, 0.45, 0.3)][rng.integers(6)], 0.1)  # fmt: skip
        self.box((x - hx, y - hy, 0.3), (x + hx, y + hy, 1.2), VEHICLES, TEX_PAINT, paint)
        cx, cy = (hx * 0.5, hy * 0.9) if along_x else (hx * 0.9, hy * 0.5)
        self.box((x - cx, y - cy, 1.2), (x + cx, y + cy, 1.7), VEHICLES, TEX_PAINT, (0.08, 0.1, 0.13), paint)

    def fence_ring(self, x0: float, y0: float, x1: float, y1: float, cls: int, height: float, gap_side: int) -> None:
        """Four thin boxes around a rectangle (Wall or Fence), with an opening on side ``gap_side``."""
        t = 0.35
        tex, colour = (TEX_STRIPES, self.jitter((0.45, 0.26, 0.18))) if cls == FENCE else (
            TEX_PAINT, self.jitter((0.70, 0.70, 0.72)))  # fmt: skip
        sides = [((x0, y0 - t), (x1, y0)), ((x0, y1), (x1, y1 + t)), ((x0 - t, y0), (x0, y1)), ((x1, y0), (x1 + t, y1))]
        for k, (lo, hi) in enumerate(sides):
            if k == gap_side:
                continue
            self.box((lo[0], lo[1], 0), (hi[0], hi[1], height), cls, tex, colour)


def build_town(seed: int = 0) -> DemoScene:
    """Lays out a procedural town of 3x3 blocks between roads and normalises it into the unit sphere.

    Args:
        seed: Seed of the layout, colours, sun and textures; the same seed gives the same town.

    Returns:
        The town in normalised world units.
    """
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    pitch, road_hw, sidewalk = 44.0, 4.5, 3.0
    road_lines = np.array([-1.5, -0.5, 0.5, 1.5]) * pitch  # [4] road centre lines, both directions
    road_extent = 2.0 * pitch
    inner = pitch / 2 - road_hw - sidewalk  # half size of a block inside its sidewalks
    kinds = ["park", "parking", "downtown", "residential", "residential", "midrise", "midrise", "residential"]
    kinds.append(["downtown", "park", "residential"][rng.integers(3)])
    kinds = [kinds[k] for k in rng.permutation(9)]
    rects, ground, ponds = [], [], []
    for k, kind in enumerate(kinds):
        cx, cy = (k % 3 - 1) * pitch, (k // 3 - 1) * pitch
        x0, y0, x1, y1 = cx - inner, cy - inner, cx + inner, cy + inner
        rects.append((x0, y0, x1, y1))
        if kind == "downtown":
            ground.append(SIDEWALK)
            m = rng.uniform(1.5, 3.5)
            b.building(x0 + m, y0 + m, x1 - m, y1 - m, rng.uniform(22, 32))
        elif kind == "midrise":
            ground.append(TERRAIN)
            split_x = rng.uniform() < 0.5
            for half in (0, 1):
                lo = (x0 if half == 0 else cx) + 1.5, y0 + 1.5
                hi = (cx if half == 0 else x1) - 1.5, y1 - 1.5
                if not split_x:
                    lo, hi = (x0 + 1.5, (y0 if half == 0 else cy) + 1.5), (x1 - 1.5, (cy if half == 0 else y1) - 1.5)
                b.building(lo[0], lo[1], hi[0], hi[1], rng.uniform(11, 22))
        elif kind == "residential":
            ground.append(TERRAIN)
            for qx in (0, 1):
                for qy in (0, 1):
                    lx, ly = x0 + qx * inner, y0 + qy * inner  # lot corner, lots are inner x inner
                    w, d = rng.uniform(7, 10.5, 2)
                    ox, oy = rng.uniform(1.5, inner - 1.5 - w), rng.uniform(1.5, inner - 1.5 - d)
                    b.building(lx + ox, ly + oy, lx + ox + w, ly + oy + d, rng.uniform(6, 12))
            for _ in range(rng.integers(2, 4)):  # street trees along the block edge
                t = rng.uniform(-inner + 2, inner - 2)
                b.tree(cx + t, y0 + 1.2) if rng.uniform() < 0.5 else b.tree(x0 + 1.2, cy + t)
            b.fence_ring(x0 + 0.5, y0 + 0.5, x1 - 0.5, y1 - 0.5, WALL, 1.6, int(rng.integers(4)))
        elif kind == "park":
            ground.append(TERRAIN)
            pr = rng.uniform(5, 8, 2)
            pc = np.array([cx, cy]) + rng.uniform(-2, 2, 2)
            ponds.append((pc[0], pc[1], pr[0], pr[1]))
            placed = 0
            while placed < 9:
                x, y = rng.uniform(x0 + 2, x1 - 2), rng.uniform(y0 + 2, y1 - 2)
                if ((x - pc[0]) / (pr[0] + 4)) ** 2 + ((y - pc[1]) / (pr[1] + 4)) ** 2 > 1:
                    b.tree(x, y)
                    placed += 1
            kx, ky = x0 + 3, y1 - 6  # a kiosk (Static) in a corner
            b.box((kx, ky, 0), (kx + 3, ky + 3, 3), STATIC, TEX_PAINT, b.jitter((0.6, 0.5, 0.3)), (0.3, 0.5, 0.5))
        elif kind == "parking":
            ground.append(GROUND)
            for row in (-1, 1):
                ys = cy + row * 5.5
                for x in np.linspace(x0 + 3.5, x1 - 3.5, 6):
                    if rng.uniform() < 0.8:
                        b.car(x + rng.uniform(-0.3, 0.3), ys + rng.uniform(-0.4, 0.4), along_x=False)
            b.fence_ring(x0 + 0.4, y0 + 0.4, x1 - 0.4, y1 - 0.4, FENCE, 1.8, int(rng.integers(4)))
    # cars in the lanes of the inner road segments, away from intersections
    for _ in range(16):
        along_x = rng.uniform() < 0.5
        line = road_lines[rng.integers(4)] + rng.choice([-2.2, 2.2])
        seg = rng.integers(3)
        pos = (seg - 1) * pitch + rng.uniform(-pitch / 2 + road_hw + 4, pitch / 2 - road_hw - 4)
        b.car(pos, line, True) if along_x else b.car(line, pos, False)
    # street lamps (Pole) on sidewalk corners; traffic lights at the inner intersections
    for ix in road_lines[1:3]:
        for iy in road_lines[1:3]:
            for sx, sy in ((-1, -1), (1, 1)):
                px, py = ix + sx * (road_hw + 1.0), iy + sy * (road_hw + 1.0)
                b.box((px - 0.2, py - 0.2, 0), (px + 0.2, py + 0.2, 6.5), POLE, TEX_PAINT, (0.45, 0.45, 0.47))
                if sx > 0:
                    b.box((px - 0.4, py - 0.4, 6.5), (px + 0.4, py + 0.4, 7.7), TRAFFIC_LIGHT, TEX_PAINT,
                          (0.15, 0.15, 0.12), (0.9, 0.7, 0.1))  # fmt: skip
    # normalise NeRF++-style: everything built fits inside the unit sphere
    corners = [np.stack([lo, hi]) for lo, hi, *_ in b.boxes] + [np.stack([c - r, c + r]) for c, r, *_ in b.blobs]
    pts = np.concatenate(corners)  # [2 * (B + E), 3]
    extent = np.abs(pts)  # [2 * (B + E), 3] farthest corner of each bounding box from the centre
    town_radius = float(np.sqrt((extent**2).sum(axis=1)).max())
    town_radius = max(town_radius, float(np.hypot(inner + pitch, inner + pitch)))
    upm = 1.0 / (1.03 * town_radius)
    elevation, azimuth = np.radians(rng.uniform(40, 60)), np.radians(rng.uniform(0, 360))
    sun = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                    math.sin(elevation)])  # fmt: skip
    objs = b.boxes + b.blobs
    landmarks: Dict[str, List[float]] = {}
    for k, (lo, hi) in enumerate(b.roofs):
        xs, ys, z = (lo[0], hi[0], hi[0], lo[0]), (lo[1], lo[1], hi[1], hi[1]), lo[2]
        for c in range(4):
            landmarks[f"building{k}_roof_corner_{c}"] = [xs[c] * upm, ys[c] * upm, z * upm]
        landmarks[f"building{k}_roof_centre"] = [(lo[0] + hi[0]) / 2 * upm, (lo[1] + hi[1]) / 2 * upm, z * upm]
    tallest = int(np.argmax([lo[2] for lo, _ in b.roofs]))
    classes = [o[2] for o in objs]
    return DemoScene(
        box_lo=np.array([o[0] for o in b.boxes]) * upm,
        box_hi=np.array([o[1] for o in b.boxes]) * upm,
        blob_centre=np.array([o[0] for o in b.blobs]).reshape(-1, 3) * upm,
        blob_radii=np.array([o[1] for o in b.blobs]).reshape(-1, 3) * upm,
        obj_class=np.array(classes, np.int64),
        obj_texture=np.array([o[3] for o in objs], np.int64),
        obj_colour=np.array([o[4] for o in objs]),
        obj_colour_top=np.array([o[5] for o in objs]),
        road_x=road_lines * upm,
        road_y=road_lines * upm,
        road_half_width=road_hw * upm,
        sidewalk_width=sidewalk * upm,
        road_extent=road_extent * upm,
        block_rect=np.array(rects) * upm,
        block_class=np.array(ground, np.int64),
        pond_ellipse=np.array(ponds).reshape(-1, 4) * upm,
        sun_dir=sun,
        units_per_metre=upm,
        seed=seed,
        landmarks=landmarks,
        content={
            "block_kinds": kinds,
            "buildings": len(b.roofs),
            "tallest_building": f"building{tallest}",
            "trees": sum(1 for c in b.boxes if c[2] == VEGETATION),
            "vehicles_boxes": classes.count(VEHICLES),
            "boxes": len(b.boxes),
            "ellipsoids": len(b.blobs),
            "town_radius_m": town_radius,
            "sun": {"elevation_deg": math.degrees(elevation), "azimuth_deg": math.degrees(azimuth)},
        },
    )


def _ground_class(scene: DemoScene, xy: np.ndarray) -> np.ndarray:
    """'carla8' class of the ground at points ``xy`` ``[N, 2]`` (world units)."""
    x, y = xy[:, 0], xy[:, 1]  # [N], [N]
    cls = np.full(len(xy), TERRAIN, np.int64)  # [N]
    for rect, c in zip(scene.block_rect, scene.block_class):
        cls[(x >= rect[0]) & (x <= rect[2]) & (y >= rect[1]) & (y <= rect[3])] = c
    for cx, cy, rx, ry in scene.pond_ellipse:
        cls[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0] = WATER
    inside = (np.abs(x) <= scene.road_extent) & (np.abs(y) <= scene.road_extent)  # [N]
    dx = np.abs(x[:, None] - scene.road_x[None, :]).min(axis=1)  # [N] distance to a north-south centre line
    dy = np.abs(y[:, None] - scene.road_y[None, :]).min(axis=1)  # [N]
    hw, sw = scene.road_half_width, scene.sidewalk_width
    cls[inside & ((dx <= hw + sw) | (dy <= hw + sw))] = SIDEWALK
    cls[inside & ((dx <= hw) | (dy <= hw))] = ROAD
    # dashed centre lines, left out inside intersections
    line_hw, dash = 0.15 * scene.units_per_metre, 6.0 * scene.units_per_metre
    dash_x = (dx <= line_hw) & (dy > hw) & (np.mod(y, dash) < 0.5 * dash)  # [N]
    dash_y = (dy <= line_hw) & (dx > hw) & (np.mod(x, dash) < 0.5 * dash)  # [N]
    cls[inside & (dash_x | dash_y)] = ROADLINE
    return cls


# ----------------------------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------------------------


def orbit_cameras(
    n_views: int, resolution: int, seed: int = 0, hfov_deg: float = _HFOV_DEG
) -> Tuple[np.ndarray, np.ndarray]:
    """Intrinsics and camera-to-world poses of an aerial orbit around the town centre.

    Args:
        n_views: Number of frames; frame i sits at azimuth ``az0 + 360 * i / n_views`` degrees.
        resolution: Image width and height in pixels.
        seed: Seed of the start azimuth and the altitude / pitch / target jitter.
        hfov_deg: Horizontal field of view in degrees.

    Returns:
        K ``[3, 3]`` (fx = fy, cx = cy = resolution / 2) and c2w ``[n_views, 4, 4]`` (OpenCV axes).
    """
    rng = np.random.default_rng([seed, 1])
    focal = 0.5 * resolution / math.tan(math.radians(hfov_deg) / 2)
    K = np.array([[focal, 0, resolution / 2], [0, focal, resolution / 2], [0, 0, 1.0]])  # [3, 3]
    az0, phase_pitch, phase_alt = rng.uniform(0, 2 * math.pi, 3)
    az = az0 + 2 * math.pi * np.arange(n_views) / n_views  # [V]
    lo, hi = _PITCH_RANGE_DEG
    pitch = (lo + hi) / 2 + 5.0 * np.sin(az + phase_pitch) + rng.uniform(-1.5, 1.5, n_views)  # [V] degrees
    pitch = np.radians(np.clip(pitch, lo, hi))  # [V]
    altitude = _ALTITUDE * (1 + 0.06 * np.sin(2 * az + phase_alt) + rng.uniform(-0.02, 0.02, n_views))  # [V]
    target = np.zeros((n_views, 3))  # [V, 3]
    target[:, :2] = rng.uniform(-0.04, 0.04, (n_views, 2))
    ground_range = altitude / np.tan(pitch)  # [V] horizontal distance camera -> target
    centre = target + np.stack([ground_range * np.cos(az), ground_range * np.sin(az), altitude], axis=1)  # [V, 3]
    forward = target - centre  # [V, 3]
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))  # [V, 3]
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)  # [V, 3]
    c2w = np.tile(np.eye(4), (n_views, 1, 1))  # [V, 4, 4]
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, centre
    return K, c2w


# ----------------------------------------------------------------------------------------------------------------
# Ray casting
# ----------------------------------------------------------------------------------------------------------------


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
    cls[ground] = _ground_class(scene, p[ground, :2])
    cls[sky] = SKY
    tex = scene.obj_texture[obj]  # [N]
    tex[ground] = _GROUND_TEXTURE_OF_CLASS[cls[ground]]
    base, top = scene.obj_colour[obj], scene.obj_colour_top[obj]  # [N, 3], [N, 3]
    base[ground] = top[ground] = _GROUND_COLOUR_OF_TEXTURE[tex[ground]]
    seed = scene.seed * 1009 + hit + 1  # [N] per-object texture seed (all ground shares one)
    p_m = p / scene.units_per_metre  # [N, 3] textures are laid out in metres
    albedo = np.empty_like(p)  # [N, 3]
    tex[sky] = -1
    order = np.argsort(tex, kind="stable")  # [N] samples grouped by texture kind
    bounds = np.cumsum(np.bincount(tex + 1, minlength=len(_GROUND_COLOUR_OF_TEXTURE) + 1))  # [T + 1]
    for k in range(len(bounds) - 1):
        rows = order[bounds[k] : bounds[k + 1]]  # [Nk] samples of texture kind k
        if len(rows):
            albedo[rows] = _albedo(k, p_m[rows], axis[rows], base[rows], top[rows], seed[rows])
    lambert = np.clip(normal @ scene.sun_dir, 0.0, None)  # [N] zero for sky (zero normal)
    lit = np.nonzero(lambert > 0)[0]  # [Nl] faces turned away from the sun are dark anyway
    lambert[lit] *= ~_in_shadow(scene, p[lit], normal[lit])
    colour = albedo * (0.38 + 0.72 * lambert)[:, None]  # [N, 3]
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
    scene: DemoScene, K: np.ndarray, c2w: np.ndarray, H: int, W: int, supersample: int = _SUPERSAMPLE
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-casts one view of the town.

    Args:
        scene: The town from :func:`build_town`.
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
