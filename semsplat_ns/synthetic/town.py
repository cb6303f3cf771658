"""The layout of the procedural demo town: what stands where, of which class, in which colours.

The town is made of axis-aligned boxes (buildings, cars, poles, walls, fences, kiosks, tree trunks), ellipsoids
(tree crowns) and the ground plane ``z = 0`` (roads with dashed centre lines, sidewalks, grass, a parking lot,
a pond). Each object records its 'carla8' class, a texture kind (``TEX_*``, evaluated by
:mod:`semsplat_ns.synthetic.textures`) and its base colours; :func:`ground_class` labels any point of the
ground. :mod:`semsplat_ns.synthetic.orbit` places the cameras and :mod:`semsplat_ns.synthetic.render` turns the
town into photos, labels and depth.

World frame: metres times ``units_per_metre``, origin at the town centre, ground at ``z = 0``, ``+z`` up,
scaled NeRF++-style so that every object lies inside the unit sphere (cameras are outside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from semsplat_ns.data.classes import CARLA8_NAMES
from semsplat_ns.errors import UserInputError

__all__ = ["DemoSceneError", "DemoScene", "build_town", "ground_class"]

# 'carla8' class ids of what the town holds, looked up by name in the one class list of the data side.
BUILDING, WATER, SKY, SIDEWALK, VEGETATION, TERRAIN, STATIC, POLE = (
    CARLA8_NAMES.index(name)
    for name in ("Building", "Water", "Sky", "Sidewalk", "Vegetation", "Terrain", "Static", "Pole")
)
ROAD, ROADLINE, VEHICLES, TRAFFIC_LIGHT, WALL, FENCE, GROUND = (
    CARLA8_NAMES.index(name) for name in ("Road", "RoadLine", "Vehicles", "TrafficLight", "Wall", "Fence", "Ground")
)

# Texture kinds (how a surface's albedo is made, see semsplat_ns.synthetic.textures).
TEX_GRASS, TEX_ASPHALT, TEX_LINE, TEX_TILES, TEX_SLABS, TEX_WATER = 0, 1, 2, 3, 4, 5
TEX_FACADE, TEX_FOLIAGE, TEX_PAINT, TEX_STRIPES = 6, 7, 8, 9
NUM_TEXTURE_KINDS = 10


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


def ground_class(scene: DemoScene, xy: np.ndarray) -> np.ndarray:
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
