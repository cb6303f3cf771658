"""The demo town as an IRT scene, a nerfstudio capture and a COLMAP TEXT model: same cameras, comparable mIoU?

Project issue #14, item 4. The script

1. generates the demo town with ``semsplat-make-scene`` (``semsplat-demo``'s defaults: 40 views of 96², seed 0);
2. writes it as a nerfstudio capture and as a COLMAP TEXT model with
   :func:`~semsplat_ns.synthetic.capture_writer.write_capture` (the generator's exact cameras, ``keep_split``
   so the evaluation views are the scene's test views, labels on the views the IRT scene labels: its labelled
   training views and every test view);
3. trains ``ns-train semsplat`` on each form with the CPU demo's settings (same steps and schedule flags, the
   automatic pseudo labels off as the CPU demo has them, ``--machine.seed`` fixed) and scores each run with
   ``semsplat-eval`` on the test views;
4. parses each run's own dataparser (from its config.yml), undoes nerfstudio's dataparser transform and scale
   on the parsed cameras, and projects the town's landmarks (roof corners and centres, in the generator's
   frame) through them: the largest pixel difference against the generator's cameras and against the IRT
   form's cameras says whether the three forms give the same cameras;
5. writes one row per form to ``--out`` through :mod:`benchmarks.common`, with the seed-point count each form
   started from.

Seed points differ by format: the IRT form triangulates its own with pycolmap, a capture brings its sparse
model (about ``--n-points`` surface points from the writer). When a capture's mIoU differs from the IRT form's
by more than ``--miou-gap``, a second pair of captures is written whose sparse models hold about as many points
as the IRT form triangulated, to tell seed points from cameras (``--matched-pair always|never`` forces it).

Read the mIoU with its spread in mind: at 600 CPU steps on the 4 test views of the demo town, the nerfstudio
capture and the COLMAP model of the first run (bit-identical parsed cameras, the same 384 seed points and
dataparser transform) scored 27.7 and 33.1 mIoU (benchmarks/results/capture_equivalence.json, 2026-11-26).

Commands run one after another (each with its own console output), so their training times compare::

    .venv/bin/python benchmarks/capture_equivalence.py --work /tmp/capture-equivalence
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table
from rich.text import Text

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.common import append_rows, scored_row  # noqa: E402
from semsplat_ns.console import CONSOLE  # noqa: E402

Form = Literal["irt", "nerfstudio", "colmap"]
"""The three forms of the town."""

METHODS: Dict[str, str] = {
    "irt": "semsplat (IRT layout)",
    "nerfstudio": "semsplat (nerfstudio capture)",
    "colmap": "semsplat (COLMAP model)",
}
"""Row method of each form; the matched-seed-point pair appends ``MATCHED_SUFFIX`` to the captures' names."""

MATCHED_SUFFIX = ", seed points matched to the IRT form"
"""Appended (inside the parentheses) to the method of the second pair of captures."""

SEED_SOURCES: Dict[str, str] = {
    "irt": "triangulated by pycolmap from the known poses (semsplat's IRT path)",
    "nerfstudio": "the capture's sparse model (capture_writer surface points, sparse_pc.ply)",
    "colmap": "the capture's sparse model (capture_writer surface points, sparse/0/points3D.txt)",
}
"""Where each form's seed points come from (recorded in its row)."""


@dataclass
class CaptureEquivalenceConfig:
    """Train semsplat on the demo town as an IRT scene, a nerfstudio capture and a COLMAP model; compare."""

    views: int = 40
    """Views of the generated orbit (every 10th is a test view), as semsplat-demo."""
    res: int = 96
    """Image size of the generated views (square), as semsplat-demo."""
    steps: int = 600
    """Training steps of every run (semsplat-demo's CPU default)."""
    seed: int = 0
    """Seed of the generated town."""
    train_seed: int = 42
    """ns-train's --machine.seed for every run (nerfstudio's default, set explicitly)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """ns-train's --machine.device-type. The prior stays off either way, as in the CPU demo."""
    n_points: int = 400
    """About how many sparse points the captures' models hold (write_capture's default)."""
    miou_gap: float = 0.03
    """A capture whose mIoU differs from the IRT form's by more than this (a fraction) triggers the second pair."""
    matched_pair: Literal["auto", "always", "never"] = "auto"
    """The second pair of captures with seed points matched to the IRT form's count: auto runs it when the mIoU
    differs by more than --miou-gap."""
    out: Path = _REPO_ROOT / "benchmarks" / "results" / "capture_equivalence.json"
    """JSON results file; rows of the same (scene, method) are replaced."""
    work: Optional[Path] = None
    """Folder for the scene, captures, runs and evaluations (must be empty or new; kept afterwards); default: a
    temporary folder, removed at the end."""
    timeout_s: float = 3600.0
    """Limit of each command (ns-train, semsplat-eval), seconds."""
    forms: Tuple[str, ...] = field(default=("irt", "nerfstudio", "colmap"))
    """Forms to run (a subset of irt, nerfstudio, colmap; the camera comparison and the second pair need irt)."""


