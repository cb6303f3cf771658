"""Method specification of semsplat, registered through the ``nerfstudio.method_configs`` entry point.

Keep this module free of ``nerfstudio.configs.method_configs`` imports: nerfstudio imports it while that
module is still being initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.configs.base_config import LoggingConfig, MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig
from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.model.semsplat_model import SemSplatModelConfig
from semsplat_ns.schedule import PAPER_STEPS, PRESET_STEPS, SCHEDULE_FIELDS, scaled_schedule
from semsplat_ns.trainer import SemSplatTrainerConfig

PRIOR_PSEUDO_LOSS_WEIGHT = 0.25
"""Pseudo-label weight of the preset, whose pseudo labels are the prior's (measured at 30k steps, H100/H200,
benchmarks/results/semsplat_prior.json: townA 64.89 mIoU against 62.73 for the paper's weight 1 on
reprojected labels and 63.12 for a Unet on the labelled views; townB 54.92 against 44.72 and 50.18)."""

FAST_STEPS = 5_000
"""Training steps of ``semsplat-fast``, the paper's schedule compressed to them. Measured on one 4 x H200
machine, each run alone on its GPU with 16 cores, code a676606 (benchmarks/results/semsplat_a676606.json): 5000
steps scored 76.02 / 61.07 mIoU on townA / townB against 75.52 / 61.05 for the 7000-step preset, both on the
192-pixel prior, in 79.7 / 79.9 s of seed points, pseudo labels and training against 97.1 / 95.4 s; 6000 steps
scored 75.49 / 60.63 in 92.3 / 91.0 s. The prior decides more than the loop's length: with a 4500-step prior, 6000
and 7000 steps both scored 59.4-59.8 on townB (Wall, Fence, Water and TrafficLight under), and a 3000-step prior,
this preset's from a931229 to 28cdb21 (256-pixel crops), scored 73.79 / 74.13 on townA against 75.18 / 75.56 on one
H100. Before the prior's 192-pixel crops (e8b926c) a shorter loop lost the smallest objects (17f17cd, 3500 and 4500
steps: townA's TrafficSign and townB's Dynamic at 0 IoU), and it still does on them: at 38ed0ca, first runs on one
4 x H200 machine (benchmarks/results/semsplat_first_run_38ed0ca.json), 4000 / 4500 steps scored 73.37 / 73.61 on
townA (TrafficSign 0) and 60.62 / 60.52 on townB, against 75.12 / 61.22 for 5000 steps and 75.17 / 60.13 for the
preset."""

FAST_PRIOR_CROP = 192
"""Crop side of ``semsplat-fast``'s prior (the preset's is ``UnetRecipe.crop``, 256): the prior trains in ~30 s
instead of ~44 s on an H100, which keeps the fast preset under 90 s end to end. Measured on one H100 at d8f048f
(benchmarks/results/semsplat_before_after_d8f048f.json): 75.43 / 60.28 mIoU in 83.7 / 84.4 s on townA / townB; as
registered (33066aa) 75.28 in 84.6 s on townA, against 75.07 in 115.8 s for the preset on the same machine.
192-pixel priors cost townB's Wall and Bridge 6-9 IoU points on average (see ``UnetRecipe.crop``), so the preset
keeps 256. The two presets' pseudo labels differ: switching a scene between them rebuilds its cached labels."""


FAST_PRIOR_LABELLED_ONLY_SHARE = 1 / 3
"""``semsplat-fast``'s prior draws all the crops of its first third of steps (2000 of 6000) from the labelled views;
its reprojected labels join after them (``PriorSettings.labelled_only_share``). On a scene's first run the pipeline
makes those labels, seed points' triangulation included, in a thread beside these steps instead of before the prior.
Measured on one H100, each run alone on it, first runs at 638a84c with 2000 steps (the same setting, as a step
count; benchmarks/results/semsplat_first_run_638a84c.json): townA 75.47 mIoU in 83.6 s of stages, townB 61.30 in
83.9 s (the points, depth and reprojection took 15.0 / 11.6 s beside the prior, which waited 4.8 / 1.4 s for them);
without it, at 38ed0ca, 75.21 in 97.4 s on townA (another H100 machine, whose loop ran 108 against 126 steps/s), and
75.12 / 61.22 on one 4 x H200 machine. The preset keeps 0: its time target is met without it, and its prior was not
measured with it. A share, not a step count: a shorter prior (``--pipeline.datamanager.pseudo-prior.steps``) keeps
the same split."""


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


