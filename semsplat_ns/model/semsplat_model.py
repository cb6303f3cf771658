"""The semsplat model: splatfacto plus per-Gaussian semantic features, rendered in the same pass.

Only adds to :class:`SplatfactoModel`: a ``semantic_features`` entry in ``gauss_params`` (so the
densification strategy splits, duplicates and prunes it with the rest), a per-pixel transfer head,
the semantic losses of the paper, semantic outputs for the viewer and semantic metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig, get_viewmat
from torch import nn
from torch.nn import Parameter

from semsplat_ns.model import losses as L
from semsplat_ns.model.compat import allow_numpy_scalars_in_checkpoints, lazy_lpips_during_setup
from semsplat_ns.model.rasterize import rasterization, spherical_harmonics

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
    """Densification stops growing the Gaussian count at this cap (pruning continues)."""
    semantic_loss_weight: float = 1.0
    """Weight of the cross-entropy on labelled views (L_s)."""
    pseudo_loss_weight: float = 1.0
    """Weight of the cross-entropy on pseudo-labelled views (Eq. 10); 0 disables pseudo labels."""
    pseudo_inside_boundary_only: bool = True
    """Use pseudo labels only inside the boundary mask B (paper); False uses the whole pseudo map."""
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
    semantic_start_step: int = 0
    """Step from which the semantic losses are applied."""
    semantic_grad_to_geometry: bool = True
    """Let semantic gradients reach positions, shapes and opacities (one raster pass). False renders the
    semantics in a second pass with detached geometry."""
    channel_chunk: int = 16
    """Channels per rasterization kernel while training. gsplat pads 19 -> 32; 16 runs RGB + semantics as a
    16- and a 3/4-channel kernel sharing one projection: 9 % faster forward+backward at 300k Gaussians on an
    H100 (BENCHMARKS.md). Evaluation renders use 32, whose forward pass is faster."""


def _transfer_head(semantic_dim: int, hidden_dim: int, num_classes: int) -> nn.Module:
    """Per-pixel MLP mapping rendered features to class logits ([..., D] -> [..., C])."""
    if hidden_dim <= 0:
        return nn.Linear(semantic_dim, num_classes)
    return nn.Sequential(nn.Linear(semantic_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, num_classes))


class SemSplatModel(SplatfactoModel):
    """Splatfacto with semantic Gaussians, a transfer head and the semsplat losses."""

    config: SemSplatModelConfig

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
        self.last_semantic_logits: Optional[torch.Tensor] = None
        self.render_visuals = True
        self._knn_pool: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self._knn_key: Optional[Tuple[int, int]] = None
        self._knn_step = 0
        self._pca_key: Optional[Tuple[int, int, int]] = None

    # -- parameters -----------------------------------------------------------------------------
    @property
    def semantic_features(self) -> Parameter:
        return self.gauss_params["semantic_features"]

    def get_gaussian_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_gaussian_param_groups()
        groups["semantic_features"] = [self.gauss_params["semantic_features"]]
        return groups

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        groups["transfer_head"] = list(self.transfer_head.parameters())
        return groups

    def step_post_backward(self, step):
        # Cap the count (the paper's 300k limit): no growth at the cap, and a refinement step that
        # overshoots it drops its least opaque Gaussians. Pruning and opacity resets continue.
        at_cap = self.num_points >= self.config.max_gaussians
        saved_grow_grad2d = self.strategy.grow_grad2d
        if at_cap:
            self.strategy.grow_grad2d = float("inf")
        try:
            super().step_post_backward(step)
        finally:
            self.strategy.grow_grad2d = saved_grow_grad2d
        excess = self.num_points - self.config.max_gaussians
        if excess > 0:
            from gsplat.strategy import ops

            drop = torch.zeros(self.num_points, dtype=torch.bool, device=self.means.device)  # [N]
            drop[self.opacities.detach().squeeze(-1).argsort()[:excess]] = True
            ops.remove(self.gauss_params, self.optimizers, self.strategy_state, drop)

    # -- rendering ------------------------------------------------------------------------------
    def _view_colors(self, means: torch.Tensor, camera_to_world: torch.Tensor, crop_ids) -> torch.Tensor:
        """View-dependent RGB of each Gaussian for one camera [N, 3]."""
        features_dc = self.features_dc if crop_ids is None else self.features_dc[crop_ids]
        if self.config.sh_degree <= 0:
            return torch.sigmoid(features_dc)
        features_rest = self.features_rest if crop_ids is None else self.features_rest[crop_ids]
        coeffs = torch.cat([features_dc[:, None, :], features_rest], dim=1)  # [N, K, 3]
        degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        dirs = means - camera_to_world[0, :3, 3]  # [N, 3]
        # Same convention as gsplat's SH path (Inria's +0.5 offset, clamped at 0).
        return torch.clamp_min(spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[torch.Tensor, List]]:
        """Renders RGB, depth and semantic features of one camera in one rasterization pass."""
        if not isinstance(camera, Cameras):
            raise TypeError("SemSplatModel.get_outputs expects a Cameras object")
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)  # [1, 3, 4]
        else:
            camera_to_world = camera.camera_to_worlds  # [1, 3, 4]

        crop_ids = None
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )

        def crop(x: torch.Tensor) -> torch.Tensor:
            return x if crop_ids is None else x[crop_ids]

        means = crop(self.means)  # [N, 3]
        semantic_features = crop(self.semantic_features)  # [N, S]
        colors = self._view_colors(means, camera_to_world, crop_ids)  # [N, 3]

        scale_fac = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale_fac)
        viewmat = get_viewmat(camera_to_world)  # [1, 4, 4]
        K = camera.get_intrinsics_matrices().to(self.device)  # [1, 3, 3]
        W, H = int(camera.width.item()), int(camera.height.item())
        self.last_size = (H, W)
        camera.rescale_output_resolution(scale_fac)

        with_depth = self.config.output_depth_during_training or not self.training
        render_mode = "RGB+ED" if with_depth else "RGB"
        geometry = dict(
            means=means,
            quats=crop(self.quats),
            scales=torch.exp(crop(self.scales)),
            opacities=torch.sigmoid(crop(self.opacities)).squeeze(-1),
        )
        raster_args = dict(
            viewmats=viewmat,
            Ks=K,
            width=W,
            height=H,
            packed=False,
            near_plane=0.01,
            far_plane=1e10,
            sh_degree=None,
            sparse_grad=False,
            rasterize_mode=self.config.rasterize_mode,
            channel_chunk=self.config.channel_chunk if self.training else 32,
        )
        if self.config.semantic_grad_to_geometry:
            render, alpha, self.info = rasterization(
                **geometry,
                colors=torch.cat([colors, semantic_features], dim=-1),  # [N, 3 + S]
                render_mode=render_mode,
                absgrad=self.strategy.absgrad,
                **raster_args,
            )
            rgb_render = render[..., :3]  # [1, H, W, 3]
            feature_map = render[0, ..., 3 : 3 + self.config.semantic_dim]  # [H, W, S]
            depth_render = render[..., -1:] if with_depth else None
        else:
            render, alpha, self.info = rasterization(
                **geometry, colors=colors, render_mode=render_mode, absgrad=self.strategy.absgrad, **raster_args
            )
            rgb_render = render[..., :3]
            depth_render = render[..., -1:] if with_depth else None
            detached = {name: value.detach() for name, value in geometry.items()}
            feature_map, _, _ = rasterization(**detached, colors=semantic_features, render_mode="RGB", **raster_args)
            feature_map = feature_map[0]  # [H, W, S]

        if self.training:
            self.strategy.step_pre_backward(
                self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info
            )

        background = self._get_background_color()
        rgb = torch.clamp(rgb_render + (1 - alpha) * background, 0.0, 1.0)  # [1, H, W, 3]
        depth = None
        if depth_render is not None:
            depth = torch.where(alpha > 0, depth_render, depth_render.detach().max()).squeeze(0)  # [H, W, 1]

        logits = self.transfer_head(feature_map)  # [H, W, C]
        outputs: Dict[str, Union[torch.Tensor, List]] = {
            "rgb": rgb.squeeze(0),
            "depth": depth,  # type: ignore[dict-item]
            "accumulation": alpha.squeeze(0),
            "background": background,
        }
        if self.training:
            outputs["semantic_logits"] = logits
            outputs["semantic_features"] = feature_map
        else:
            self.last_semantic_logits = logits
            if background.shape[0] == 3:
                outputs["background"] = background.expand(H, W, 3)
            if self.render_visuals:
                outputs.update(self.semantic_visuals(logits, feature_map))
        return outputs

    @torch.no_grad()
    def semantic_visuals(self, logits: torch.Tensor, feature_map: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Viewer/render outputs: palette colours, confidence and a PCA view of the features.

        Args:
            logits: Class logits [H, W, C].
            feature_map: Rendered semantic features [H, W, S].
        """
        probs = torch.softmax(logits, dim=-1)  # [H, W, C]
        confidence, labels = probs.max(dim=-1)  # [H, W]
        return {
            "semantics_colormap": self.class_colors.to(labels.device)[labels],  # [H, W, 3]
            "semantic_confidence": confidence[..., None],  # [H, W, 1]
            "semantic_features_pca": self._features_pca(feature_map),  # [H, W, 3]
        }

    def _features_pca(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Projects rendered features on the 3 main axes of the Gaussians' features [H, W, 3].

        The axes come from the Gaussians, not the view, so colours stay stable across views; they are
        recomputed when the Gaussians changed.
        """
        key = (id(self.gauss_params["semantic_features"]), self.num_points, self.step)
        if self._pca_key != key:
            feats = self.semantic_features.detach()  # [N, S]
            feats = feats[torch.randperm(feats.shape[0], device=feats.device)[:20000]]
            mean = feats.mean(0, keepdim=True)  # [1, S]
            _, _, axes = torch.pca_lowrank(feats - mean, q=min(3, feats.shape[1]), center=False)  # [S, 3]
            projected = (feats - mean) @ axes  # [n, 3]
            low, high = projected.quantile(0.01, dim=0), projected.quantile(0.99, dim=0)  # [3]
            self._pca_parts, self._pca_key = (axes, mean, low, high), key
        axes, mean, low, high = self._pca_parts
        projected = (feature_map - mean) @ axes  # [H, W, 3]
        return ((projected - low) / (high - low + 1e-8)).clamp(0, 1)

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, torch.Tensor]:
        return super().get_outputs_for_camera(camera, obb_box)

    @torch.no_grad()
    def render_semantics(self, camera: Cameras) -> torch.Tensor:
        """Class logits of one camera at full resolution [H, W, C] (for evaluation code).

        Renders RGB and semantics (one pass) but skips the viewer pictures.
        """
        was_training, self.render_visuals = self.training, False
        self.eval()
        try:
            self.get_outputs_for_camera(camera)
            assert self.last_semantic_logits is not None
            return self.last_semantic_logits
        finally:
            self.render_visuals = True
            self.train(was_training)

    @torch.no_grad()
    def render_labels(self, camera: Cameras) -> torch.Tensor:
        """Predicted class id of every pixel [H, W] (long)."""
        return self.render_semantics(camera).argmax(dim=-1)

    # -- losses ---------------------------------------------------------------------------------
    def _labels_at(self, batch: Dict, key: str, height: int, width: int) -> Optional[torch.Tensor]:
        value = batch.get(key)
        if value is None:
            return None
        return L.downscale_labels(value.to(self.device), height, width)

    def _knn_pool_for_step(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample ids [M] and their k nearest Gaussians [M, k], from a pool refreshed on the GPU."""
        key = (id(self.gauss_params["means"]), self.num_points)
        stale = self._knn_pool is None or self._knn_key != key
        stale = stale or (self.step - self._knn_step) >= self.config.agg3d_knn_refresh_every
        if stale:
            means = self.means.detach()  # [N, 3]
            pool_size = min(self.num_points, self.config.agg3d_num_samples * self.config.agg3d_pool_factor)
            pool = torch.randperm(self.num_points, device=means.device)[:pool_size]  # [P]
            neighbours = L.knn_indices(means[pool], means, self.config.agg_k, query_ids=pool)  # [P, k]
            self._knn_pool, self._knn_key, self._knn_step = (pool, neighbours), key, self.step
        pool, neighbours = self._knn_pool  # type: ignore[misc]
        pick = torch.randint(0, pool.shape[0], (min(self.config.agg3d_num_samples, pool.shape[0]),), device=pool.device)
        return pool[pick], neighbours[pick]

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if not self.training or "semantic_logits" not in outputs or self.step < self.config.semantic_start_step:
            return loss_dict
        logits = outputs["semantic_logits"]  # [H, W, C]
        height, width = logits.shape[:2]
        zero = logits.sum() * 0.0

        labels = self._labels_at(batch, "semantics", height, width)
        if labels is not None and self.config.semantic_loss_weight > 0:
            loss_dict["semantic_loss"] = self.config.semantic_loss_weight * L.semantic_cross_entropy(logits, labels)
        else:
            loss_dict["semantic_loss"] = zero

        pseudo = self._labels_at(batch, "pseudo_semantics", height, width)
        if pseudo is not None and labels is None and self.config.pseudo_loss_weight > 0:
            boundary = None
            if self.config.pseudo_inside_boundary_only:
                boundary = self._labels_at(batch, "boundary_mask", height, width)
                boundary = boundary.bool() if boundary is not None else torch.zeros_like(pseudo, dtype=torch.bool)
            loss_dict["pseudo_loss"] = self.config.pseudo_loss_weight * L.semantic_cross_entropy(
                logits, pseudo, boundary
            )
        else:
            loss_dict["pseudo_loss"] = zero

        if self.config.agg2d_loss_weight > 0:
            loss_dict["agg2d_loss"] = self.config.agg2d_loss_weight * L.aggregation_2d_loss(
                outputs["semantic_features"], self.config.agg2d_num_samples, self.config.agg_k
            )
        if self.config.agg3d_loss_weight > 0 and self.num_points > self.config.agg_k:
            sample_ids, neighbour_ids = self._knn_pool_for_step()
            loss_dict["agg3d_loss"] = self.config.agg3d_loss_weight * L.aggregation_3d_loss(
                self.semantic_features, sample_ids, neighbour_ids
            )
        return loss_dict

    # -- metrics --------------------------------------------------------------------------------
    def get_image_metrics_and_images(
        self, outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        if metrics.get("lpips") != metrics.get("lpips"):
            metrics.pop("lpips", None)  # NaN: LPIPS weights unavailable (warned once)
        labels = batch.get("semantics")
        if labels is None or self.last_semantic_logits is None:
            return metrics, images
        from semsplat_ns.eval.metrics import confusion_matrix, miou, pixel_accuracy

        labels = labels.to(self.device).long()  # [H, W]
        pred = self.last_semantic_logits.argmax(dim=-1)  # [H, W]
        cm = confusion_matrix(pred, labels, self.num_classes)
        metrics["semantic_acc"] = float(pixel_accuracy(cm))
        metrics["semantic_miou"] = float(miou(cm))
        colors = self.class_colors.to(self.device)
        valid = labels != L.IGNORE_INDEX
        gt_color = torch.where(valid[..., None], colors[labels.clamp(max=self.num_classes - 1)], 0.0)
        pred_color = colors[pred]
        wrong = (pred != labels) & valid
        error = torch.where(wrong[..., None], torch.tensor([1.0, 0.0, 0.0], device=self.device), 0.35 * pred_color)
        images["semantics"] = torch.cat([gt_color, pred_color, error], dim=1)  # GT | prediction | error
        return metrics, images
