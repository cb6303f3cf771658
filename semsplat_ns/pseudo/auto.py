"""Automatic pseudo labels for ``ns-train``: the datamanager asks for the prior's pseudo labels before training
and they are made once, then cached in the scene's store (``train/pseudo/`` of an IRT scene,
``semsplat_pseudo/pseudo/`` of a capture; its ``meta.json`` records their parameters and an input digest)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Literal, Optional

from semsplat_ns.console import CONSOLE
from semsplat_ns.geometry.visibility import ReprojectSettings
from semsplat_ns.pseudo.pipeline import BACKENDS, PseudoLabelArgs, cache_key, output_files, run
from semsplat_ns.pseudo.prior import PriorSettings
from semsplat_ns.pseudo.scene import read_scene
from semsplat_ns.pseudo.store import PSEUDO_DIR, input_digest, meta_path, read_previous_meta

AutoStatus = Literal["made", "reused", "rebuilt", "kept", "skipped"]
"""What :func:`ensure_pseudo_labels` did."""


@dataclass(frozen=True)
class AutoPseudoLabels:
    """What :func:`ensure_pseudo_labels` did, and how long each stage of the pipeline took when it ran it."""

    status: AutoStatus
    """made, reused, rebuilt, kept or skipped."""
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    """Stage name -> wall seconds of the pipeline's run (``meta.json``'s ``times_s`` without its total: read_scene,
    depth, read_photos, reproject, prior_train, prior_predict, write); empty when nothing was made."""


def _made(record: Dict[str, Any], status: AutoStatus) -> AutoPseudoLabels:
    times = record.get("times_s") or {}
    return AutoPseudoLabels(status, {str(k): float(v) for k, v in times.items() if k != "total"})


def _pseudo_files_exist(root: Path) -> bool:
    folder = root / PSEUDO_DIR
    return folder.is_dir() and any(p.suffix == ".png" and not p.name.startswith(".") for p in folder.iterdir())


def _writable(root: Path) -> bool:
    """Whether the store can be written: the root itself, or the nearest folder above it that exists."""
    folder = root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def ensure_pseudo_labels(
    scene_dir: Path,
    settings: PriorSettings,
    device: Optional[str] = None,
    dataparser: Optional[Any] = None,
    reproject: Optional[ReprojectSettings] = None,
) -> AutoPseudoLabels:
    """The datamanager's automatic pseudo labels: prior pseudo labels made before training when the scene
    has none, cached under train/pseudo with their parameters and input digest in meta.json.

    * no pseudo labels yet: made with ``--backend prior``;
    * a cache whose parameters and inputs equal these: reused;
    * an automatic cache whose parameters or inputs differ, or with files missing: rebuilt;
    * pseudo labels made otherwise (``semsplat-pseudo-labels``, by hand): kept as they are;
    * a scene whose store cannot be written (e.g. a read-only share): skipped, training goes on without them.

    One console line says which.

    Args:
        scene_dir: The IRT scene folder, or a capture (folder or .json file).
        settings: The prior's recipe and threshold.
        device: Device of the prior when ``settings.device`` is unset (e.g. the trainer's).
        dataparser: The run's ``semsplat-data`` options (a capture is read with them: its split and pictures).
        reproject: The reprojection's tolerances (part of the cache key); None: semsplat-pseudo-labels' defaults.

    Returns:
        What was done, with the stage times of the pipeline when it ran (made or rebuilt).
    """
    scene_dir = Path(scene_dir)
    args = PseudoLabelArgs(
        data=scene_dir,
        backend="prior",
        prior=replace(settings, device=settings.device or device),
        overwrite=True,
        **asdict(reproject or ReprojectSettings()),
    )
    scene = read_scene(scene_dir, dataparser)
    root = scene.root
    meta_file = meta_path(root)
    previous = read_previous_meta(meta_file) if meta_file.is_file() else None
    digest = input_digest(scene)
    want = cache_key(args)
    complete = all(p.is_file() for i in scene.targets for p in output_files(root, scene.stems[i], BACKENDS["prior"]))
    where = root / PSEUDO_DIR
    if previous is not None and previous.get("cache_key") == want and previous.get("inputs_sha256") == digest:
        if complete:
            CONSOLE.print(f"Pseudo labels: reusing the prior's in {where} (inputs and parameters unchanged)")
            return AutoPseudoLabels("reused")
    if (previous is None or previous.get("origin") == "auto") and not _writable(root):
        CONSOLE.print(
            f"[bold yellow]Pseudo labels: {root} is not writable, so none are made; training goes "
            "on without them (copy the scene somewhere writable, or run semsplat-pseudo-labels on a copy)"
        )
        return AutoPseudoLabels("skipped")
    if previous is None and not _pseudo_files_exist(root):
        CONSOLE.print(f"Pseudo labels: none in {where}; making them with the prior (cached for the next run)")
        return _made(run(args, origin="auto", dataparser=dataparser), "made")
    if previous is not None and previous.get("origin") == "auto":
        reasons = []
        if previous.get("cache_key") != want:
            before = previous.get("cache_key") or {}
            changed = sorted(k for k in set(want) | set(before) if want.get(k) != before.get(k))
            if "prior" in changed:
                old_prior, new_prior = before.get("prior") or {}, want["prior"]
                changed.remove("prior")
                names = sorted(set(old_prior) | set(new_prior))
                changed += [f"prior.{k}" for k in names if old_prior.get(k) != new_prior.get(k)]
            reasons.append("parameters changed (" + ", ".join(changed) + ")")
        if previous.get("inputs_sha256") != digest:
            reasons.append("scene inputs changed")
        if not complete:
            reasons.append("files missing")
        CONSOLE.print(f"Pseudo labels: rebuilding the prior's pseudo labels in {where}: {'; '.join(reasons)}")
        return _made(run(args, origin="auto", dataparser=dataparser), "rebuilt")
    made_by = f"backend {previous.get('backend')}" if previous is not None else "an unrecorded run"
    CONSOLE.print(
        f"Pseudo labels: using those already in {where} ({made_by}); automatic pseudo labels leave them as they are"
    )
    return AutoPseudoLabels("kept")
