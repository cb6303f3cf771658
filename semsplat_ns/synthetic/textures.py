"""Procedural 3D textures of the demo town: the albedo of a surface point from its texture kind.

Textures are evaluated at the 3D hit point (in metres), so the photos are view-consistent and SIFT finds
features to match between views: value noise and its fractal sum, random tiles and slabs, facades with a
grid of windows, stripes. Each object has its own seed, so two objects of one kind do not look alike.
"""

from __future__ import annotations

import numpy as np

from semsplat_ns.data.classes import CARLA8_NAMES
from semsplat_ns.synthetic.town import (
    GROUND,
    NUM_TEXTURE_KINDS,
    ROAD,
    ROADLINE,
    SIDEWALK,
    TERRAIN,
    TEX_ASPHALT,
    TEX_FACADE,
    TEX_FOLIAGE,
    TEX_GRASS,
    TEX_LINE,
    TEX_PAINT,
    TEX_SLABS,
    TEX_STRIPES,
    TEX_TILES,
    TEX_WATER,
    WATER,
    DemoSceneError,
)

__all__ = ["GROUND_TEXTURE_OF_CLASS", "GROUND_COLOUR_OF_TEXTURE", "albedo"]

# Ground classes and how they look: ground class -> texture kind -> base colour.
_GROUND_TEXTURE = {TERRAIN: TEX_GRASS, ROAD: TEX_ASPHALT, ROADLINE: TEX_LINE, SIDEWALK: TEX_TILES,
                   GROUND: TEX_SLABS, WATER: TEX_WATER}  # fmt: skip
GROUND_TEXTURE_OF_CLASS = np.zeros(len(CARLA8_NAMES), np.int64)  # [C] lookup table of the dict above, C classes
for _cls, _tex in _GROUND_TEXTURE.items():
    GROUND_TEXTURE_OF_CLASS[_cls] = _tex
_GROUND_COLOUR = {TEX_GRASS: (0.30, 0.42, 0.15), TEX_ASPHALT: (0.30, 0.30, 0.31), TEX_LINE: (0.92, 0.90, 0.80),
                  TEX_TILES: (0.66, 0.60, 0.56), TEX_SLABS: (0.52, 0.47, 0.40),
                  TEX_WATER: (0.12, 0.24, 0.42)}  # fmt: skip
GROUND_COLOUR_OF_TEXTURE = np.zeros((NUM_TEXTURE_KINDS, 3))  # [T, 3] lookup table of the dict above, T kinds
for _tex, _rgb in _GROUND_COLOUR.items():
    GROUND_COLOUR_OF_TEXTURE[_tex] = _rgb


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


def albedo(
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
