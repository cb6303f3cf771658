"""The semsplat model: splatfacto plus per-Gaussian semantic features, rendered in the same pass.

Only adds to :class:`SplatfactoModel` (through :class:`~semsplat_ns.model.resume.ResumableSplatfacto`, whose
checkpoints resume training): a ``semantic_features`` entry in ``gauss_params`` (so the
densification strategy splits, duplicates and prunes it with the rest), semantic channels in
splatfacto's own rasterization call (see :mod:`semsplat_ns.model.splatfacto_raster`), a per-pixel
transfer head, the semantic losses of the paper, semantic outputs for the viewer, semantic metrics and
a cap on the Gaussian count (:class:`CappedDefaultStrategy`) and the label support of each Gaussian
(:mod:`semsplat_ns.model.label_support`). L3D's neighbour sampling is :mod:`~semsplat_ns.model.neighbour_pool`,
the pictures :mod:`~semsplat_ns.model.visuals`. Evaluation code (``render_labels``, ``render_semantics``) gets the
semantic channels alone, rendered in a pass of their own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.model_components.lib_bilagrid import total_variation_loss
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from torch import nn
from torch.nn import Parameter

from semsplat_ns.model import losses as L
from semsplat_ns.model.compat import (
    allow_numpy_scalars_in_checkpoints,
    cuda_calls_stay_on,
    cudnn_benchmark_off,
    lazy_lpips_during_setup,
    renders_run_eagerly,
)
from semsplat_ns.model.label_support import (
    LabelSupport,
    blending_weight_probe,
    normalised_support,
    support_from_probe,
    unit_gradient_on,
)
from semsplat_ns.model.neighbour_pool import NeighbourPool
from semsplat_ns.model.rasterize import rasterization, spherical_harmonics
from semsplat_ns.model.resume import ResumableSplatfacto
from semsplat_ns.model.splatfacto_raster import rasterization_override, viewmat_override
from semsplat_ns.model.ssim import SSIM
from semsplat_ns.model.step_cache import DerivedTensors
from semsplat_ns.model.strategy import CappedDefaultStrategy
from semsplat_ns.model.view_losses import (
    LossRunner,
    ViewLossRunner,
    ViewLossSettings,
    photometric_main_loss,
    view_losses,
)
from semsplat_ns.model.visuals import FeaturePCA, class_pictures, error_panel

allow_numpy_scalars_in_checkpoints()


@dataclass
class SemSplatModelConfig(SplatfactoModelConfig):
    """Semantic splatting (arXiv 2412.05969): splatfacto + 16-d semantic features per Gaussian."""

    _target: Type = field(default_factory=lambda: SemSplatModel)
    semantic_dim: int = 16
    """Channels of the per-Gaussian semantic feature, rendered by alpha blending with the colour (Eq. 8)."""
    transfer_hidden_dim: int = 64
    """Hidden width of the per-pixel transfer MLP (features -> class logits); 0 = a single linear layer."""
    random_scale: float = 2.0
    """Side of the cube for random initialisation (when no seed points): IRT scenes lie in the unit sphere."""
    max_gaussians: int = 300_000
    """Densification stops growing the Gaussian count at this cap (pruning continues); a refinement that
    overshoots it drops its least opaque Gaussians. Becomes the strategy's ``cap_max``."""
    semantic_loss_weight: float = 1.0
    """Weight of the cross-entropy on labelled views (L_s)."""
    pseudo_loss_weight: float = 1.0
    """Weight of the cross-entropy on pseudo-labelled views (Eq. 10); 0 disables pseudo labels."""
    pseudo_inside_boundary_only: bool = True
    """Use pseudo labels only inside the boundary mask B (paper); False uses the whole pseudo map."""
    pseudo_weight_by_label_support: bool = False
    """Weight the pseudo loss at each pixel by (1 - label support) x confidence: pixels whose Gaussians the
    labelled views already supervise trust their pseudo label less. The label support map is rendered with
    the colours (one more channel); confidence is the view's pseudo_confidence map, else 1. The semsplat preset
    turns it on (+1.9 / +0.3 mIoU on townA / townB with the prior's pseudo labels, BENCHMARKS.md)."""
    pseudo_weight_by_agreement: bool = False
    """Also weight the pseudo loss at each pixel by 1 - (p_top - p_pseudo) of the model's own softmax (detached):
    where the model is sure of another class than the pseudo label it keeps its own (weight -> 0), where it
    agrees or hesitates the pseudo label counts fully. Meant for thin objects no labelled view sees, which the
    model can label from 3D neighbours while the prior paints the background class over them. The semsplat
    preset turns it on (+1.1 / +1.0 mIoU on townA / townB at 30k steps, BENCHMARKS.md)."""
    pseudo_trains_head: bool = True
    """Let the pseudo loss train the transfer head. False computes the pseudo loss through the head's weights
    detached: the head's class boundaries come from the labelled views alone, and pseudo labels only move the
    features of the Gaussians they cover (their many big-class pixels cannot pull the boundaries towards big
    classes, at the cost of rare classes)."""
    agg2d_loss_weight: float = 0.5
    """Weight a of the 2D aggregation loss L2D (KL between a pixel's features and its k nearest pixels')."""
    agg3d_loss_weight: float = 0.1
    """Weight b of the 3D aggregation loss L3D (KL between a Gaussian's features and its k nearest Gaussians')."""
    agg_k: int = 5
    """k, neighbours per sample for both aggregation losses."""
    agg2d_num_samples: int = 4096
    """m, pixels sampled per step for L2D."""
    agg3d_num_samples: int = 4096
    """m, Gaussians sampled per step for L3D."""
    agg3d_pool_factor: int = 2
    """kNN is computed for a pool of factor*m Gaussians at each refresh; each step samples m of them."""
    agg3d_knn_refresh_every: int = 500
    """Recompute the 3D kNN pool every this many steps (and whenever densification changed the Gaussians)."""
    class_balance: Literal["none", "inverse-sqrt-frequency"] = "none"
    """Class weights of both cross-entropies: none, or 1/sqrt of each class's labelled pixels (counted on the
    labelled views as training draws them), mean 1 over the classes seen. Meant for thin, rare classes (pole,
    sign, light); off until measured on the benchmark scenes."""
    semantic_start_step: int = 0
    """Step from which the semantic losses are applied."""
    semantic_grad_to_geometry: bool = True
    """Let semantic gradients reach positions, shapes and opacities (one raster pass). False renders the
    semantics in a second pass with detached geometry."""
    loss_runner: LossRunner = "cuda-graph"
    """How a training view's image losses run (L1 + D-SSIM, L_s, the pseudo cross-entropy, L2D;
    :mod:`semsplat_ns.model.view_losses`): eager (each kernel launched from Python), or cuda-graph (forward and
    backward captured as CUDA graphs at the first view of each kind and render size, then replayed: fewer launches
    from the host; CUDA only, eager on the CPU). L3D, the scale regulariser and the camera optimiser's losses stay
    eager. The graphs draw L2D's samples from other random numbers than an eager run. Measured (aa28cb5, H200s,
    benchmarks/results/semsplat_aa28cb5.json): townA 58 s of training at 121 steps/s against 73 s at 96 eager,
    townB 70 s against 93 s; mIoU 75.66 / 60.65 against 75.21 / 60.94."""
    channel_chunk: int = 16
    """Channels per rasterization kernel while training. gsplat pads 19 -> 32; 16 runs RGB + semantics as a
    16- and a 3/4-channel kernel sharing one projection: 9 % faster forward+backward at 300k Gaussians on an
    H100 (BENCHMARKS.md). Evaluation renders use 32, whose forward pass is faster."""