# ------------------------------------------------------------------------------------------------ commands


def _bin(name: str) -> str:
    """The console script installed beside this interpreter (the venv's), else the bare name."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _shown(cmd: List[str]) -> str:
    """A command line as a shell would take it."""
    return " ".join(shlex.quote(c) for c in cmd)


def _run(cmd: List[str], title: str, timeout_s: float) -> float:
    """Runs one command with its own output on the console; returns its wall time in seconds.

    Args:
        cmd: The command line.
        title: What the step does (shown above its output).
        timeout_s: Wall-clock limit.

    Raises:
        RuntimeError: The command failed or ran past the limit.
    """
    CONSOLE.rule(f"[bold]{title}")
    CONSOLE.print(Text(f"$ {_shown(cmd)}", style="bold cyan"), soft_wrap=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, timeout=timeout_s)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{Path(cmd[0]).name} ran past {timeout_s:.0f} s: {_shown(cmd)}") from error
    if done.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed with exit code {done.returncode} (output above)")
    return time.perf_counter() - started


def train_command(config: CaptureEquivalenceConfig, data: Path, runs: Path, name: str, timestamp: str) -> List[str]:
    """``ns-train semsplat`` with semsplat-demo's settings for ``config.steps`` (the prior off, seed fixed).

    Args:
        config: The benchmark's settings.
        data: The scene or capture folder.
        runs: ``--output-dir``.
        name: ``--experiment-name`` (the run lands in ``runs/name/semsplat/timestamp``).
        timestamp: ``--timestamp``.
    """
    steps = config.steps
    return [
        _bin("ns-train"),
        "semsplat",
        *("--data", str(data), "--output-dir", str(runs), "--experiment-name", name, "--timestamp", timestamp),
        *("--max-num-iterations", str(steps), "--vis", "tensorboard"),
        *("--machine.device-type", config.device, "--machine.seed", str(config.train_seed)),
        # semsplat-demo on a CPU: no automatic pseudo labels (the prior's 6000 Unet steps take minutes there)
        *("--pipeline.datamanager.auto-pseudo-labels", "off"),
        # semsplat-demo's schedule for a small scene
        *("--pipeline.model.warmup-length", str(min(500, steps // 5))),
        *("--pipeline.model.refine-every", "50", "--pipeline.model.stop-split-at", str(steps * 2 // 3)),
        *("--pipeline.model.resolution-schedule", str(max(100, steps // 4))),
        *("--pipeline.model.sh-degree-interval", str(max(100, steps // 6))),
    ]


# ------------------------------------------------------------------------------------------------- cameras


def input_frame_cameras(outputs: Any) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Each parsed camera taken back into the scene's input frame: by stem, K [3, 3] and OpenCV c2w [4, 4].

    nerfstudio's parsers move cameras into a training frame, ``p_train = s (R p + t)`` with
    ``dataparser_transform = [R | t]`` and ``dataparser_scale = s``, and use OpenGL camera axes; this undoes
    both, so the cameras of every form compare with the generator's (pixel centres at +0.5 in both).

    Args:
        outputs: nerfstudio ``DataparserOutputs`` of one split (its metadata names the stems).
    """
    transform = outputs.dataparser_transform.double().numpy()  # [3, 4]
    scale = float(outputs.dataparser_scale)
    inverse = np.linalg.inv(transform[:, :3])  # [3, 3]
    cameras = outputs.cameras
    c2ws = cameras.camera_to_worlds.double().numpy()  # [N, 3, 4] OpenGL axes, training frame
    result = {}
    for i, stem in enumerate(outputs.metadata["stems"]):
        c2w = np.eye(4)
        c2w[:3, :3] = inverse @ c2ws[i, :, :3] @ np.diag([1.0, -1.0, -1.0])  # OpenGL -> OpenCV axes
        c2w[:3, 3] = inverse @ (c2ws[i, :, 3] / scale - transform[:, 3])
        K = np.array(
            [
                [cameras.fx[i, 0].item(), 0.0, cameras.cx[i, 0].item()],
                [0.0, cameras.fy[i, 0].item(), cameras.cy[i, 0].item()],
                [0.0, 0.0, 1.0],
            ]
        )
        result[str(stem)] = (K, c2w)
    return result


