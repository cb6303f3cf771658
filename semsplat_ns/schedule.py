"""The paper's training schedule and its proportional compression to fewer steps, shared by the ``semsplat-fast``
preset (semsplat_ns.config) and the benchmarks' shorter runs (benchmarks/methods.py). Imports nothing heavy.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

PAPER_STEPS = 30_000
"""The model config's schedule fields are the paper's, for this many steps (``semsplat-30k`` trains them as is)."""

PRESET_STEPS = 7_000
"""Training steps of the ``semsplat`` preset: the paper's schedule compressed to this many steps. With the prior's
pseudo labels every variant measured so far scored higher at 7000 steps than at 30k (benchmarks/results/
semsplat_prior.json, 2026-11-27: townA / townB 70.42 / 57.06 against 68.03 / 56.09 for the preset of then; 69.56 /
56.76 against 67.01 / 55.40 with a 2000-step prior), in a quarter of the training time."""

SCHEDULE_FIELDS = ("stop_split_at", "warmup_length", "resolution_schedule", "sh_degree_interval", "stop_screen_size_at")
"""Model fields counted in steps: scaled with the step count for shorter runs (at least 1 where 0 means off)."""
AT_LEAST_ONE = ("resolution_schedule", "sh_degree_interval")
"""Of those, the intervals, which must stay positive."""


def scaled_schedule(defaults: Mapping[str, int], steps: int, fields: Sequence[str] = SCHEDULE_FIELDS) -> Dict[str, int]:
    """The preset's step-counted model fields for a ``steps``-step run (the paper's schedule, proportionally).

    Args:
        defaults: The preset's values of ``fields`` (for 30k steps).
        steps: The run's step count.
        fields: The fields to scale (default :data:`SCHEDULE_FIELDS`).

    Returns:
        Field -> value; empty for a 30k run (the preset as it is).
    """
    if steps == PAPER_STEPS:
        return {}
    ratio = steps / PAPER_STEPS
    return {
        name: max(1, int(defaults[name] * ratio)) if name in AT_LEAST_ONE else int(defaults[name] * ratio)
        for name in fields
    }
