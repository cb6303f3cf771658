"""``semsplat-make-scene``: writes the procedural demo town as an IRT scene."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from semsplat_ns.console import CONSOLE
from semsplat_ns.errors import exit_on_user_error
from semsplat_ns.synthetic.scene_writer import make_scene

PROG = "semsplat-make-scene"


def _summary(out: Path) -> str:
    """A few lines about the scene in ``out``: view counts and the classes present."""
    meta = json.loads((out / "meta.json").read_text())
    freq = {k: v for k, v in meta["class_pixel_freq_all_frames"].items() if v > 0}
    lines = [
        f"scene:    {out}",
        f"views:    {meta['frames']} ({len(meta['train_stems'])} train, {len(meta['test_stems'])} test), "
        f"{meta['res'][0]}x{meta['res'][1]} px",
        f"labelled: {len(meta['labelled_train_stems'])} train views {', '.join(meta['labelled_train_stems'])}",
        f"classes:  {len(freq)} present: "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(freq.items(), key=lambda kv: -kv[1])),  # fmt: skip
    ]
    return "\n".join(lines)


def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    """``semsplat-make-scene OUT --views N --res R --seed S [--labelled K]``: writes a demo IRT scene."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write a procedural demo town as an IRT multi-view segmentation scene "
        "(photos, labels of a few train views and all test views, K, poses; plus gt_all/ for tests).",
    )
    parser.add_argument("out", type=Path, help="scene folder to create")
    parser.add_argument("--views", type=int, default=40, help="number of frames on the aerial orbit")
    parser.add_argument("--res", type=int, default=96, help="image width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the town and the cameras")
    parser.add_argument("--labelled", type=int, default=3, help="number of labelled train views")
    parser.add_argument("--test-every", type=int, default=10, help="frame i is a test view if i %% N == N // 2")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing scene folder")
    args = parser.parse_args(argv)
    # DemoSceneError (bad sizes, an existing folder without --overwrite) is a user error: one line, exit 2.
    with exit_on_user_error(PROG):
        out = make_scene(
            args.out,
            n_views=args.views,
            resolution=args.res,
            n_labelled=args.labelled,
            seed=args.seed,
            test_every=args.test_every,
            overwrite=args.overwrite,
            progress=True,
        )
    CONSOLE.print(_summary(out), highlight=False)


if __name__ == "__main__":
    entrypoint()
