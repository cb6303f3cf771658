"""The batch summary in the shape of the paper's Table II: one row per scene (mIoU, mIoU over the classes
present, pixel accuracy, ms per test view, stage wall times) and the mean row, with the failed scenes and
their one-line errors below. Written as ``summary.json`` (fractions, as metrics.json keeps them),
``summary.md`` (percentages) and ``summary.png`` (bar charts), each atomically.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), as in :mod:`semsplat_ns.eval.plots`,
whose module is not imported here because it pulls torch into the client.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from semsplat_ns.atomic import atomic_open, write_bytes_atomic, write_json_atomic
from semsplat_ns.batch.records import METRIC_KEYS, now_iso
from semsplat_ns.batch.scene_job import STAGE_LABELS, STAGES

SUMMARY_JSON, SUMMARY_MD, SUMMARY_PNG = "summary.json", "summary.md", "summary.png"
"""Files of the summary in the batch's output folder."""

METRIC_LABELS = {"miou": "mIoU", "miou_present": "mIoU present", "acc": "acc.", "test_ms_per_view": "ms / view"}
"""Column names of the metrics."""


def _stage_seconds(result: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Wall time of each stage that ran (None for a skipped one)."""
    stages = result.get("stages", {})
    return {
        stage: (float(stages[stage]["seconds"]) if stages.get(stage, {}).get("status") == "ok" else None)
        for stage in STAGES
    }


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(present)) if present else None


def build_summary(
    results: Sequence[Dict[str, Any]],
    failures: Sequence[Dict[str, Any]],
    settings: Dict[str, Any],
    recorded: Sequence[str] = (),
) -> Dict[str, Any]:
    """The summary record.

    Args:
        results: result.json records of the completed scenes, in table order.
        failures: ``{"scene", "stage", "error", "attempts"}`` of each failed scene.
        settings: The batch's settings (preset, pseudo backend, iterations, method flags, cluster).
        recorded: Names of the scenes whose result an earlier run recorded.

    Returns:
        ``{"rows": [...], "mean": {...} or None, "failures": [...], ...}``; metric fractions as in metrics.json.
    """
    rows = []
    for result in results:
        metrics = result["metrics"]
        stage_s = _stage_seconds(result)
        rows.append(
            {
                "scene": result["scene"],
                **{key: float(metrics[key]) for key in METRIC_KEYS},
                "stage_s": stage_s,
                "stage_status": {stage: result.get("stages", {}).get(stage, {}).get("status") for stage in STAGES},
                "total_s": float(result.get("total_s", sum(v for v in stage_s.values() if v is not None))),
                "recorded_earlier": result["scene"] in set(recorded),
                "settings": result.get("settings"),
                "output_dir": result.get("output_dir"),
            }
        )
    mean = None
    if rows:
        mean = {
            "scenes": len(rows),
            **{key: _mean([row[key] for row in rows]) for key in METRIC_KEYS},
            "stage_s": {stage: _mean([row["stage_s"][stage] for row in rows]) for stage in STAGES},
            "total_s": _mean([row["total_s"] for row in rows]),
        }
    return {
        "written": now_iso(),
        "settings": settings,
        "scenes": len(rows) + len(failures),
        "completed": len(rows),
        "failed": len(failures),
        "rows": rows,
        "mean": mean,
        "failures": list(failures),
    }


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _secs(value: Optional[float], status: Optional[str] = "ok") -> str:
    if value is None:
        return "skipped" if status == "skipped" else "—"
    return f"{value:.1f}"


def summary_markdown(summary: Dict[str, Any]) -> str:
    """The summary as a Markdown document (Table II's columns, percentages)."""
    settings = summary["settings"]
    stage_heads = [f"{STAGE_LABELS[stage]} s" for stage in STAGES]
    head = ["scene", "mIoU %", "mIoU present %", "acc %", "ms / view", *stage_heads, "total s"]
    lines = [
        f"# semsplat-batch: {settings.get('preset')}, {summary['completed']} of {summary['scenes']} scenes completed",
        "",
        f"Written {summary['written']}. Metrics of `semsplat-eval` on each scene's test views (IRT mIoU; "
        "mIoU over the classes present in the ground truth; pixel accuracy; median ms per test view); "
        "stage times are wall times of each command. † recorded by an earlier run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in summary["rows"]:
        cells = [
            row["scene"] + (" †" if row["recorded_earlier"] else ""),
            _pct(row["miou"]),
            _pct(row["miou_present"]),
            _pct(row["acc"]),
            f"{row['test_ms_per_view']:.2f}",
            *(_secs(row["stage_s"][stage], row["stage_status"][stage]) for stage in STAGES),
            _secs(row["total_s"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    mean = summary["mean"]
    if mean is not None:
        cells = [
            f"**mean** ({mean['scenes']})",
            *(f"**{_pct(mean[key])}**" for key in ("miou", "miou_present", "acc")),
            "—" if mean["test_ms_per_view"] is None else f"**{mean['test_ms_per_view']:.2f}**",
            *(_secs(mean["stage_s"][stage], "skipped") for stage in STAGES),
            _secs(mean["total_s"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if summary["failures"]:
        lines += ["", "## Failed scenes", "", "| scene | stage | attempts | error |", "|---|---|---|---|"]
        for failure in summary["failures"]:
            error = str(failure["error"]).replace("|", "\\|")
            stage = STAGE_LABELS.get(failure.get("stage") or "", failure.get("stage") or "—")
            lines.append(f"| {failure['scene']} | {stage} | {failure.get('attempts', '—')} | {error} |")
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2), "```", ""]
    return "\n".join(lines)


def save_summary_png(summary: Dict[str, Any], path: Path) -> Path:
    """Bar charts: mIoU, mIoU present and accuracy per scene and their mean (top), stage times (bottom)."""
    rows: List[Dict[str, Any]] = list(summary["rows"])
    mean = summary["mean"]
    names = [row["scene"] for row in rows] + (["mean"] if mean is not None else [])
    entries = rows + ([mean] if mean is not None else [])
    figure = Figure(figsize=(max(6.0, 1.1 * len(names) + 2.5), 7.0))
    top, bottom = figure.subplots(2, 1)
    if not entries:
        for axes in (top, bottom):
            axes.set_axis_off()
        top.text(0.5, 0.5, "no scene completed", ha="center", va="center", fontsize=14)
    else:
        positions = np.arange(len(names))
        width = 0.26
        for offset, key in enumerate(("miou", "miou_present", "acc")):
            values = [100 * (entry[key] or 0.0) for entry in entries]
            bars = top.bar(positions + (offset - 1) * width, values, width, label=METRIC_LABELS[key])
            if mean is not None:
                bars[-1].set_hatch("//")  # the mean row
            for x, value in zip(positions + (offset - 1) * width, values):
                top.text(x, value + 1, f"{value:.1f}", ha="center", va="bottom", fontsize=7, rotation=90)
        top.set_xticks(positions, names, rotation=30, ha="right")
        top.set_ylim(0, 115)
        top.set_ylabel("%")
        top.set_title(f"semsplat-batch ({summary['settings'].get('preset')}): test-view segmentation")
        top.legend(loc="upper right", ncols=3, fontsize=8)
        base = np.zeros(len(entries))
        for stage in STAGES:
            values = np.array([entry["stage_s"][stage] or 0.0 for entry in entries])
            bottom.bar(positions, values, 0.6, bottom=base, label=STAGE_LABELS[stage])
            base += values
        bottom.set_xticks(positions, names, rotation=30, ha="right")
        bottom.set_ylabel("wall time (s)")
        bottom.set_title("stage times")
        bottom.legend(loc="upper right", ncols=4, fontsize=8)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", bbox_inches="tight")
    return Path(path)


def write_summary(output_dir: Path, summary: Dict[str, Any]) -> Dict[str, Path]:
    """Writes summary.json, summary.md and summary.png into ``output_dir``, each atomically.

    Returns:
        ``{"json": path, "md": path, "png": path}``.
    """
    output_dir = Path(output_dir)
    paths = {"json": output_dir / SUMMARY_JSON, "md": output_dir / SUMMARY_MD, "png": output_dir / SUMMARY_PNG}
    write_json_atomic(paths["json"], summary)
    write_bytes_atomic(paths["md"], summary_markdown(summary).encode())
    save_summary_png(summary, paths["png"])
    return paths
