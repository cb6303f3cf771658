"""The image losses of one training view (L1 + D-SSIM, L_s, the pseudo cross-entropy, L2D) as one function of the
view's maps, and a runner that replays them as CUDA graphs.

:func:`view_losses` is the arithmetic, the same whichever runner calls it. :class:`ViewLossRunner` calls it eagerly,
or on CUDA through ``torch.cuda.make_graphed_callables``: its forward and its backward are captured once per kind of
view (which maps the view has, their shapes) and replayed on every later step of that kind. The runners are chosen by
name (:data:`LOSS_RUNNERS`).

Why graphs: a training step waits on the host, not the GPU (the GPU is busy about half of the step,
benchmarks/results/profile/). These losses are some sixty small kernels forward and as many backward, each launched
from Python or by the autograd engine; a replay launches each pass's kernels in one call. What depends on the Gaussians
(the 3D aggregation, the scale regulariser) or on the host (the camera optimiser's losses) stays eager: the Gaussian
count changes with densification, and a graph needs fixed shapes.
"""

from __future__ import annotations

import inspect
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from semsplat_ns.model import losses as L

LossRunner = Literal["eager", "cuda-graph"]
"""How a training view's image losses run (:data:`LOSS_RUNNERS`)."""

LOSS_RUNNERS: Dict[str, bool] = {
    # every kernel launched from Python, and backward by the autograd engine node by node
    "eager": False,
    # forward and backward captured as two CUDA graphs per kind of view and replayed; eager off CUDA
    "cuda-graph": True,
}
"""The loss runners, by name: whether the runner needs CUDA (off CUDA it runs eagerly)."""

VIEW_MAPS = (
    "pred_rgb",
    "gt_rgb",
    "features",
    "logits",
    "pseudo_logits",
    "labels",
    "pseudo",
    "boundary",
    "support",
    "confidence",
    "class_weights",
)
"""The maps :func:`view_losses` reads, in the order a graph takes them:

- ``pred_rgb``, ``gt_rgb``: the render and the photo [H, W, 3] (masked already where the view has a mask);
- ``features``: the rendered semantic features [H, W, S];
- ``logits``: the transfer head's logits [H, W, C]; ``pseudo_logits``: those the pseudo loss trains, when they differ
  (the head's weights detached); otherwise ``logits``;
- ``labels``: class ids of a labelled view [H, W]; ``pseudo``: pseudo labels [H, W] (255: none), ``boundary``: the
  boundary mask B [H, W];
- ``support``: the rendered label support [H, W]; ``confidence``: the pseudo labels' confidence [H, W];
- ``class_weights``: the cross-entropies' class weights [C].

Every map but the two images may be absent (None)."""


@dataclass(frozen=True)
class ViewLossSettings:
    """The settings :func:`view_losses` reads (the model config's fields of the same names)."""

    ssim_lambda: float
    semantic_loss_weight: float
    pseudo_loss_weight: float
    pseudo_inside_boundary_only: bool
    pseudo_weight_by_label_support: bool
    pseudo_weight_by_agreement: bool
    agg2d_loss_weight: float
    agg2d_num_samples: int
    agg_k: int

    @classmethod
    def of(cls, config: object) -> ViewLossSettings:
        """The settings of a model config (any object with these fields, e.g. ``SemSplatModelConfig``)."""
        names = cls.__dataclass_fields__
        return cls(**{name: getattr(config, name) for name in names})


def photometric_main_loss(gt_rgb: Tensor, pred_rgb: Tensor, ssim: nn.Module, ssim_lambda: float) -> Tensor:
    """Splatfacto's main loss: (1 - lambda) L1 + lambda (1 - SSIM), a 0-dim tensor.

    Args:
        gt_rgb: The photo [H, W, 3].
        pred_rgb: The render [H, W, 3].
        ssim: SSIM of two images [1, 3, H, W] (:class:`~semsplat_ns.model.ssim.SSIM`).
        ssim_lambda: The D-SSIM share.
    """
    l1 = torch.abs(gt_rgb - pred_rgb).mean()
    ssim_value = ssim(gt_rgb.permute(2, 0, 1)[None, ...], pred_rgb.permute(2, 0, 1)[None, ...])  # [1, 3, H, W] each
    return (1 - ssim_lambda) * l1 + ssim_lambda * (1 - ssim_value)


