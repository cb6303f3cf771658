"""Pictures of the semantic outputs: class colours, confidence, a PCA view of the features, GT | prediction | error.

For the viewer, ``ns-render`` and the evaluation images of the training loop; all on the model's device.
"""

from __future__ import annotations

from typing import Dict, Hashable, Optional, Tuple

import torch

from semsplat_ns.data.irt_io import IGNORE_ID

ERROR_COLOR = (1.0, 0.0, 0.0)
"""Colour of a wrong pixel in the error panel (right pixels show the prediction dimmed)."""


class FeaturePCA:
    """Projects rendered features on the 3 main axes of the Gaussians' features, as colours in [0, 1].

    The axes come from the Gaussians, not the view, so colours stay stable across views; they are recomputed
    when the key (which the caller derives from the Gaussians) changes.
    """

    def __init__(self, max_samples: int = 20000) -> None:
        self.max_samples = max_samples
        self.key: Optional[Hashable] = None
        self.parts: Optional[Tuple[torch.Tensor, ...]] = None  # axes [S, 3], mean [1, S], low [3], high [3]

    def __call__(self, gaussian_features: torch.Tensor, feature_map: torch.Tensor, key: Hashable) -> torch.Tensor:
        """The PCA picture [H, W, 3].

        Args:
            gaussian_features: Features of the Gaussians [N, S] (detached).
            feature_map: Rendered features [H, W, S].
            key: Identifies the Gaussians' current features.
        """
        if self.key != key or self.parts is None:
            feats = gaussian_features[torch.randperm(gaussian_features.shape[0], device=gaussian_features.device)]
            feats = feats[: self.max_samples]  # [n, S]
            mean = feats.mean(0, keepdim=True)  # [1, S]
            _, _, axes = torch.pca_lowrank(feats - mean, q=min(3, feats.shape[1]), center=False)  # [S, 3]
            projected = (feats - mean) @ axes  # [n, 3]
            low, high = projected.quantile(0.01, dim=0), projected.quantile(0.99, dim=0)  # [3]
            self.parts, self.key = (axes, mean, low, high), key
        axes, mean, low, high = self.parts
        projected = (feature_map - mean) @ axes  # [H, W, 3]
        return ((projected - low) / (high - low + 1e-8)).clamp(0, 1)


@torch.no_grad()
def class_pictures(logits: torch.Tensor, class_colors: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The class map in palette colours and the winning class's probability.

    Args:
        logits: Class logits [H, W, C].
        class_colors: Palette [C, 3] in [0, 1].

    Returns:
        "semantics_colormap" [H, W, 3] and "semantic_confidence" [H, W, 1].
    """
    confidence, labels = torch.softmax(logits, dim=-1).max(dim=-1)  # [H, W]
    return {
        "semantics_colormap": class_colors.to(labels.device)[labels],  # [H, W, 3]
        "semantic_confidence": confidence[..., None],  # [H, W, 1]
    }


@torch.no_grad()
def error_panel(pred: torch.Tensor, labels: torch.Tensor, class_colors: torch.Tensor) -> torch.Tensor:
    """GT | prediction | error, side by side [H, 3W, 3]: unlabelled GT pixels black, wrong pixels red.

    Args:
        pred: Predicted class ids [H, W].
        labels: Ground-truth ids [H, W] (IGNORE_ID = no label).
        class_colors: Palette [C, 3] in [0, 1].
    """
    colors = class_colors.to(pred.device)
    valid = labels != IGNORE_ID  # [H, W]
    gt_color = torch.where(valid[..., None], colors[labels.clamp(max=colors.shape[0] - 1)], 0.0)  # [H, W, 3]
    pred_color = colors[pred]  # [H, W, 3]
    wrong = (pred != labels) & valid  # [H, W]
    error = torch.where(wrong[..., None], pred_color.new_tensor(ERROR_COLOR), 0.35 * pred_color)  # [H, W, 3]
    return torch.cat([gt_color, pred_color, error], dim=1)
