"""Method specification of semsplat, registered through the ``nerfstudio.method_configs`` entry point.

Keep this module free of ``nerfstudio.configs.method_configs`` imports: nerfstudio imports it while that
module is still being initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig
from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.model.semsplat_model import SemSplatModelConfig

PAPER_STEPS = 30_000


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config, stepping with torch's fused Adam kernel where the parameters allow it."""

    fused: bool = True
    """Use the fused kernel (CUDA and CPU parameters). splatfacto keeps one optimiser per Gaussian
    attribute, so per-step launch overhead is paid 8 times; the fused step launches far fewer kernels.
    False: torch's default implementation."""

    def setup(self, params) -> torch.optim.Optimizer:
        params = list(params)
        fused = self.fused and all(p.device.type in ("cuda", "cpu") for p in params)
        return self._target(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused or None)


def _adam(lr: float) -> dict:
    return {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}


def semsplat_trainer_config(max_steps: int = PAPER_STEPS) -> TrainerConfig:
    """The paper's configuration: splatfacto's optimisation plus the semantic parts (Table III, last row)."""
    return TrainerConfig(
        method_name="semsplat",
        steps_per_eval_image=500,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        # Whole-test-set evaluation belongs to `semsplat-eval`, not to the training loop.
        steps_per_eval_all_images=0,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=VanillaPipelineConfig(
            datamanager=SemSplatDataManagerConfig(dataparser=SemSplatDataParserConfig(), cache_images_type="uint8"),
            model=SemSplatModelConfig(),
        ),
        optimizers={
            "means": {
                "optimizer": FusedAdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps),
            },
            "features_dc": _adam(0.0025),
            "features_rest": _adam(0.0025 / 20),
            "opacities": _adam(0.05),
            "scales": _adam(0.005),
            "quats": _adam(0.001),
            "semantic_features": _adam(0.0025),
            "transfer_head": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
            },
            "camera_opt": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-4, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(
                    lr_final=5e-7, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
                ),
            },
            "bilateral_grid": {
                "optimizer": FusedAdamOptimizerConfig(lr=2e-3, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(
                    lr_final=1e-4, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
                ),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


semsplat = MethodSpecification(
    config=semsplat_trainer_config(),
    description=(
        "Semantic Gaussian splatting for multi-view remote-sensing segmentation from few labelled views "
        "(arXiv 2412.05969). Ablations: --pipeline.model.pseudo-loss-weight 0 / agg2d-loss-weight 0 / "
        "agg3d-loss-weight 0."
    ),
)