def pseudo_pixel_weights(
    settings: ViewLossSettings,
    logits: Tensor,
    pseudo: Tensor,
    support: Optional[Tensor],
    confidence: Optional[Tensor],
) -> Optional[Tensor]:
    """The pseudo loss's weight per pixel [H, W]: (1 - label support) x confidence with pseudo_weight_by_label_support,
    times the model's agreement with pseudo_weight_by_agreement; None when neither is on.

    Args:
        settings: The loss settings.
        logits: The model's logits [H, W, C] (the agreement reads them detached).
        pseudo: Pseudo labels at the render's size [H, W] (255: none).
        support: The rendered label support [H, W] (needed with pseudo_weight_by_label_support).
        confidence: The pseudo labels' confidence [H, W] in [0, 1], or None (1).
    """
    weights: Optional[Tensor] = None
    if settings.pseudo_weight_by_label_support:
        if support is None:
            raise ValueError("pseudo_weight_by_label_support needs the rendered label support")
        unsupported = (1.0 - support.detach()).clamp(0.0, 1.0)  # [H, W]
        weights = unsupported if confidence is None else unsupported * confidence.float()
    if settings.pseudo_weight_by_agreement:
        agreement = L.pseudo_agreement(logits.detach(), pseudo)  # [H, W]
        weights = agreement if weights is None else weights * agreement
    return weights


def view_losses(
    settings: ViewLossSettings, ssim: nn.Module, maps: Dict[str, Tensor], semantic: bool, photometric: bool = True
) -> Dict[str, Tensor]:
    """The image losses of one training view, weighted: what ``SemSplatModel.get_loss_dict`` adds for its images.

    Args:
        settings: The loss settings.
        ssim: The SSIM module.
        maps: The view's maps by name (:data:`VIEW_MAPS`); absent ones left out or None.
        semantic: Whether the semantic losses apply (past ``semantic_start_step``, with logits rendered).
        photometric: Whether to compute splatfacto's main loss (from ``pred_rgb`` and ``gt_rgb``).

    Returns:
        With ``photometric`` "main_loss"; with ``semantic`` "semantic_loss" and "pseudo_loss" (0 with a graph to the
        logits when the view has no such labels), and "agg2d_loss" when its weight is positive; 0-dim tensors.
    """
    losses: Dict[str, Tensor] = {}
    if photometric:
        losses["main_loss"] = photometric_main_loss(maps["gt_rgb"], maps["pred_rgb"], ssim, settings.ssim_lambda)
    if not semantic:
        return losses
    logits = maps["logits"]  # [H, W, C]
    zero = logits.sum() * 0.0
    labels = maps.get("labels")  # [H, W] or None
    class_weights = maps.get("class_weights")  # [C] or None
    if labels is not None and settings.semantic_loss_weight > 0:
        cross_entropy = L.semantic_cross_entropy(logits, labels, class_weights=class_weights)
        losses["semantic_loss"] = settings.semantic_loss_weight * cross_entropy
    else:
        losses["semantic_loss"] = zero

    pseudo = maps.get("pseudo")  # [H, W] or None
    if pseudo is not None and labels is None and settings.pseudo_loss_weight > 0:
        boundary = None
        if settings.pseudo_inside_boundary_only:
            boundary = maps.get("boundary")
            boundary = boundary.bool() if boundary is not None else torch.zeros_like(pseudo, dtype=torch.bool)
        pseudo_logits = maps.get("pseudo_logits")
        weights = pseudo_pixel_weights(settings, logits, pseudo, maps.get("support"), maps.get("confidence"))
        losses["pseudo_loss"] = settings.pseudo_loss_weight * L.semantic_cross_entropy(
            logits if pseudo_logits is None else pseudo_logits,
            pseudo,
            boundary,
            pixel_weights=weights,
            class_weights=class_weights,
        )
    else:
        losses["pseudo_loss"] = zero

    if settings.agg2d_loss_weight > 0:
        aggregation = L.aggregation_2d_loss(maps["features"], settings.agg2d_num_samples, settings.agg_k)
        losses["agg2d_loss"] = settings.agg2d_loss_weight * aggregation
    return losses


