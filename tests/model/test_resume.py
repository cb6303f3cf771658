"""Resuming a semsplat run from a checkpoint (issue #11, item 1): every Gaussian tensor trains on.

``ns-train ... --load-dir`` builds the model and its optimisers, then loads the checkpoint. Splatfacto's
``load_state_dict`` used to swap in new Parameters, so the optimisers stepped tensors that no longer
rendered and the loaded Gaussians stayed frozen (only the transfer head moved).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch

from semsplat_ns.model.semsplat_model import SemSplatModelConfig
from tests.cpu_training import cpu_trainer_config, run_steps, train

STEPS = 20
"""Total steps of both runs."""
SAVED_AT = 14
"""The checkpoint is saved after step SAVED_AT - 1; the resumed run starts at SAVED_AT."""
GAUSSIAN_TENSORS = ("means", "scales", "quats", "opacities", "features_dc", "features_rest", "semantic_features")
NUM_RANDOM = 600
"""Gaussians at initialisation."""
SCENE = dict(n_views=10, resolution=32, n_labelled=2, test_every=5)
"""8 training views: densification, paused for num_train + refine_every = 12 steps, runs at 12 and 16."""


def _config(scene: Path, output_dir: Path, timestamp: str):
    """A short CPU run that densifies before the checkpoint (step 12) and after it (16)."""
    config = cpu_trainer_config(scene, output_dir, STEPS, timestamp)
    model_cfg = config.pipeline.model
    assert isinstance(model_cfg, SemSplatModelConfig)
    model_cfg.num_random = NUM_RANDOM
    model_cfg.warmup_length = 4
    model_cfg.refine_every = 4
    model_cfg.reset_alpha_every = 1000
    model_cfg.stop_split_at = STEPS
    model_cfg.densify_grad_thresh = 0.0002
    model_cfg.sh_degree_interval = 5  # features_rest is trained from step 5 on
    model_cfg.num_downscales = 0
    model_cfg.agg2d_num_samples = 128
    model_cfg.agg3d_num_samples = 128
    # A new kNN pool every step in both runs: the pool is not checkpointed, so the runs would otherwise
    # draw different random numbers from the first step after the checkpoint.
    model_cfg.agg3d_knn_refresh_every = 1
    return config


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _test_miou(pipeline) -> float:
    """mIoU over the labelled test views."""
    from semsplat_ns.eval.metrics import confusion_matrix, miou

    model = pipeline.model
    total = torch.zeros(model.num_classes, model.num_classes, dtype=torch.long)  # [C, C]
    for camera, data in pipeline.datamanager.fixed_indices_eval_dataloader:
        labels = model.render_labels(camera)  # [H, W]
        total += confusion_matrix(labels, data["semantics"].long(), model.num_classes)
    return miou(total)


def _test_logits(pipeline) -> torch.Tensor:
    """Class logits of the test views [V, H, W, C]."""
    views = pipeline.datamanager.fixed_indices_eval_dataloader
    return torch.stack([pipeline.model.render_semantics(camera) for camera, _ in views])


def _same_view_order(source, target) -> None:
    """Gives ``target``'s datamanager the training-view order that ``source``'s is in.

    nerfstudio does not checkpoint the data order; aligning it (and the random seeds) isolates what the
    checkpoint restores, so the resumed run can be compared with the uninterrupted one step for step.
    """
    target.train_unseen_cameras = list(source.train_unseen_cameras)
    if hasattr(source, "random_generator"):
        target.random_generator = random.Random()
        target.random_generator.setstate(source.random_generator.getstate())


@pytest.mark.slow
def test_resumed_run_trains_every_gaussian_tensor_and_matches_an_uninterrupted_run(tmp_path, demo_town):
    scene = demo_town(**SCENE)
    config = _config(scene, tmp_path, "whole")
    config.save_only_latest_checkpoint = False  # keep the mid-run checkpoint next to the last one
    _seed(0)
    whole = train(config, SAVED_AT)  # saves step SAVED_AT - 1
    order_at_checkpoint = whole.pipeline.datamanager
    saved_count = whole.pipeline.model.num_points
    assert saved_count != NUM_RANDOM, "densified before the checkpoint"

    resumed_config = _config(scene, tmp_path, "resumed")
    resumed_config.load_dir = whole.checkpoint_dir
    resumed_config.set_timestamp()
    resumed = resumed_config.setup(local_rank=0, world_size=1)
    resumed.setup()
    _same_view_order(order_at_checkpoint, resumed.pipeline.datamanager)

    model = resumed.pipeline.model
    optimizers = resumed.optimizers.optimizers
    assert resumed._start_step == SAVED_AT and model.step == SAVED_AT - 1, "the checkpoint's step, not 30000"
    assert model.num_points == saved_count
    for name in GAUSSIAN_TENSORS:
        param = optimizers[name].param_groups[0]["params"][0]
        assert param is model.gauss_params[name], f"the {name} optimiser holds a tensor the model does not render"
        assert optimizers[name].state[param]["exp_avg"].shape == param.shape
    strategy_state = [v for v in model.strategy_state.values() if isinstance(v, torch.Tensor)]
    assert strategy_state and all(v.shape[0] == saved_count for v in strategy_state)

    # The rest of the uninterrupted run, then the same steps resumed, from the same random state.
    _seed(1)
    run_steps(whole, range(SAVED_AT, STEPS))
    _seed(1)
    loaded: Dict[str, torch.Tensor] = {name: model.gauss_params[name].detach().clone() for name in GAUSSIAN_TENSORS}
    run_steps(resumed, [SAVED_AT])  # no refinement at this step: the count stays
    for name in GAUSSIAN_TENSORS:
        after = model.gauss_params[name].detach()
        assert after.shape == loaded[name].shape
        assert not torch.equal(after, loaded[name]), f"{name} did not change after resuming"
    run_steps(resumed, range(SAVED_AT + 1, STEPS))  # densifies at 16

    assert model.step == STEPS - 1 and model.num_points != saved_count
    whole_miou, resumed_miou = _test_miou(whole.pipeline), _test_miou(resumed.pipeline)
    difference = (_test_logits(whole.pipeline) - _test_logits(resumed.pipeline)).abs().max()
    print(f"test mIoU: uninterrupted {whole_miou:.4f}, resumed {resumed_miou:.4f}; logits differ by {difference:.2e}")
    assert resumed_miou == pytest.approx(whole_miou, abs=0.01)
    # Stronger than the mIoU of a 20-step CPU run: with the same data order and seeds the resumed run
    # follows the uninterrupted one (densification included) up to float rounding.
    assert model.num_points == whole.pipeline.model.num_points
    assert difference < 1e-3


# -- a real ns-train process, killed and resumed ----------------------------------------------------
def _ns_train(scene: Path, output_dir: Path, timestamp: str, *args: str) -> Tuple[List[str], Path]:
    """``ns-train semsplat`` on the CPU (a small, non-densifying run), as a ``console_scripts`` command."""
    command = [
        "ns-train",
        "semsplat",
        "--data",
        str(scene),
        "--output-dir",
        str(output_dir),
        "--timestamp",
        timestamp,
        "--vis",
        "tensorboard",
        "--viewer.quit-on-train-completion",
        "True",
        "--machine.device-type",
        "cpu",
        "--pipeline.datamanager.auto-pseudo-labels",
        "off",
        "--steps-per-eval-image",
        "100000",
        "--pipeline.model.num-random",
        "300",
        "--pipeline.model.num-downscales",
        "0",
        "--pipeline.model.warmup-length",
        "100000",  # no densification: the count stays, so tensors compare element-wise
        "--pipeline.model.sh-degree-interval",
        "2",  # features_rest is trained from step 2 on
        *args,
    ]
    return command, output_dir


def _checkpoints(run_dir: Path) -> List[Path]:
    return sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))


def _gaussians(checkpoint: Path) -> Dict[str, torch.Tensor]:
    pipeline = torch.load(checkpoint, map_location="cpu")["pipeline"]
    return {name: pipeline[f"_model.gauss_params.{name}"] for name in GAUSSIAN_TENSORS}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_between_saves(pid_file: Path, run_dir: Path, min_step: int, timeout: float = 240.0) -> Path:
    """SIGKILLs the process whose id ``pid_file`` holds once it saved a checkpoint of step >= ``min_step``; returns
    that checkpoint.

    The process is stopped (SIGSTOP) first and killed only while its newest checkpoint is complete, so the
    kill never lands in the middle of ``torch.save`` (nerfstudio writes checkpoints in place).
    """
    deadline = time.monotonic() + timeout
    while not pid_file.exists():
        assert time.monotonic() < deadline, f"ns-train did not start within {timeout} s"
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    while time.monotonic() < deadline:
        assert _running(pid), "ns-train exited early"
        saved = _checkpoints(run_dir)
        if saved and int(saved[-1].stem.split("-")[1]) >= min_step:
            os.kill(pid, signal.SIGSTOP)
            saved = _checkpoints(run_dir)
            try:
                torch.load(saved[-1], map_location="cpu")
            except Exception:  # caught mid-write: let it finish and look again
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.2)
                continue
            os.kill(pid, signal.SIGKILL)
            return saved[-1]
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"no checkpoint of step >= {min_step} within {timeout} s")


@pytest.mark.slow
def test_killed_ns_train_resumes_from_its_last_checkpoint(tmp_path, demo_town, console_scripts):
    scene = demo_town(**SCENE)
    experiment = tmp_path / scene.name / "semsplat"
    logs = tmp_path / "logs"
    # The killed run's newest complete checkpoint, or what stopped the watcher.
    killed: Dict[str, Any] = {}

    def kill() -> None:
        try:
            killed["last"] = _kill_between_saves(logs / "killed.pid", experiment / "killed", min_step=2)
        except BaseException as error:  # raised again in the test, once ns-train has ended
            killed["error"] = error

    watcher = threading.Thread(target=kill, daemon=True)
    watcher.start()
    # ns-train started once the killed one has ended, from the checkpoint folder of the killed run
    done = console_scripts(
        {
            "killed": _ns_train(scene, tmp_path, "killed", "--steps-per-save", "2", "--max-num-iterations", "100000"),
            "resumed": _ns_train(
                scene,
                tmp_path,
                "resumed",
                "--load-dir",
                str(experiment / "killed" / "nerfstudio_models"),
                "--max-num-iterations",
                "3",
            ),
        },
        None,
        logs,
        timeout=300,
        after={"resumed": "killed"},
    )
    watcher.join()
    if "error" in killed:
        raise killed["error"]
    last: Path = killed["last"]
    assert done["killed"].returncode == -signal.SIGKILL, done["killed"].stderr[-3000:]
    last_step = int(last.stem.split("-")[1])

    output = done["resumed"].stdout + done["resumed"].stderr
    assert done["resumed"].returncode == 0, output[-3000:]
    assert "Done loading Nerfstudio checkpoint" in output and last.name in output.replace("\n", "")
    final = _checkpoints(experiment / "resumed")
    assert [path.name for path in final] == [f"step-{last_step + 3:09d}.ckpt"], "trained 3 more steps"
    before, after = _gaussians(last), _gaussians(final[-1])
    for name in GAUSSIAN_TENSORS:
        assert after[name].shape == before[name].shape
        assert not torch.equal(after[name], before[name]), f"{name} did not change after resuming"
