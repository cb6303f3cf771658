"""benchmarks/pseudo_quality.py: per-class pseudo-label quality against full labels."""

from __future__ import annotations

import numpy as np

from benchmarks.pseudo_quality import class_quality
from semsplat_ns.data.irt_io import IGNORE_ID


def test_class_quality_counts_covered_correct_and_claimed_pixels():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, IGNORE_ID]], dtype=np.uint8)
    pseudo = np.array([[0, IGNORE_ID, 0, 1], [0, 2, IGNORE_ID, 2]], dtype=np.uint8)
    counts = class_quality([(pseudo, truth), (pseudo, truth)], num_classes=3)
    # Class 1: both pixels covered, one right; class 2: two of three covered, one right (one taken as 0).
    assert counts["pixels"].tolist() == [4, 4, 6]
    assert counts["covered"].tolist() == [2, 4, 4]
    assert counts["correct"].tolist() == [2, 2, 2]
    # Pixels of unknown truth are not counted, even where they have a pseudo label.
    assert counts["claimed"].tolist() == [6, 2, 2]