def _transfer_head(semantic_dim: int, hidden_dim: int, num_classes: int) -> nn.Module:
    """Per-pixel MLP mapping rendered features to class logits ([..., D] -> [..., C])."""
    if hidden_dim <= 0:
        return nn.Linear(semantic_dim, num_classes)
    return nn.Sequential(nn.Linear(semantic_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, num_classes))


NEAR_PLANE, FAR_PLANE = 0.01, 1e10
"""Camera-depth range of a render, as splatfacto's ``get_outputs`` passes it to the rasterizer."""

EVAL_CHANNEL_CHUNK = 32
"""Channels per rasterization kernel outside training (see ``SemSplatModelConfig.channel_chunk``)."""


def world_to_camera(camera_to_worlds: torch.Tensor) -> torch.Tensor:
    """World-to-camera transforms in OpenCV axes of nerfstudio poses, on the poses' device.

    The rigid inverse of each pose after turning its y and z axes (OpenGL: y up, z back) into OpenCV's (y down,
    z forward): the arithmetic of splatfacto's ``get_viewmat``, for which it stands in within
    :meth:`SemSplatModel.get_outputs`. Run eagerly, with no compilation and without a host-to-device copy
    (splatfacto's, when run eagerly, copies its axis flip from the host on every call, which waits for the device).

    Args:
        camera_to_worlds: Camera-to-world poses [C, 3, 4].

    Returns:
        World-to-camera transforms [C, 4, 4].
    """
    rotation = camera_to_worlds[..., :3]  # [C, 3, 3], columns: the camera's axes in world coordinates
    rotation = torch.cat([rotation[..., :1], -rotation[..., 1:]], dim=-1)  # [C, 3, 3] OpenCV axes
    inverse = rotation.transpose(1, 2)  # [C, 3, 3]
    translation = -torch.bmm(inverse, camera_to_worlds[..., 3:])  # [C, 3, 1]
    bottom = torch.zeros_like(camera_to_worlds[:, :1, :])  # [C, 1, 4]
    bottom[..., 3] = 1.0
    return torch.cat([torch.cat([inverse, translation], dim=-1), bottom], dim=1)  # [C, 4, 4]


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """World positions of cameras [C, 3] from their rigid world-to-camera transforms [C, 4, 4]: -R^T t.

    The translation column of ``torch.inverse(viewmats)``, which gsplat's SH path reads, up to rounding, in two kernels:
    a general inverse is an LU factorisation, ~0.25 ms of host time per training step on the H200 profile
    (``linalg_inv_ex``, benchmarks/results/profile/profile_semsplat_aa28cb5.txt), and ``torch.inverse`` adds a check
    of its error codes that waits for the device.

    Args:
        viewmats: World-to-camera transforms [C, 4, 4] (a rotation and a translation).
    """
    rotation = viewmats[:, :3, :3]  # [C, 3, 3]
    translation = viewmats[:, :3, 3:]  # [C, 3, 1]
    return -torch.bmm(rotation.transpose(1, 2), translation)[..., 0]  # [C, 3]


def _first_camera_centre(viewmats: torch.Tensor) -> torch.Tensor:
    """World position of the first camera [3] of world-to-camera transforms [C, 4, 4] (:func:`camera_centres`)."""
    return camera_centres(viewmats)[0]


