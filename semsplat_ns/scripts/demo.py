"""``semsplat-demo``: generate the embedded demo town, train semsplat on it, evaluate, render a view.

Runs on whatever device exists (CUDA when present, else CPU) and uses the same commands a user would:
``semsplat-make-scene``, ``ns-train semsplat``, ``semsplat-eval`` and ``ns-render dataset``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch
import tyro
from rich.console import Console

from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir
from semsplat_ns.errors import EXIT_CODE, error_line, exit_on_user_error

CONSOLE = Console()
PROG = "semsplat-demo"


@dataclass
class DemoArgs:
    """Train and evaluate semsplat on a small generated town."""

    out: Path = Path("demo")
    """Folder for the scene, the training run, the evaluation and the renders."""
    data: Optional[Path] = None
    """Run on this IRT scene instead of generating the demo town into <out>/scene: a folder, or a bare name
    looked up in $SEMSPLAT_DATA/<name>, then ./data/<name>, as ns-train --data does. It needs a labelled
    test/ split (the demo evaluates segmentation on it)."""
    views: int = 40
    """Views of the generated orbit (every 10th is a test view)."""
    res: int = 96
    """Image size of the generated views (square)."""
    steps: Optional[int] = None
    """Training steps; default 600 on CPU, 3000 on CUDA."""
    seed: int = 0
    """Seed of the generated town."""


def _bin(name: str) -> str:
    """The console script installed beside this interpreter (the venv's), else the bare name."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _run(cmd: List[str]) -> None:
    """Runs one step; a failed step has printed its own message, so the demo stops with its exit code."""
    shown = " ".join(shlex.quote(c) for c in cmd)
    CONSOLE.print(f"[bold cyan]$ {shown}[/bold cyan]")
    done = subprocess.run(cmd)
    if done.returncode != 0:
        step = Path(cmd[0]).name
        message = f"{step} failed with exit code {done.returncode} (its output is above)"
        print(error_line(RuntimeError(message), PROG), file=sys.stderr, flush=True)
        # A step stopped by bad input exits with 2, as the demo then does; a crashed step keeps its code.
        raise SystemExit(done.returncode if done.returncode > 0 else EXIT_CODE)


def _user_scene(data: Path) -> Path:
    """The ``--data`` scene, resolved, with the test split the demo evaluates on (checked before training)."""
    scene = resolve_scene_dir(data).absolute()
    if not (scene / "test").is_dir():
        raise IRTDataError(
            f"{scene / 'test'}: split folder does not exist; the demo evaluates segmentation on the labelled "
            f"test views. Without them, train with ns-train semsplat --data {scene} (it holds out training "
            "views for RGB metrics)"
        )
    return scene


def run(args: DemoArgs) -> Path:
    """Makes (or takes) the scene, trains, evaluates and renders; returns the run's config.yml."""
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    steps = args.steps or (3000 if cuda else 600)
    scene = _user_scene(args.data) if args.data is not None else args.out / "scene"
    if args.data is None and not (scene / "train").is_dir():
        _run(
            [
                _bin("semsplat-make-scene"),
                str(scene),
                "--views",
                str(args.views),
                "--res",
                str(args.res),
                "--seed",
                str(args.seed),
            ]
        )
    runs = args.out / "outputs"
    timestamp = time.strftime("%Y-%m-%d_%H%M%S")
    train_cmd = [
        _bin("ns-train"),
        "semsplat",
        "--data",
        str(scene),
        "--output-dir",
        str(runs),
        "--timestamp",
        timestamp,
        "--max-num-iterations",
        str(steps),
        "--vis",
        "tensorboard",
        "--machine.device-type",
        "cuda" if cuda else "cpu",
        # the prior of the automatic pseudo labels trains 6000 steps: ~75 s on an H100, too long on a CPU
        "--pipeline.datamanager.auto-pseudo-labels",
        "prior" if cuda else "off",
        # a small scene: refine sooner and stop growing earlier than the 30k-step schedule
        "--pipeline.model.warmup-length",
        str(min(500, steps // 5)),
        "--pipeline.model.refine-every",
        "50",
        "--pipeline.model.stop-split-at",
        str(steps * 2 // 3),
        "--pipeline.model.resolution-schedule",
        str(max(100, steps // 4)),
        "--pipeline.model.sh-degree-interval",
        str(max(100, steps // 6)),
    ]
    _run(train_cmd)
    config = runs / scene.name / "semsplat" / timestamp / "config.yml"
    eval_dir = args.out / "eval"
    _run([_bin("semsplat-eval"), "--load-config", str(config), "--output-dir", str(eval_dir)])
    renders = args.out / "renders"
    _run(
        [
            _bin("ns-render"),
            "dataset",
            "--load-config",
            str(config),
            "--split",
            "test",
            "--output-path",
            str(renders),
            "--rendered-output-names",
            "rgb",
            "semantics_colormap",
        ]
    )
    CONSOLE.rule("semsplat demo finished")
    CONSOLE.print(f"device: {'cuda' if cuda else 'cpu'}   steps: {steps}   wall: {time.perf_counter() - started:.0f} s")
    CONSOLE.print(
        "pseudo labels: the prior's, made before training"
        if cuda
        else "pseudo labels: none (the prior of ns-train semsplat is skipped on a CPU; on a GPU it takes ~75 s)"
    )
    CONSOLE.print(f"scene:       {scene}")
    CONSOLE.print(f"run config:  {config}")
    CONSOLE.print(
        f"metrics:     {eval_dir / 'metrics.json'}  (+ confusion_matrix.png, per_class_iou.png, predictions/)"
    )
    CONSOLE.print(f"renders:     {renders}")
    CONSOLE.print(f"view it:     ns-viewer --load-config {config}")
    return config


def entrypoint() -> None:
    """Console entry point ``semsplat-demo``."""
    args = tyro.cli(DemoArgs, prog=PROG)
    with exit_on_user_error(PROG):
        run(args)


if __name__ == "__main__":
    entrypoint()