GraphedLosses = Callable[..., Dict[str, Tensor]]
"""A graphed :func:`view_losses`: the present maps in :data:`VIEW_MAPS` order -> the losses."""


def effective_loss_runner(runner: str, device: torch.device) -> LossRunner:
    """The runner that runs on ``device``: ``runner``, or eager where it needs CUDA and the device is not.

    Raises:
        ValueError: An unknown runner.
    """
    if runner not in LOSS_RUNNERS:
        raise ValueError(f"unknown loss runner {runner!r}; one of {', '.join(LOSS_RUNNERS)}")
    if LOSS_RUNNERS[runner] and device.type != "cuda":
        return "eager"
    return runner  # type: ignore[return-value]


class ViewLossRunner:
    """Runs :func:`view_losses` the chosen way (:data:`LOSS_RUNNERS`).

    With ``cuda-graph``, on a CUDA device and with gradients on, the losses of each kind of view (the maps present,
    their shapes, dtypes and whether they need gradients, the settings, whether the semantic losses apply) are
    captured by ``torch.cuda.make_graphed_callables`` at the first view of that kind (three eager warm-up passes, then
    the two captures) and replayed afterwards. The view's maps are copied into the graph's own inputs, and the
    graph's outputs into the returned losses (one kernel). The L2D samples are drawn inside the graph, a fresh draw
    per replay (the CUDA generator's graph-safe offsets), so they are other samples than an eager run would draw.

    The last ``max_graphs`` kinds used keep their graphs (the downscale schedule moves through a few render sizes;
    a capture whose views come in a few sizes replays them all). Where the views come in so many shapes that the
    runner has captured ``max_captures`` graphs, capturing no longer pays and it runs eagerly from then on, with a
    warning; so it does where a capture fails (an op the GPU, driver or torch cannot capture, or out of memory). Each
    graph holds its pass's intermediate tensors in a memory pool of its own: peak GPU memory 2.87 GB against 2.75
    eager on townA, 3.74 against 3.61 on townB (512², 20 classes; aa28cb5).

    Args:
        runner: The runner's name.
        max_graphs: Kinds of view whose graphs are kept (the least recently used go first).
        max_captures: Captures after which the runner gives up on graphs.
    """

    def __init__(self, runner: LossRunner = "cuda-graph", max_graphs: int = 4, max_captures: int = 24):
        effective_loss_runner(runner, torch.device("cpu"))  # an unknown name fails here, at setup
        assert max_graphs >= 1 and max_captures >= 1, (max_graphs, max_captures)
        self.runner = runner
        self.max_graphs = max_graphs
        self.max_captures = max_captures
        self.captures = 0
        """Captures so far (kept graphs and dropped ones)."""
        self._graphs: OrderedDict[Hashable, GraphedLosses] = OrderedDict()  # least recently used first

    @property
    def num_graphs(self) -> int:
        """Graphed kinds of view held now."""
        return len(self._graphs)

    def graphs_on(self, device: torch.device) -> bool:
        """Whether views on ``device`` get graphs (with gradients on): the runner is cuda-graph and the device CUDA."""
        return effective_loss_runner(self.runner, device) == "cuda-graph"

    def __call__(
        self,
        settings: ViewLossSettings,
        ssim: nn.Module,
        maps: Dict[str, Optional[Tensor]],
        semantic: bool,
        photometric: bool = True,
    ) -> Dict[str, Tensor]:
        """The view's losses (:func:`view_losses`' arguments and result)."""
        unknown = set(maps) - set(VIEW_MAPS)
        if unknown:
            raise ValueError(f"unknown view maps {sorted(unknown)}; known: {', '.join(VIEW_MAPS)}")
        present = {name: maps[name] for name in VIEW_MAPS if maps.get(name) is not None}
        tensors: Tuple[Tensor, ...] = tuple(present.values())  # type: ignore[assignment]
        if not tensors or not self.graphs_on(tensors[0].device) or not torch.is_grad_enabled():
            return view_losses(settings, ssim, present, semantic, photometric)  # type: ignore[arg-type]
        window = getattr(ssim, "window", None)
        key = (
            settings,
            semantic,
            photometric,
            id(ssim),
            None if window is None else window.data_ptr(),  # a moved module needs another graph
            tensors[0].device,
            tuple((name, tuple(t.shape), t.dtype, t.requires_grad) for name, t in zip(present, tensors)),
        )
        graphed = self._graphs.get(key)
        if graphed is not None:
            self._graphs.move_to_end(key)
        else:
            if self.captures >= self.max_captures:
                many = f"the views came in so many shapes that {self.captures} graphs were captured"
                return self._give_up(many, settings, ssim, present, semantic, photometric)
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)  # its memory pool goes with it
            self.captures += 1
            try:
                graphed = self._capture(settings, ssim, tuple(present), tensors, semantic, photometric)
            except RuntimeError as error:  # an op this GPU, driver or torch cannot capture: train on, eagerly
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                return self._give_up(f"a capture failed: {reason}", settings, ssim, present, semantic, photometric)
            self._graphs[key] = graphed
        replayed = graphed(*tensors)  # the graph's own outputs, which the next replay overwrites
        # one stack copies them all (one kernel): the returned losses keep their values after later replays
        return dict(zip(replayed, torch.stack(list(replayed.values())).unbind(0)))

    def _give_up(
        self,
        reason: str,
        settings: ViewLossSettings,
        ssim: nn.Module,
        present: Dict[str, Optional[Tensor]],
        semantic: bool,
        photometric: bool,
    ) -> Dict[str, Tensor]:
        """Runs eagerly from now on (warning once why) and returns this view's losses, eager."""
        self.runner = "eager"
        self._graphs.clear()
        warnings.warn(
            f"The training losses run eagerly from now on, a little slower, not as CUDA graphs ({reason}). "
            "--pipeline.model.loss-runner eager skips the attempt.",
            stacklevel=3,
        )
        return view_losses(settings, ssim, present, semantic, photometric)  # type: ignore[arg-type]

    @staticmethod
    def _capture(
        settings: ViewLossSettings,
        ssim: nn.Module,
        names: Tuple[str, ...],
        tensors: Tuple[Tensor, ...],
        semantic: bool,
        photometric: bool,
    ) -> GraphedLosses:
        def losses_of(*inputs: Tensor) -> Dict[str, Tensor]:
            return view_losses(settings, ssim, dict(zip(names, inputs)), semantic, photometric)

        # the graph's inputs: tensors of their own, leaves, needing gradients where the view's do
        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)
        with torch.cuda.device(tensors[0].device):
            options = capture_options()
            graphed = torch.cuda.make_graphed_callables(losses_of, samples, allow_unused_input=True, **options)
        return graphed  # type: ignore[return-value]


def capture_options() -> Dict[str, Any]:
    """Keyword arguments of ``torch.cuda.make_graphed_callables`` for the captures: ``capture_error_mode``
    "thread_local" where this torch takes it, so that another thread's CUDA work during a capture (the viewer's
    renders while training) neither fails the capture nor errors in that thread, as the default "global" mode makes
    both do."""
    parameters = inspect.signature(torch.cuda.make_graphed_callables).parameters
    return {"capture_error_mode": "thread_local"} if "capture_error_mode" in parameters else {}