def intrinsics(camera: Cameras) -> torch.Tensor:
    """Pinhole intrinsics of one camera [1, 3, 3] (float32), built on the camera's device.

    The values of nerfstudio's ``Cameras.get_intrinsics_matrices``, which fills a CPU tensor: from a camera on
    the GPU that is one device-to-host copy per value, each waiting for the device.

    Args:
        camera: One camera (shape [1] or []).
    """
    fx, fy, cx, cy = (value.reshape(1, 1).float() for value in (camera.fx, camera.fy, camera.cx, camera.cy))
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)  # [1, 1]
    return torch.cat([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(1, 3, 3)  # [1, 3, 3]


def head_logits(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The transfer head's class logits of rendered features, in fewer kernels than calling the module.

    For the head of :func:`_transfer_head` with a hidden layer, the ReLU runs as the epilogue of the hidden
    layer's matmul (``torch._addmm_activation``: one kernel where ``nn.Sequential`` launches the matmul and then
    the ReLU over [P, hidden]); the arithmetic is the module's (the same matmuls and biases, max(0, x) exactly).
    Any other head is called as it is.

    Args:
        head: The transfer head.
        features: Features [P, S], contiguous.

    Returns:
        Logits [P, C].
    """
    layers = list(head.children()) if isinstance(head, nn.Sequential) else []
    first, activation, last = layers if len(layers) == 3 else (None, None, None)
    if (
        isinstance(first, nn.Linear)
        and isinstance(activation, nn.ReLU)
        and isinstance(last, nn.Linear)
        and first.bias is not None
        and last.bias is not None
    ):
        # a private torch function (cuBLASLt's bias + ReLU epilogue on CUDA); torch's stubs do not export it
        addmm_relu = torch._addmm_activation  # pyright: ignore[reportPrivateImportUsage]
        hidden = addmm_relu(first.bias, features, first.weight.t())  # [P, hidden], ReLU applied
        return torch.addmm(last.bias, hidden, last.weight.t())  # [P, C]
    return head(features)  # [P, C]


class SemSplatModel(ResumableSplatfacto):
    """Splatfacto with semantic Gaussians, a transfer head and the semsplat losses."""

    config: SemSplatModelConfig
    class_colors: torch.Tensor  # [C, 3] in [0, 1], a buffer
    labelled_class_pixels: torch.Tensor  # [C], a buffer
    train_metrics_every: Optional[int] = None
    """Training steps between two computations of the training metrics (:meth:`get_metrics_dict`); None: every step,
    as nerfstudio does. :class:`~semsplat_ns.trainer.SemSplatTrainer` sets it to ``logging.steps_per_log``: nerfstudio
    reads a training step's metrics only on the steps it logs."""

    def populate_modules(self):
        metadata = self.kwargs.get("metadata") or {}
        if "num_classes" not in metadata:
            raise ValueError(
                "semsplat needs a dataparser that reports 'num_classes' in its metadata (e.g. irt-data); "
                f"got metadata keys {sorted(metadata)}"
            )
        self.num_classes = int(metadata["num_classes"])
        self.class_names = list(metadata.get("class_names") or [f"class_{i}" for i in range(self.num_classes)])
        colors = torch.as_tensor(metadata["class_colors"], dtype=torch.float32) / 255.0  # [C, 3]

        # splatfacto builds seed colours with .cuda(); hand it the points without colours and set
        # the colour coefficients here instead, on whatever device we are on.
        seed_rgb = None
        if self.seed_points is not None and not self.config.random_init:
            seed_rgb = self.seed_points[1]
            self.seed_points = (self.seed_points[0], self.seed_points[1][:0])
        with lazy_lpips_during_setup():
            super().populate_modules()
        if seed_rgb is not None and seed_rgb.shape[0] > 0:
            from nerfstudio.models.splatfacto import RGB2SH

            rgb = seed_rgb.float() / 255.0  # [N, 3]
            dc = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
            self.gauss_params["features_dc"] = Parameter(dc)
        num_points = self.gauss_params["means"].shape[0]
        self.gauss_params["semantic_features"] = Parameter(torch.randn(num_points, self.config.semantic_dim) * 0.1)

        self.transfer_head = _transfer_head(self.config.semantic_dim, self.config.transfer_hidden_dim, self.num_classes)
        self.register_buffer("class_colors", colors, persistent=False)
        # splatfacto scores PSNR with a torchmetrics module on every training step (~2 ms of Python on
        # the H100 profile); the plain formula gives the same value (data range 1) for a few kernels.
        # The module holds no saved state, so checkpoints are unaffected.
        del self.psnr
        self.psnr = L.psnr_unit_range
        # pytorch_msssim's SSIM copies its window to the device on every call (a host sync per training step) and
        # filters in ten convolutions; this one gives the same value with the window on the model's device and two
        # convolutions. Splatfacto's metrics use it too; it holds no saved state either (a non-persistent buffer).
        self.ssim = SSIM(data_range=1.0, channel=3)
        # splatfacto's DefaultStrategy with the same settings, plus the cap on the Gaussian count.
        self.strategy = CappedDefaultStrategy.from_default(self.strategy, cap_max=self.config.max_gaussians)
        # One label support column per labelled training view (the dataset's semantic files).
        semantic_files = list(metadata.get("semantic_filenames") or [])
        self._support = LabelSupport([index for index, path in enumerate(semantic_files) if path is not None])
        self._neighbour_pool = NeighbourPool(
            self.config.agg3d_num_samples,
            self.config.agg3d_pool_factor,
            self.config.agg_k,
            self.config.agg3d_knn_refresh_every,
        )
        self._feature_pca = FeaturePCA()
        self._view_loss_runner = ViewLossRunner(self.config.loss_runner)
        # What training steps derive from the datamanager's cached view tensors (the same tensors on every draw of a
        # view): label maps at each render size, kept while the views live, and the photo as floats at the render's
        # size, which splatfacto computes twice per step (metrics and losses) from the same image.
        self._step_label_maps = DerivedTensors()
        self._step_gt_images = DerivedTensors(capacity=1)
        # A training view's pose is one tensor on every draw (the datamanager's prepared camera), so its
        # world-to-camera transform and camera centre are computed once per view instead of once per step (~20
        # host operators a step); a pose the camera optimiser moves (one with a gradient) is computed every step.
        self._step_viewmats = DerivedTensors()
        self._step_camera_centres = DerivedTensors()
        # Labelled pixels per class seen in training (class_balance); counted again after a resume.
        self.register_buffer("labelled_class_pixels", torch.zeros(self.num_classes), persistent=False)

    # -- parameters -----------------------------------------------------------------------------
    @property
    def semantic_features(self) -> Parameter:
        return self.gauss_params["semantic_features"]

    @property
    def label_support(self) -> torch.Tensor:
        """How much of each Gaussian the labelled views see [N] in [0, 1]: the max over labelled views of its
        footprint-averaged transmittance in their latest training render (see :mod:`label_support`)."""
        return self._support.per_gaussian(self.strategy_state, self.num_points, self.device)

    def step_post_backward(self, step):
        """Records the label support measured in this step's render, then splatfacto's densification.

        Args:
            step: The training step.
        """
        self._record_label_support()
        super().step_post_backward(step)

    def _record_label_support(self) -> None:
        """Stores the support of the labelled view rendered this step (before densification changes N)."""
        info = getattr(self, "info", None) or {}
        probe = info.pop("label_support_probe", None)  # [N, 1]; its gradient is each Gaussian's summed weight
        if probe is None or probe.grad is None:  # not a labelled view, or no loss reached the render
            return
        support = support_from_probe(probe.grad[:, 0], info["conics"][0], info["radii"][0], info["opacities"][0])  # [N]
        self._support.record(self.strategy_state, info["label_support_view"], support)

    def get_gaussian_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_gaussian_param_groups()
        groups["semantic_features"] = [self.gauss_params["semantic_features"]]
        return groups

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        groups["transfer_head"] = list(self.transfer_head.parameters())
        return groups

    # -- checkpoints (resuming: see ResumableSplatfacto) ---------------------------------------------
    def after_checkpoint_load(self) -> None:
        """Forgets what was computed from the Gaussians before the load (kNN pool, PCA axes)."""
        self._neighbour_pool.reset()
        self._feature_pca.key = None

    def accepts_strategy_state(self, name: str, value: torch.Tensor, count: int) -> bool:
        """A saved label support table is kept only for the same labelled views (else measured afresh)."""
        return name != LabelSupport.KEY or self._support.accepts(value, count)

    # -- rendering ------------------------------------------------------------------------------
    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, List]]:
        """Splatfacto's outputs plus the semantic features and logits, rendered in the same raster pass.

        Splatfacto's own ``get_outputs`` runs unchanged (camera optimiser, crop box, downscale schedule,
        densification bookkeeping, background, bilateral grid, depth); only its rasterization call is
        replaced by :meth:`_rasterize`, which adds the semantic channels to the colours, and its compiled camera
        transform by :func:`world_to_camera` (the same arithmetic, eager).

        Args:
            camera: One camera.

        Returns:
            Splatfacto's outputs, plus "semantic_features" [H, W, S] and "semantic_logits" [H, W, C]
            (at the render's resolution, which follows the downscale schedule in training), and
            "label_support" [H, W, 1] in evaluation (and in training with pseudo_weight_by_label_support).
        """
        if not isinstance(camera, Cameras):
            raise TypeError("SemSplatModel.get_outputs expects a Cameras object")
        rendered: Dict[str, torch.Tensor] = {}  # filled by _rasterize: extra channel name -> [H, W, k]
        # A labelled training view measures the label support of the Gaussians it renders.
        probe_view = self._support.column(camera.metadata) if self.training else None
        rasterize = functools.partial(self._rasterize, rendered, probe_view)
        # splatfacto's camera transform is compiled: ~3 s of compilation at the first training step and ~0.4 ms of
        # host time per step in its guards and wrappers (H200 profile, profile_semsplat_aa28cb5.txt); world_to_camera
        # is its arithmetic, eager
        to_camera = self._training_view_transform if self.training else world_to_camera
        with rasterization_override(rasterize), viewmat_override(to_camera), cuda_calls_stay_on(self.device):
            outputs = super().get_outputs(camera)
        rgb = outputs["rgb"]  # [H, W, 3]
        assert isinstance(rgb, torch.Tensor)
        feature_map = rendered.get("semantic_features")  # [H, W, S]
        if feature_map is None:  # the crop box holds no Gaussian: splatfacto rendered nothing
            feature_map = rgb.new_zeros(*rgb.shape[:2], self.config.semantic_dim)
        outputs["semantic_features"] = feature_map
        outputs["semantic_logits"] = self.transfer_head(feature_map)  # [H, W, C]
        if "label_support" in rendered:
            outputs["label_support"] = rendered["label_support"]  # [H, W, 1]
        elif not self.training:  # nothing rendered (empty crop box): no support either
            outputs["label_support"] = rgb.new_zeros(*rgb.shape[:2], 1)
        return outputs

    def _training_view_transform(self, camera_to_worlds: torch.Tensor) -> torch.Tensor:
        """:func:`world_to_camera` of a training pose [1, 3, 4] -> [1, 4, 4], kept per pose tensor when the pose has
        no gradient (read it, never change it)."""
        if camera_to_worlds.requires_grad:
            return world_to_camera(camera_to_worlds)
        return self._step_viewmats.get(camera_to_worlds, camera_to_worlds._version, world_to_camera)

    def _rasterize(
        self,
        rendered: Dict[str, torch.Tensor],
        probe_view: Optional[int],
        *,
        colors: torch.Tensor,
        sh_degree: Optional[int],
        **kwargs,
    ):
        """Splatfacto's rasterization call with the semantic channels appended to the colours.

        Args:
            rendered: Receives the extra channels' images by name ([H, W, k] each).
            probe_view: Label support column of the camera when it is a labelled training view: the
                render then also measures each Gaussian's summed blending weight (a probe channel).
            colors: What splatfacto passes: SH coefficients [M, K, 3] (with ``sh_degree``) or RGB [M, 3].
            sh_degree: SH degree to evaluate, or None when ``colors`` are RGB already.
            **kwargs: Splatfacto's other arguments (its Gaussians, camera, render mode, ...).

        Returns:
            What splatfacto expects from gsplat: the render with RGB first and, when asked, the depth as channel 3
            ([1, H, W, 3 + 1]; without depth RGB and maybe the extra channels after it [1, H, W, 3 (+ E)]), alphas
            [1, H, W, 1] and the info dict of the pass that renders RGB.
        """
        means = kwargs["means"]  # [M, 3]
        rgb = self._view_colors(colors, sh_degree, means, kwargs["viewmats"])  # [M, 3]
        extras = self._extra_channels(means.shape[0])  # name -> [M, k]
        if probe_view is not None:
            extras["label_support_probe"] = blending_weight_probe(means.shape[0], means.device)  # [M, 1], last
        widths = [value.shape[-1] for value in extras.values()]
        extra_colors = torch.cat(list(extras.values()), dim=-1)  # [M, E]
        n_extra = extra_colors.shape[-1]
        kwargs["channel_chunk"] = self.config.channel_chunk if self.training else EVAL_CHANNEL_CHUNK
        if self.config.semantic_grad_to_geometry:
            render, alpha, info = rasterization(colors=torch.cat([rgb, extra_colors], dim=-1), **kwargs)
            probe_channel = 3 + n_extra - 1
            full_render = render  # [1, H, W, 3 + E (+1)]
            n_depth = render.shape[-1] - 3 - n_extra
            # one split for all: RGB [H, W, 3], each extra [H, W, k], the depth [H, W, 0 or 1]
            extra_renders = render[0].split([3, *widths, n_depth], dim=-1)[1 : 1 + len(widths)]
            if n_depth:  # splatfacto reads RGB from channels 0-2 and the depth from channel 3
                render = torch.cat([render[..., :3], render[..., 3 + n_extra :]], dim=-1)  # [1, H, W, 3 + 1]
            # else splatfacto reads channels 0-2 only (a training render): the whole render, without a copy
        else:
            render, alpha, info = rasterization(colors=rgb, **kwargs)
            # A second pass on detached geometry: the semantic losses move the extra channels only.
            detached = {name: kwargs[name].detach() for name in ("means", "quats", "scales", "opacities")}
            arguments = {**kwargs, **detached, "render_mode": "RGB", "absgrad": False}
            full_render = rasterization(colors=extra_colors, **arguments)[0]  # [1, H, W, E]
            probe_channel = n_extra - 1
            extra_renders = full_render[0].split(widths, dim=-1)  # [H, W, k] each
        if probe_view is not None and full_render.requires_grad:
            unit_gradient_on(full_render, probe_channel)
            # read back by step_post_backward, like the rest of this render's info
            info["label_support_probe"], info["label_support_view"] = extras["label_support_probe"], probe_view
        rendered.update(zip(extras, extra_renders))
        if "label_support" in rendered:  # the share of each pixel's colour from Gaussians a labelled view sees
            rendered["label_support"] = normalised_support(rendered["label_support"], alpha[0].detach())  # [H, W, 1]
        return render, alpha, info

    def _extra_channels(self, count: int) -> Dict[str, torch.Tensor]:
        """Per-Gaussian values rendered with the colours, for the ``count`` Gaussians splatfacto renders.

        Args:
            count: Number of Gaussians in splatfacto's call (fewer than all with a crop box).

        Returns:
            Name -> values [count, k].
        """
        rows = self._rendered_rows(count)  # [N] bool, or None for all

        def rendered_rows(values: torch.Tensor) -> torch.Tensor:
            return values if rows is None else values[rows]

        channels = {"semantic_features": rendered_rows(self.semantic_features)}  # [count, S]
        # in training only for the pseudo loss's weights (none without a pseudo loss, e.g. the baseline flags)
        if not self.training or (self.config.pseudo_weight_by_label_support and self.config.pseudo_loss_weight > 0):
            # constants of the render: the loss weighting must not move Gaussians to change them
            channels["label_support"] = rendered_rows(self.label_support.detach())[:, None]  # [count, 1]
        return channels

    def _rendered_rows(self, count: int) -> Optional[torch.Tensor]:
        """Which Gaussians splatfacto's call renders: None for all, else its crop-box mask [N].

        Args:
            count: Number of Gaussians in splatfacto's call.
        """
        if count == self.num_points:
            return None  # no crop, or a crop that keeps all (the same rows in the same order)
        if self.crop_box is None:
            raise RuntimeError(f"splatfacto rendered {count} of {self.num_points} Gaussians without a crop box")
        rows = self.crop_box.within(self.means).squeeze()  # [N], splatfacto's own crop test
        if int(rows.sum()) != count:
            raise RuntimeError(f"the crop box keeps {int(rows.sum())} Gaussians; splatfacto rendered {count}")
        return rows

    def _view_colors(
        self, colors: torch.Tensor, sh_degree: Optional[int], means: torch.Tensor, viewmats: torch.Tensor
    ) -> torch.Tensor:
        """RGB of each Gaussian seen from the camera [M, 3], computed from SH as gsplat does.

        The semantic channels are plain features, which gsplat cannot mix with SH coefficients in one
        call, so the SH colours are evaluated here and every channel reaches the rasterizer activated.

        Args:
            colors: SH coefficients [M, K, 3], or RGB [M, 3] when ``sh_degree`` is None.
            sh_degree: SH degree to evaluate, or None.
            means: Gaussian centres [M, 3].
            viewmats: World-to-camera transform [1, 4, 4].
        """
        if sh_degree is None:
            return colors  # splatfacto applied the sigmoid already (config sh_degree = 0)
        if self.training and not viewmats.requires_grad:  # a kept transform (_training_view_transform) or a new one
            camera_position = self._step_camera_centres.get(viewmats, viewmats._version, _first_camera_centre)  # [3]
        else:
            camera_position = _first_camera_centre(viewmats)  # [3]
        # Same convention as gsplat's SH path (Inria's +0.5 offset, clamped at 0).
        return torch.clamp_min(spherical_harmonics(sh_degree, means - camera_position, colors) + 0.5, 0.0)

    @torch.no_grad()
    def semantic_visuals(self, logits: torch.Tensor, feature_map: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Viewer/render outputs: palette colours, confidence and a PCA view of the features.

        Args:
            logits: Class logits [H, W, C].
            feature_map: Rendered semantic features [H, W, S].
        """
        # the PCA axes follow the Gaussians: recomputed when they are replaced, change in count or train on
        gaussians = (id(self.gauss_params["semantic_features"]), self.num_points, self.step)
        pca = self._feature_pca(self.semantic_features.detach(), feature_map, gaussians)  # [H, W, 3]
        return {**class_pictures(logits, self.class_colors), "semantic_features_pca": pca}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, torch.Tensor]:
        """Splatfacto's render of one camera plus the semantic pictures the viewer and ``ns-render`` show.

        Args:
            camera: One camera.
            obb_box: Optional crop box.
        """
        with renders_run_eagerly():
            outputs = super().get_outputs_for_camera(camera, obb_box)
        outputs.update(self.semantic_visuals(outputs["semantic_logits"], outputs["semantic_features"]))
        return outputs

    # -- evaluation renders: the semantic channels alone ----------------------------------------------
    def _raster_semantic_features(self, camera: Cameras) -> torch.Tensor:
        """The rendered semantic features of one camera at full resolution [H, W, S], and nothing else.

        The evaluation path's single raster pass: the S feature channels of every Gaussian (no crop box),
        with the Gaussians, camera and raster settings of splatfacto's evaluation render (:meth:`get_outputs`
        out of training), but no colour channels, SH evaluation, label support or depth. The image size is the
        only value this method reads back to the host (one transfer, before any work is queued); the camera's
        transforms are built on the device.

        Args:
            camera: One camera (shape [1] or []), on any device.

        Returns:
            Features [H, W, S] on the model's device, equal to :meth:`get_outputs`' "semantic_features" in
            evaluation (alpha blending treats each channel on its own).
        """
        device = self.device
        camera_to_worlds = camera.camera_to_worlds.reshape(-1, 3, 4)  # [1, 3, 4]
        if camera_to_worlds.shape[0] != 1:
            raise ValueError(f"renders one camera at a time, got {camera_to_worlds.shape[0]}")
        width, height = torch.cat([camera.width.reshape(-1), camera.height.reshape(-1)]).tolist()
        render, _, _ = rasterization(
            means=self.means,  # [N, 3]
            quats=self.quats,  # [N, 4]; normalised by the rasterizer
            scales=torch.exp(self.scales),  # [N, 3]
            opacities=torch.sigmoid(self.opacities).squeeze(-1),  # [N]
            colors=self.semantic_features,  # [N, S]
            viewmats=world_to_camera(camera_to_worlds.to(device)),  # [1, 4, 4]
            Ks=intrinsics(camera).to(device),  # [1, 3, 3]
            width=int(width),
            height=int(height),
            near_plane=NEAR_PLANE,
            far_plane=FAR_PLANE,
            packed=False,
            render_mode="RGB",
            rasterize_mode=self.config.rasterize_mode,
            channel_chunk=EVAL_CHANNEL_CHUNK,
        )  # [1, H, W, S]
        return render[0]

    @torch.inference_mode()
    def render_semantic_features(self, camera: Cameras) -> torch.Tensor:
        """Rendered semantic features of one camera at full resolution [H, W, S] (for evaluation code).

        Args:
            camera: One camera (shape [1] or []), on any device.

        Returns:
            Features [H, W, S] on the model's device, an inference tensor (read-only outside inference mode).
        """
        return self._raster_semantic_features(camera)

    @torch.inference_mode()
    def render_semantics(self, camera: Cameras) -> torch.Tensor:
        """Class logits of one camera at full resolution [H, W, C] (for evaluation code).

        Renders the semantic features alone (:meth:`render_semantic_features`) and runs the transfer head: the
        logits of :meth:`get_outputs` in evaluation, without its colours, depth and label support.

        Args:
            camera: One camera (shape [1] or []), on any device.

        Returns:
            Logits [H, W, C] on the model's device, an inference tensor (read-only outside inference mode).
        """
        features = self._raster_semantic_features(camera)  # [H, W, S]
        logits = head_logits(self.transfer_head, features.reshape(-1, features.shape[-1]))  # [H*W, C]
        return logits.reshape(*features.shape[:2], -1)  # [H, W, C]

    @torch.inference_mode()
    def render_labels(self, camera: Cameras) -> torch.Tensor:
        """Predicted class id of every pixel [H, W] (long): the argmax of :meth:`render_semantics`' logits.

        The path the timing protocol times (:mod:`semsplat_ns.eval.timing`): one raster pass of the feature
        channels, the head with its ReLU fused into the first matmul, the argmax over the logits (no softmax);
        the result stays on the model's device. The host waits for the device twice: to read the image size and
        inside gsplat (its count of tile intersections).

        Args:
            camera: One camera (shape [1] or []), on any device.

        Returns:
            Class ids [H, W] on the model's device, an inference tensor (read-only outside inference mode).
        """
        return self.render_semantics(camera).argmax(dim=-1)  # [H, W]

    # -- losses ---------------------------------------------------------------------------------
    def _labels_at(self, batch: Dict, key: str, height: int, width: int) -> Optional[torch.Tensor]:
        """A per-pixel map of the batch (labels, masks, confidence) sampled at the render's size [h, w].

        In training the result is kept per map and size (:class:`DerivedTensors`): the datamanager hands out the
        same map tensor on every draw of a view, so each view's map is sampled once per downscale level instead of
        once per step. Read it, never change it in place.
        """
        value = batch.get(key)
        if value is None:
            return None

        def on_device_at_render_size(source: torch.Tensor) -> torch.Tensor:
            # non_blocking: a host map (cached in host memory) is copied without waiting for the device; the
            # datamanager never changes its cached maps, so the copy reads what it would read at once
            return L.downscale_labels(source.to(self.device, non_blocking=True), height, width)  # [h, w]

        if not self.training:
            return on_device_at_render_size(value)
        return self._step_label_maps.get(value, (str(self.device), height, width), on_device_at_render_size)

    def get_gt_img(self, image: torch.Tensor) -> torch.Tensor:
        """Splatfacto's ground-truth photo at the render's size (floats in [0, 1] on the model's device), computed
        once per training step rather than twice: splatfacto asks for it in the metrics and again in the losses.

        Args:
            image: The batch's photo [H, W, 3 or 4] (uint8 or float).

        Returns:
            The photo at this step's downscale factor [h, w, 3 or 4]; in training a kept tensor (read it only).
        """
        if not self.training:
            return super().get_gt_img(image)
        return self._step_gt_images.get(image, (str(self.device), self._get_downscale_factor()), self._gt_img_untimed)

    def _gt_img_untimed(self, image: torch.Tensor) -> torch.Tensor:
        """Splatfacto's ground-truth photo, its downscaling convolution without cuDNN's algorithm timing (each
        downscale factor is a new shape; :func:`~semsplat_ns.model.compat.cudnn_benchmark_off`)."""
        with cudnn_benchmark_off():
            return super().get_gt_img(image)

    def _pseudo_logits(self, outputs: Dict) -> torch.Tensor:
        """The logits the pseudo loss sees [H, W, C]: the outputs' own, or with pseudo_trains_head off the
        rendered features through the head's weights detached (gradients reach the features only)."""
        if self.config.pseudo_trains_head:
            return outputs["semantic_logits"]
        frozen = {name: value.detach() for name, value in self.transfer_head.named_parameters()}
        return torch.func.functional_call(self.transfer_head, frozen, (outputs["semantic_features"],))

    def _class_weights(self, labels: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Counts this labelled view's pixels per class and returns the class weights [C] (None: no balance).

        Args:
            labels: This view's labels at the render's size [H, W], or None for a view without labels.
        """
        if self.config.class_balance == "none":
            return None
        if labels is not None:
            ids = labels.reshape(-1).long()  # [P]
            counted = (ids != L.IGNORE_INDEX).float()  # [P]
            self.labelled_class_pixels.index_add_(0, ids.clamp(max=self.num_classes - 1), counted)
        return L.inverse_sqrt_frequency_weights(self.labelled_class_pixels)

    def photometric_loss_dict(self, outputs: Dict, batch: Dict) -> Dict[str, torch.Tensor]:
        """Splatfacto's losses (``SplatfactoModel.get_loss_dict``' dict, the same values) without its host syncs.

        Exists because splatfacto's version waits for the device every training step: on the nine steps in ten
        without scale regularisation it copies a host zero to the device (``torch.tensor(0.0).to(device)``), and
        its SSIM copies the filter window to the device on each call. Here the zero is made on the device and the
        SSIM is :class:`~semsplat_ns.model.ssim.SSIM` (installed as ``self.ssim``). Everything else is splatfacto's
        own helpers and arithmetic: the photo at the render's size over the background, the optional mask (which
        blacks out both images), L1 and SSIM mixed by ``ssim_lambda``, the scale regularisation every tenth step,
        and in training the camera optimiser's losses and the bilateral grid's total variation.

        Args:
            outputs: This view's outputs ("rgb" [H, W, 3], "background" [3]).
            batch: This view's batch ("image" [H, W, 3 or 4], optional "mask" [H, W, 1]).

        Returns:
            "main_loss" and "scale_reg" (0-dim tensors), plus the camera optimiser's losses and "tv_loss" (with
            the bilateral grid) in training.
        """
        gt_img, pred_img = self._photometric_images(outputs, batch)  # [H, W, 3] each
        main_loss = photometric_main_loss(gt_img, pred_img, self.ssim, self.config.ssim_lambda)
        return self._photometric_regularisers({"main_loss": main_loss})

    def _photometric_images(self, outputs: Dict, batch: Dict) -> Tuple[torch.Tensor, torch.Tensor]:
        """The photo at the render's size over the background and the render [H, W, 3] each, both masked where the
        batch has a mask (splatfacto's ``get_loss_dict``)."""
        gt_img = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])  # [H, W, 3]
        pred_img = outputs["rgb"]  # [H, W, 3]
        if "mask" in batch:
            mask = self._downscale_if_required(batch["mask"]).to(self.device)  # [H, W, 1]
            assert mask.shape[:2] == gt_img.shape[:2] == pred_img.shape[:2]
            gt_img = gt_img * mask
            pred_img = pred_img * mask
        return gt_img, pred_img

    def _photometric_regularisers(self, loss_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Adds splatfacto's other terms to ``loss_dict`` and returns it: "scale_reg" (every tenth step, else a device
        zero), and in training the camera optimiser's losses and the bilateral grid's "tv_loss"."""
        if self.config.use_scale_regularization and self.step % 10 == 0:
            scales = torch.exp(self.scales)  # [N, 3]
            ratio = scales.amax(dim=-1) / scales.amin(dim=-1)  # [N]
            # clamp_min: splatfacto's maximum against a host scalar tensor, the same values
            scale_reg = 0.1 * (ratio.clamp_min(self.config.max_gauss_ratio) - self.config.max_gauss_ratio).mean()
        else:
            scale_reg = torch.zeros((), device=self.device)
        loss_dict["scale_reg"] = scale_reg
        if self.training:
            self.camera_optimizer.get_loss_dict(loss_dict)
            if self.config.use_bilateral_grid:
                loss_dict["tv_loss"] = 10 * total_variation_loss(self.bil_grids.grids)
        return loss_dict

    def _semantic_maps(self, outputs: Dict, batch: Dict) -> Dict[str, Optional[torch.Tensor]]:
        """This training view's maps for the semantic losses (:data:`~semsplat_ns.model.view_losses.VIEW_MAPS`), at
        the render's size; counts the view's labelled pixels per class when class_balance is on."""
        logits = outputs["semantic_logits"]  # [H, W, C]
        height, width = logits.shape[:2]
        labels = self._labels_at(batch, "semantics", height, width)  # [H, W] or None
        maps: Dict[str, Optional[torch.Tensor]] = {
            "logits": logits,
            "labels": labels,
            "class_weights": self._class_weights(labels),  # [C] or None
        }
        if self.config.agg2d_loss_weight > 0:
            maps["features"] = outputs["semantic_features"]  # [H, W, S]
        pseudo = self._labels_at(batch, "pseudo_semantics", height, width) if labels is None else None
        if pseudo is not None and self.config.pseudo_loss_weight > 0:
            maps["pseudo"] = pseudo  # [H, W]
            if self.config.pseudo_inside_boundary_only:
                maps["boundary"] = self._labels_at(batch, "boundary_mask", height, width)  # [H, W] or None
            if not self.config.pseudo_trains_head:
                maps["pseudo_logits"] = self._pseudo_logits(outputs)  # [H, W, C]
            if self.config.pseudo_weight_by_label_support:
                maps["support"] = outputs["label_support"].detach()[..., 0]  # [H, W], a constant of the loss
                maps["confidence"] = self._labels_at(batch, "pseudo_confidence", height, width)  # [H, W] or None
        return maps

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        """Splatfacto's losses (:meth:`photometric_loss_dict`) and, in training, the semantic losses of the paper.

        A training view's image losses (splatfacto's main loss, L_s, the pseudo cross-entropy, L2D) run through
        :class:`~semsplat_ns.model.view_losses.ViewLossRunner` (``loss_runner``: replayed CUDA graphs on CUDA);
        the scale regulariser, the camera optimiser's losses and L3D, which depend on the Gaussians, run eagerly.
        """
        semantic = self.training and "semantic_logits" in outputs and self.step >= self.config.semantic_start_step
        settings = ViewLossSettings.of(self.config)
        if self.training and self._view_loss_runner.graphs_on(outputs["rgb"].device) and torch.is_grad_enabled():
            gt_img, pred_img = self._photometric_images(outputs, batch)  # [H, W, 3] each
            maps = {"pred_rgb": pred_img, "gt_rgb": gt_img, **(self._semantic_maps(outputs, batch) if semantic else {})}
            image_losses = self._view_loss_runner(settings, self.ssim, maps, semantic)
            loss_dict = self._photometric_regularisers({"main_loss": image_losses.pop("main_loss")})
            loss_dict.update(image_losses)
        else:
            loss_dict = self.photometric_loss_dict(outputs, batch)
            if semantic:
                maps = self._semantic_maps(outputs, batch)
                loss_dict.update(view_losses(settings, self.ssim, maps, semantic=True, photometric=False))  # type: ignore[arg-type]
        if not semantic:
            return loss_dict

        if self.config.agg3d_loss_weight > 0 and self.num_points > self.config.agg_k:
            means = self.means.detach()  # [N, 3]
            sample_ids, neighbour_ids = self._neighbour_pool.sample(means, (id(self.means), self.num_points), self.step)
            loss_dict["agg3d_loss"] = self.config.agg3d_loss_weight * L.aggregation_3d_loss(
                self.semantic_features, sample_ids, neighbour_ids
            )
        return loss_dict

    # -- metrics --------------------------------------------------------------------------------
    def get_metrics_dict(self, outputs, batch) -> Dict[str, torch.Tensor]:
        """Splatfacto's metrics (PSNR, Gaussian count, the camera optimiser's), in training only on the steps
        :attr:`train_metrics_every` names; an empty dict on the others. Each costs kernel launches, and with the
        camera optimiser on two waits for the device (its rotation norms are read back to the host)."""
        every = self.train_metrics_every
        if self.training and every is not None and self.step % every != 0:
            return {}
        return super().get_metrics_dict(outputs, batch)

    def get_image_metrics_and_images(
        self, outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if metrics.get("lpips") != metrics.get("lpips"):
            metrics.pop("lpips", None)  # NaN: LPIPS weights unavailable (warned once)
        labels = batch.get("semantics")
        if labels is None or "semantic_logits" not in outputs:
            return metrics, images
        from semsplat_ns.eval.metrics import confusion_matrix, miou, pixel_accuracy

        labels = labels.to(self.device).long()  # [H, W]
        pred = outputs["semantic_logits"].argmax(dim=-1)  # [H, W]
        cm = confusion_matrix(pred, labels, self.num_classes)
        metrics["semantic_acc"] = float(pixel_accuracy(cm))
        metrics["semantic_miou"] = float(miou(cm))
        images["semantics"] = error_panel(pred, labels, self.class_colors)  # GT | prediction | error
        return metrics, images