def project(K: np.ndarray, c2w: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pixel positions [P, 2] of world points through an OpenCV camera; NaN for points behind it.

    Args:
        K: Intrinsics [3, 3].
        c2w: Camera-to-world [4, 4], OpenCV axes.
        points: World points [P, 3].
    """
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]  # [P, 3] camera frame, +z forward
    uv = cam @ K.T  # [P, 3]
    pixels = uv[:, :2] / uv[:, 2:3]  # [P, 2]
    return np.where(cam[:, 2:3] > 1e-9, pixels, np.nan)


def camera_differences(
    reference: Dict[str, Tuple[np.ndarray, np.ndarray]],
    cameras: Dict[str, Tuple[np.ndarray, np.ndarray]],
    points: np.ndarray,
    size: int,
) -> Dict[str, Any]:
    """The largest pixel distance between the projections of ``points`` through two sets of cameras.

    Only points in front of the reference camera and inside its image count (the landmarks a view sees).

    Args:
        reference: By stem, K and OpenCV c2w (:func:`input_frame_cameras`).
        cameras: The same for the cameras to compare; must hold every reference stem.
        points: World points [P, 3] in the input frame.
        size: Image width and height in pixels.

    Returns:
        ``max_px`` (None when no point was seen), ``views`` and ``projections`` compared.

    Raises:
        KeyError: A reference stem has no camera to compare.
    """
    worst, compared = 0.0, 0
    for stem, (K, c2w) in reference.items():
        expected = project(K, c2w, points)  # [P, 2]
        got = project(*cameras[stem], points)  # [P, 2]
        seen = np.isfinite(expected).all(axis=1) & (expected >= 0).all(axis=1) & (expected <= size).all(axis=1)
        if not seen.any():
            continue
        distance = np.linalg.norm(got[seen] - expected[seen], axis=1)  # [S]; NaN when behind the other camera
        worst = max(worst, float(np.nanmax(distance)) if np.isfinite(distance).all() else float("inf"))
        compared += int(seen.sum())
    return {"max_px": worst if compared else None, "views": len(reference), "projections": compared}


def parse_run(run_config: Path) -> Dict[str, Any]:
    """What a run's own dataparser (from its config.yml) gives: cameras in the input frame, seed points, scale.

    Args:
        run_config: config.yml of an ``ns-train`` run.

    Returns:
        ``cameras`` (train and test, by stem: K, OpenCV c2w), ``seed_points`` (0 for a random start),
        ``dataparser_scale``, ``train_views``, ``test_views``.
    """
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
    from semsplat_ns.eval.run_config import read_run_config

    trainer_config = read_run_config(run_config)
    datamanager = trainer_config.pipeline.datamanager
    if not isinstance(datamanager, SemSplatDataManagerConfig):
        raise RuntimeError(f"{run_config}: not a semsplat run (its datamanager is {type(datamanager).__name__})")
    dataparser_config = datamanager.dataparser
    data = getattr(datamanager, "data", None)
    if data is not None:
        dataparser_config.data = data
    dataparser = dataparser_config.setup()
    train = dataparser.get_dataparser_outputs("train")
    test = dataparser.get_dataparser_outputs("test")
    seeds = train.metadata.get("points3D_xyz")
    return {
        "cameras": {**input_frame_cameras(train), **input_frame_cameras(test)},
        "seed_points": 0 if seeds is None else int(seeds.shape[0]),
        "dataparser_scale": float(train.dataparser_scale),
        "train_views": len(train.image_filenames),
        "test_views": len(test.image_filenames),
    }


def generator_frame_cameras(scene: Path) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], np.ndarray, int]:
    """The generator's exact cameras by stem, the town's landmarks [P, 3] and the image size."""
    from semsplat_ns.synthetic.capture_writer import generator_cameras

    stems, K, c2ws, size = generator_cameras(scene)
    meta = json.loads((scene / "meta.json").read_text())
    landmarks = np.array([mark["xyz"] for mark in meta["landmarks"]], dtype=np.float64)  # [P, 3]
    return {stem: (K, c2ws[i]) for i, stem in enumerate(stems)}, landmarks, size


# ---------------------------------------------------------------------------------------------------- runs


@dataclass
class FormRun:
    """One form's training and evaluation."""

    form: str
    """irt, nerfstudio or colmap."""
    method: str
    """The row's method."""
    data: Path
    """The scene or capture folder ns-train reads (its name is the run's experiment name)."""
    capture_n_points: Optional[int]
    """write_capture's n_points for a capture; None for the IRT form."""
    run_config: Path = Path()
    """config.yml of the trained run."""
    train_command: List[str] = field(default_factory=list)
    """The ns-train command line."""
    ns_train_wall_s: float = 0.0
    """Wall time of the ns-train process (imports and setup included)."""
    stage_times: Dict[str, Any] = field(default_factory=dict)
    """The run's stage_times.json."""
    metrics: Dict[str, Any] = field(default_factory=dict)
    """semsplat-eval's metrics.json."""
    parsed: Dict[str, Any] = field(default_factory=dict)
    """What :func:`parse_run` read from the run's dataparser."""


def train_and_evaluate(config: CaptureEquivalenceConfig, run: FormRun, work: Path, index: str) -> FormRun:
    """Trains ``run``'s form with ns-train, scores it with semsplat-eval and parses its dataparser.

    Args:
        config: The benchmark's settings.
        run: The form to run (filled in and returned).
        work: The work folder (runs go to ``work/outputs``, evaluations to ``work/eval``).
        index: ``i/n`` shown in the step titles.
    """
    timestamp = "run"
    name = run.data.name
    run.train_command = train_command(config, run.data, work / "outputs", name, timestamp)
    run.ns_train_wall_s = _run(run.train_command, f"{index} ns-train semsplat: {run.method}", config.timeout_s)
    run.run_config = work / "outputs" / name / "semsplat" / timestamp / "config.yml"
    run.stage_times = json.loads((run.run_config.parent / "stage_times.json").read_text())
    eval_dir = work / "eval" / name
    eval_cmd = [_bin("semsplat-eval"), "--load-config", str(run.run_config), "--output-dir", str(eval_dir)]
    _run(eval_cmd, f"{index} semsplat-eval: {run.method}", config.timeout_s)
    run.metrics = json.loads((eval_dir / "metrics.json").read_text())
    run.parsed = parse_run(run.run_config)
    return run


def write_captures(scene: Path, folder: Path, n_points: int, forms: List[str], suffix: str = "") -> Dict[str, Path]:
    """The town as the capture forms among ``forms``, each in ``folder/<form><suffix>``; returns them by form.

    The folder's name is also the run's experiment name, so the suffix keeps a second pair's runs apart.
    """
    from semsplat_ns.synthetic.capture_writer import write_capture

    captures = {}
    for form in forms:
        if form == "irt":
            continue
        out = folder / f"{form}{suffix}"
        CONSOLE.print(f"writing the {form} capture ({n_points} sparse points asked) into {out}")
        captures[form] = write_capture(scene, out, form, keep_split=True, n_points=n_points)  # type: ignore[arg-type]
    return captures


def matched_n_points(scene: Path, target: int) -> Tuple[int, int]:
    """write_capture's ``n_points`` whose model holds about ``target`` points, and that count.

    The writer samples a pixel grid (of integer step) in a few frames and keeps surface hits, so it holds fewer
    points than asked; one correction by the ratio brings it close.

    Args:
        scene: The demo scene.
        target: Points wanted (the IRT form's seed points).
    """
    from semsplat_ns.synthetic.capture_writer import surface_points

    best: Optional[Tuple[int, int]] = None
    asked = max(target, 1)
    for _ in range(3):
        got = len(surface_points(scene, asked)[0])
        if best is None or abs(got - target) < abs(best[1] - target):
            best = (asked, got)
        if got == 0 or abs(got - target) <= 0.1 * target:
            break
        asked = max(1, int(round(asked * target / got)))
    assert best is not None
    return best


def rows_of(
    config: CaptureEquivalenceConfig,
    scene_name: str,
    runs: List[FormRun],
    differences: Dict[str, Dict[str, Any]],
    command: str,
) -> List[Dict[str, Any]]:
    """One benchmark row per form (:func:`benchmarks.common.scored_row`) with the seed points and cameras."""
    rows = []
    for run in runs:
        row = scored_row(
            scene_name,
            run.method,
            run.metrics,
            train_s=run.stage_times.get("train_s"),
            steps=config.steps,
            peak_gpu_mem_gb=None,
            n_gaussians=run.metrics.get("n_gaussians"),
            command=command,
            device=None if config.device == "cuda" else "cpu",
        )
        diff = differences.get(run.method, {})
        row.update(
            jobs_sharing_gpu=None if config.device == "cpu" else 1,
            layout=run.form,
            seed_points=run.parsed["seed_points"],
            seed_points_source=SEED_SOURCES[run.form] if run.parsed["seed_points"] else "none (random start)",
            capture_n_points=run.capture_n_points,
            dataparser_scale=run.parsed["dataparser_scale"],
            train_views=run.parsed["train_views"],
            eval_views=run.metrics.get("n_views"),
            camera_max_px_vs_generator=diff.get("vs_generator"),
            camera_max_px_vs_irt=diff.get("vs_irt"),
            camera_projections_compared=diff.get("projections"),
            ns_train_wall_s=round(run.ns_train_wall_s, 2),
            end_to_end_s=run.stage_times.get("end_to_end_s"),
            seed_points_s=run.stage_times.get("seed_points_s"),
            train_command=_shown([Path(run.train_command[0]).name, *run.train_command[1:]]),
        )
        rows.append(row)
    return rows


def compare_cameras(scene: Path, runs: List[FormRun]) -> Dict[str, Dict[str, Any]]:
    """Largest landmark reprojection difference of each run's cameras against the generator's and the IRT form's.

    Args:
        scene: The demo scene (its meta.json gives the generator's cameras and the landmarks).
        runs: Parsed runs (:func:`parse_run` filled ``parsed``).

    Returns:
        By method: ``vs_generator`` and ``vs_irt`` (pixels; None without an IRT run), ``projections`` compared.
    """
    generator, landmarks, size = generator_frame_cameras(scene)
    irt = next((run for run in runs if run.form == "irt"), None)
    result = {}
    for run in runs:
        cameras = run.parsed["cameras"]
        missing = sorted(set(generator) - set(cameras))
        if missing:
            raise RuntimeError(f"{run.method}: no parsed camera for frames {missing[:5]}")
        against_generator = camera_differences(generator, cameras, landmarks, size)
        against_irt = (
            None if irt is None else camera_differences(irt.parsed["cameras"], cameras, landmarks, size)["max_px"]
        )
        result[run.method] = {
            "vs_generator": against_generator["max_px"],
            "vs_irt": against_irt,
            "projections": against_generator["projections"],
        }
    return result


def print_rows(rows: List[Dict[str, Any]]) -> None:
    """The rows as a rich table (mIoU and accuracy in %, camera differences in pixels)."""
    table = Table(title="Capture equivalence: the demo town in three forms")
    columns = ("form", "seed pts", "mIoU %", "acc %", "train s", "Gaussians", "cam px vs gen.", "vs IRT")
    for column in columns:
        table.add_column(column, justify="left" if column == "form" else "right")
    for row in rows:
        vs_gen, vs_irt = row["camera_max_px_vs_generator"], row["camera_max_px_vs_irt"]
        table.add_row(
            row["method"].removeprefix("semsplat (").removesuffix(")"),
            str(row["seed_points"]),
            f"{100 * row['miou']:.2f}",
            f"{100 * row['acc']:.2f}",
            f"{row['train_s']:.1f}",
            str(row["n_gaussians"]),
            "—" if vs_gen is None else f"{vs_gen:.1e}",
            "—" if vs_irt is None else f"{vs_irt:.1e}",
        )
    # Logs of a background run are not a terminal (80 columns): give the table room there.
    console = CONSOLE if CONSOLE.is_terminal else Console(width=max(CONSOLE.width, 140), file=CONSOLE.file)
    console.print(table)


def matched_pair(
    config: CaptureEquivalenceConfig,
    scene: Path,
    irt: FormRun,
    first: List[FormRun],
    work: Path,
    scene_name: str,
    command: str,
) -> List[Dict[str, Any]]:
    """The second pair, when wanted: the captures again with about as many sparse points as the IRT form had.

    Args:
        config: The benchmark's settings (``matched_pair``, ``miou_gap``).
        scene: The demo scene.
        irt: The IRT form's run.
        first: The first pair's capture runs.
        work: The work folder.
        scene_name: The rows' scene.
        command: The rows' command.

    Returns:
        The second pair's rows (already appended to ``config.out``); none when it did not run.
    """
    gap = max(abs(run.metrics["miou"] - irt.metrics["miou"]) for run in first)
    CONSOLE.print(f"largest mIoU gap between a capture and the IRT form: {100 * gap:.2f} points")
    if config.matched_pair == "never" or (config.matched_pair == "auto" and gap <= config.miou_gap):
        CONSOLE.print(f"no second pair (--matched-pair {config.matched_pair}, --miou-gap {config.miou_gap})")
        return []
    target = irt.parsed["seed_points"]
    if target == 0:
        CONSOLE.print("no second pair: the IRT form started from random points (too few triangulated)")
        return []
    n_points, count = matched_n_points(scene, target)
    CONSOLE.rule(f"[bold]second pair: captures with {count} sparse points (the IRT form had {target})")
    forms = [run.form for run in first]
    matched = write_captures(scene, work / "captures", n_points, forms, suffix="-matched")
    second = [FormRun(form, METHODS[form][:-1] + MATCHED_SUFFIX + ")", matched[form], n_points) for form in forms]
    for i, run in enumerate(second):
        train_and_evaluate(config, run, work, f"[matched {i + 1}/{len(second)}]")
    rows = rows_of(config, scene_name, [irt, *second], compare_cameras(scene, [irt, *second]), command)[1:]
    append_rows(config.out, rows)
    return rows


def main(config: CaptureEquivalenceConfig, command: Optional[str] = None) -> List[Dict[str, Any]]:
    """Runs the benchmark and appends its rows to ``config.out``.

    Args:
        config: The benchmark's settings.
        command: The command line recorded in the rows; default: this process's.

    Returns:
        The rows written, one per form and pair.
    """
    unknown = sorted(set(config.forms) - set(METHODS))
    if unknown or not config.forms:
        raise ValueError(f"--forms: unknown {unknown}; choose among {sorted(METHODS)}")
    command = command or "python " + _shown([_relative(sys.argv[0]), *sys.argv[1:]])
    started = time.perf_counter()
    temporary = config.work is None
    work = Path(tempfile.mkdtemp(prefix="capture-equivalence-")) if config.work is None else config.work.absolute()
    if work.exists() and any(work.iterdir()):
        raise ValueError(f"--work {work}: not empty; give a new or empty folder")
    work.mkdir(parents=True, exist_ok=True)
    scene_name = f"demo-town-{config.views}v-{config.res}px-seed{config.seed}"
    scene = work / "town"
    try:
        _run(
            [
                _bin("semsplat-make-scene"),
                str(scene),
                *("--views", str(config.views), "--res", str(config.res), "--seed", str(config.seed)),
            ],
            "the demo town (semsplat-make-scene, semsplat-demo's arguments)",
            config.timeout_s,
        )
        forms = [form for form in METHODS if form in config.forms]
        captures = write_captures(scene, work / "captures", config.n_points, forms)
        runs = [
            FormRun(
                form,
                METHODS[form],
                scene if form == "irt" else captures[form],
                None if form == "irt" else config.n_points,
            )
            for form in forms
        ]
        total = len(runs)
        for i, run in enumerate(runs):
            train_and_evaluate(config, run, work, f"[{i + 1}/{total}]")
        rows = rows_of(config, scene_name, runs, compare_cameras(scene, runs), command)
        append_rows(config.out, rows)
        print_rows(rows)

        irt = next((run for run in runs if run.form == "irt"), None)
        captures_runs = [run for run in runs if run is not irt]
        if irt is not None and captures_runs:
            second = matched_pair(config, scene, irt, captures_runs, work, scene_name, command)
            if second:
                rows += second
                print_rows(rows)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    CONSOLE.print(f"{len(rows)} rows -> {config.out}; wall {time.perf_counter() - started:.0f} s")
    return rows


def _relative(path: str) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(_REPO_ROOT))
    except ValueError:
        return path


def entrypoint() -> None:
    """Command-line entry point."""
    main(tyro.cli(CaptureEquivalenceConfig, description=__doc__))


if __name__ == "__main__":
    entrypoint()