def semsplat_trainer_config(max_steps: int = PAPER_STEPS) -> SemSplatTrainerConfig:
    """The paper's configuration: splatfacto's optimisation plus the semantic parts (Table III, last row), with the
    pipeline's pseudo labels; its step-counted model fields are the paper's 30k schedule whatever ``max_steps``
    (the learning-rate decays end at ``max_steps``). The registered presets compress the schedule
    (:func:`semsplat_preset_config`)."""
    return SemSplatTrainerConfig(
        method_name="semsplat",
        steps_per_eval_image=500,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        # Whole-test-set evaluation belongs to `semsplat-eval`, not to the training loop.
        steps_per_eval_all_images=0,
        max_num_iterations=max_steps,
        mixed_precision=False,
        # Every logged step reads each loss and metric back from the GPU: ~28 host syncs, 2.8 a step at
        # nerfstudio's 10 (benchmarks/results/profile/syncs_76868a3.json), 0.28 at 100.
        logging=LoggingConfig(steps_per_log=100),
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=VanillaPipelineConfig(
            # The best measured pipeline with no extra step: a scene without pseudo labels gets the prior's,
            # made once before training and cached (--pipeline.datamanager.auto-pseudo-labels off: none), and
            # each pseudo-labelled pixel counts as much as labelled views do not see it (label support):
            # +1.9 / +0.3 mIoU on townA / townB over the prior's labels unweighted, and as much as the model
            # does not object to it (agreement): +1.1 / +1.0 more (BENCHMARKS.md). The pseudo labels' own defaults
            # spare thin objects (poles, lights, signs): a class-balanced prior and reprojection's colour
            # tolerance 3: 75.85 / 60.70 at 7000 steps, against 74.89 / 59.41 at tolerance 5 (75.22 / 59.75 in an
            # earlier run) and 70.42 / 57.06 with neither.
            datamanager=SemSplatDataManagerConfig(
                dataparser=SemSplatDataParserConfig(), cache_images_type="uint8", auto_pseudo_labels="prior"
            ),
            model=SemSplatModelConfig(
                pseudo_loss_weight=PRIOR_PSEUDO_LOSS_WEIGHT,
                pseudo_weight_by_label_support=True,
                pseudo_weight_by_agreement=True,
            ),
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


def compress_schedule(model: SemSplatModelConfig, max_steps: int, refine_every: int) -> SemSplatModelConfig:
    """The model's step-based schedule (densification window, resolution and SH warm-ups) compressed from the
    paper's 30k steps to ``max_steps``, as the benchmarks' shorter runs scale it (the kNN refresh of L3D keeps its
    500 steps, as measured).

    Args:
        model: A model config with the paper's schedule (changed in place).
        max_steps: Training steps of the shorter run (at most :data:`PAPER_STEPS`).
        refine_every: Densification interval; kept, but no compressed step count falls below it.

    Returns:
        ``model``.
    """
    assert 0 < max_steps <= PAPER_STEPS, f"max_steps must lie in (0, {PAPER_STEPS}], got {max_steps}"
    compressed = scaled_schedule({name: int(getattr(model, name)) for name in SCHEDULE_FIELDS}, max_steps)
    for name, value in compressed.items():
        # refine_every stays: it is the window over which densification gathers gradient statistics, which
        # needs views, not a share of the run; no compressed step count falls below it.
        setattr(model, name, max(refine_every, value))
    return model


def semsplat_preset_config(method_name: str = "semsplat", max_steps: int = PRESET_STEPS) -> SemSplatTrainerConfig:
    """A registered preset: :func:`semsplat_trainer_config` with the paper's schedule compressed to ``max_steps``
    (kept as it is at :data:`PAPER_STEPS`)."""
    config = semsplat_trainer_config(max_steps=max_steps)
    config.method_name = method_name
    if max_steps != PAPER_STEPS:
        model = config.pipeline.model
        assert isinstance(model, SemSplatModelConfig)
        compress_schedule(model, max_steps, model.refine_every)
        config.steps_per_eval_image = max_steps // 10
        config.steps_per_save = max_steps // 4
    return config


def semsplat_fast_trainer_config() -> SemSplatTrainerConfig:
    """``semsplat-fast``: the preset's schedule compressed to :data:`FAST_STEPS`, its prior on
    :data:`FAST_PRIOR_CROP`-pixel crops, its first third of steps (:data:`FAST_PRIOR_LABELLED_ONLY_SHARE`) on the
    labelled views alone."""
    config = semsplat_preset_config("semsplat-fast", FAST_STEPS)
    datamanager = config.pipeline.datamanager
    assert isinstance(datamanager, SemSplatDataManagerConfig)
    datamanager.pseudo_prior.unet.crop = FAST_PRIOR_CROP
    datamanager.pseudo_prior.labelled_only_share = FAST_PRIOR_LABELLED_ONLY_SHARE
    return config


semsplat = MethodSpecification(
    config=semsplat_preset_config(),
    description=(
        "Semantic Gaussian splatting for multi-view remote-sensing segmentation from few labelled views "
        f"(arXiv 2412.05969), {PRESET_STEPS} steps (the paper's 30k schedule compressed: it measured higher with "
        "the automatic pseudo labels). Ablations: --pipeline.model.pseudo-loss-weight 0 / agg2d-loss-weight 0 / "
        "agg3d-loss-weight 0."
    ),
)

semsplat_fast = MethodSpecification(
    config=semsplat_fast_trainer_config(),
    description=(
        f"semsplat in {FAST_STEPS} steps instead of {PRESET_STEPS} (the same schedule compressed) with its prior on "
        f"{FAST_PRIOR_CROP}-pixel crops, its first third of steps on the labelled views while the reprojected labels "
        "are made beside them: about 30 s less end to end, within 1 mIoU of it on the towns measured."
    ),
)

semsplat_30k = MethodSpecification(
    config=semsplat_preset_config("semsplat-30k", PAPER_STEPS),
    description=(
        "semsplat on the paper's full 30k-step schedule (densification to step 15k). Use this, not "
        "--max-num-iterations, for longer runs: that flag leaves the preset's compressed schedule as it is."
    ),
)
