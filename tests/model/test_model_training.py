"""The semsplat model trained for real on CPU: losses, densification, checkpoints, outputs."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from PIL import Image

from semsplat_ns.model.semsplat_model import SemSplatModelConfig
from tests.cpu_training import cpu_trainer_config, run_steps

STEPS = 100


def _write_pseudo_labels(scene: Path, gt_dir: Path) -> None:
    """Stand-in pseudo labels for the training test: full labels with a hole, boundary = left half."""
    labelled = {p.stem for p in (scene / "train" / "rgb").glob("*.png")}
    (scene / "train" / "pseudo").mkdir(exist_ok=True)
    (scene / "train" / "boundary").mkdir(exist_ok=True)
    for photo in sorted((scene / "train" / "color").iterdir()):
        if photo.stem in labelled:
            continue
        label = np.asarray(Image.open(gt_dir / f"{photo.stem}.png"))
        label = label[..., 0] if label.ndim == 3 else label
        pseudo = label.copy()
        pseudo[: label.shape[0] // 4] = 255
        boundary = np.zeros_like(label)
        boundary[:, : label.shape[1] // 2] = 255
        Image.fromarray(pseudo).save(scene / "train" / "pseudo" / f"{photo.stem}.png")
        Image.fromarray(boundary).save(scene / "train" / "boundary" / f"{photo.stem}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_town):
    root = tmp_path_factory.mktemp("train")
    scene = demo_town(n_views=20, resolution=48, n_labelled=2, seed=3, writable=True)
    _write_pseudo_labels(scene, scene / "gt_all")
    config = cpu_trainer_config(scene, root / "outputs", STEPS, "test")
    model_cfg = config.pipeline.model
    assert isinstance(model_cfg, SemSplatModelConfig)
    model_cfg.warmup_length = 20
    model_cfg.refine_every = 10
    model_cfg.reset_alpha_every = 1000
    model_cfg.stop_split_at = 80
    model_cfg.densify_grad_thresh = 0.0002
    model_cfg.resolution_schedule = 40
    model_cfg.num_downscales = 1
    model_cfg.agg2d_num_samples = 256
    model_cfg.agg3d_num_samples = 256
    model_cfg.agg3d_knn_refresh_every = 30
    model_cfg.agg3d_pool_factor = 2
    model_cfg.num_random = 3000
    counts, history = [], []

    def record(step, loss_dict):
        history.append({k: float(v) for k, v in loss_dict.items()})
        counts.append(model.num_points)

    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    counts.append(model.num_points)
    run_steps(trainer, range(STEPS), record)
    trainer.save_checkpoint(STEPS - 1)
    return dict(config=config, trainer=trainer, history=history, counts=counts, scene=scene)


def test_every_loss_is_active_finite_and_falling(trained):
    history = trained["history"]
    for name in ("main_loss", "semantic_loss", "pseudo_loss", "agg2d_loss", "agg3d_loss"):
        values = [h[name] for h in history if name in h]
        assert values, f"{name} never computed"
        assert all(math.isfinite(v) for v in values), f"{name} not finite"
        assert any(v > 0 for v in values), f"{name} always zero"
    total = [sum(h.values()) for h in history]
    assert np.mean(total[-15:]) < np.mean(total[:15])
    semantic = [h["semantic_loss"] for h in history if h["semantic_loss"] > 0]
    assert np.mean(semantic[-3:]) < np.mean(semantic[:3])


def test_preset_steps_with_fused_adam_and_plain_psnr(trained):
    trainer = trained["trainer"]
    optimizers = trainer.optimizers.optimizers
    assert {"means", "semantic_features", "transfer_head"} <= set(optimizers)
    assert all(optimizer.defaults["fused"] for optimizer in optimizers.values())
    # Densification replaced the Gaussian tensors: the optimisers hold the model's current ones.
    model = trainer.pipeline.model
    assert optimizers["semantic_features"].param_groups[0]["params"][0] is model.semantic_features
    assert not isinstance(model.psnr, torch.nn.Module)


def test_densification_changes_count_and_carries_features(trained):
    counts = trained["counts"]
    model = trained["trainer"].pipeline.model
    assert len(set(counts)) > 1, "densification never changed the Gaussian count"
    assert model.semantic_features.shape == (model.num_points, model.config.semantic_dim)
    optimizer = trained["trainer"].optimizers.optimizers["semantic_features"]
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert state["exp_avg"].shape[0] == model.num_points


def test_checkpoint_round_trip_gives_identical_renders(trained):
    from nerfstudio.utils.eval_utils import eval_setup

    model = trained["trainer"].pipeline.model
    model.eval()
    camera = trained["trainer"].pipeline.datamanager.eval_dataset.cameras[0:1]
    before = model.get_outputs_for_camera(camera)
    logits_before = before["semantic_logits"].clone()
    _, pipeline, checkpoint, step = eval_setup(trained["config"].get_base_dir() / "config.yml", test_mode="test")
    after = pipeline.model.get_outputs_for_camera(camera)
    assert step == STEPS - 1 and checkpoint.exists()
    assert pipeline.model.num_points == model.num_points
    for key in ("rgb", "depth", "semantics_colormap", "semantic_confidence"):
        assert torch.allclose(before[key], after[key], atol=1e-6), key
    assert torch.allclose(logits_before, after["semantic_logits"], atol=1e-6)
    model.train()


def test_viewer_outputs_have_image_shapes(trained):
    model = trained["trainer"].pipeline.model
    model.eval()
    camera = trained["trainer"].pipeline.datamanager.eval_dataset.cameras[0:1]
    outputs = model.get_outputs_for_camera(camera)
    H, W = int(camera.height), int(camera.width)
    assert outputs["semantics_colormap"].shape == (H, W, 3)
    assert outputs["semantic_confidence"].shape == (H, W, 1)
    assert outputs["semantic_features_pca"].shape == (H, W, 3)
    # no integer single-channel output (the 1.1.5 viewer cannot show it)
    for key, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.dim() == 3 and value.shape[-1] == 1:
            assert torch.is_floating_point(value), key
    conf = outputs["semantic_confidence"]
    assert torch.all(conf >= 1.0 / model.num_classes - 1e-6) and torch.all(conf <= 1.0)
    model.train()


def test_eval_metrics_include_semantics(trained):
    pipeline = trained["trainer"].pipeline
    pipeline.model.eval()
    camera, batch = pipeline.datamanager.fixed_indices_eval_dataloader[0]
    outputs = pipeline.model.get_outputs_for_camera(camera)
    metrics, images = pipeline.model.get_image_metrics_and_images(outputs, batch)
    assert 0.0 <= metrics["semantic_acc"] <= 1.0 and 0.0 <= metrics["semantic_miou"] <= 1.0
    H, W = batch["semantics"].shape
    assert images["semantics"].shape == (H, 3 * W, 3)
    pipeline.model.train()


def test_split_duplicate_prune_carry_semantic_features(trained):
    """The DefaultStrategy's own ops carry the semantic features row by row (with optimiser state)."""
    from gsplat.strategy import ops

    model = trained["trainer"].pipeline.model
    params = torch.nn.ParameterDict(
        {name: torch.nn.Parameter(value.detach().clone()) for name, value in model.gauss_params.items()}
    )
    optimizers: Dict[str, torch.optim.Optimizer] = {
        name: torch.optim.Adam([param], lr=1e-3) for name, param in params.items()
    }
    n = params["means"].shape[0]
    params["semantic_features"].data = torch.arange(n, dtype=torch.float32)[:, None].repeat(
        1, model.config.semantic_dim
    )
    state = {"grad2d": torch.zeros(n), "count": torch.zeros(n)}
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:3] = True
    ops.duplicate(params, optimizers, state, mask)
    assert params["semantic_features"].shape[0] == n + 3
    assert torch.equal(params["semantic_features"][n:, 0], torch.tensor([0.0, 1.0, 2.0]))
    parents = params["semantic_features"][:, 0].clone()
    split_mask = torch.zeros(n + 3, dtype=torch.bool)
    split_mask[5] = True
    ops.split(params, optimizers, state, split_mask)
    # the split Gaussian is replaced by two children that inherit its features
    assert params["semantic_features"].shape[0] == n + 4
    assert (params["semantic_features"][:, 0] == parents[5]).sum() == 2
    prune = torch.zeros(n + 4, dtype=torch.bool)
    prune[0] = True
    before = params["semantic_features"][1:, 0].clone()
    ops.remove(params, optimizers, state, prune)
    assert torch.equal(params["semantic_features"][:, 0], before)
    assert params["semantic_features"].shape[0] == params["means"].shape[0]


def test_semsplat_eval_cli_writes_metrics_and_pictures(trained, tmp_path):
    import json

    from semsplat_ns.scripts.eval import EvalArgs, run

    config_path = trained["config"].get_base_dir() / "config.yml"
    result = run(EvalArgs(load_config=config_path, output_dir=tmp_path / "eval"))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["miou"] == pytest.approx(result["miou"])
    assert 0.0 <= written["miou"] <= written["acc"] + 1.0
    assert written["n_views"] == len(list((trained["scene"] / "test" / "rgb").glob("*.png")))
    assert written["test_ms_per_view"] > 0 and written["test_ms_per_view_p95"] >= written["test_ms_per_view"]
    cm = np.asarray(written["confusion_matrix"])
    assert cm.sum() == written["n_pixels"]
    for name in ("confusion_matrix.png", "per_class_iou.png"):
        assert Image.open(tmp_path / "eval" / name).size[0] > 100
    panels = sorted((tmp_path / "eval" / "predictions").glob("*.png"))
    assert len(panels) == written["n_views"]
    H, W = np.asarray(Image.open(next((trained["scene"] / "test" / "rgb").glob("*.png")))).shape[:2]
    assert Image.open(panels[0]).size == (3 * W, H)


def test_semsplat_export_writes_labelled_plys(trained, tmp_path):
    from plyfile import PlyData

    from semsplat_ns.scripts.export import export_model

    pipeline = trained["trainer"].pipeline
    outputs = pipeline.datamanager.train_dataparser_outputs
    summary = export_model(pipeline.model, outputs.dataparser_transform, float(outputs.dataparser_scale), tmp_path)
    splats = PlyData.read(str(tmp_path / "gaussians.ply"))["vertex"]
    n = pipeline.model.num_points
    assert splats.count == n == summary["n_gaussians"]
    names = {p.name for p in splats.properties}
    assert {"x", "f_dc_0", "opacity", "scale_0", "rot_0", "class_id", "class_confidence"} <= names
    assert np.asarray(splats["class_id"]).max() < pipeline.model.num_classes
    cloud = PlyData.read(str(tmp_path / "semantic_points.ply"))["vertex"]
    # back in the input frame: re-applying the dataparser transform gives the training positions
    world = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1)
    transform = outputs.dataparser_transform.numpy()
    again = (world @ transform[:, :3].T + transform[:, 3]) * float(outputs.dataparser_scale)
    assert np.allclose(again, pipeline.model.means.detach().numpy(), atol=1e-4)
    colors = (pipeline.model.class_colors.numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(
        np.stack([cloud["red"], cloud["green"], cloud["blue"]], 1), colors[np.asarray(cloud["class_id"])]
    )


@pytest.mark.parametrize("grad_to_geometry", [True, False])
def test_semantic_gradients_reach_geometry_only_when_asked(trained, grad_to_geometry):
    from semsplat_ns.model.losses import semantic_cross_entropy

    pipeline = trained["trainer"].pipeline
    model = pipeline.model
    model.train()
    saved = model.config.semantic_grad_to_geometry
    model.config.semantic_grad_to_geometry = grad_to_geometry
    try:
        camera, batch = next(
            (cam, data) for cam, data in (pipeline.datamanager.next_train(0) for _ in range(40)) if "semantics" in data
        )
        model.zero_grad(set_to_none=True)
        outputs = model.get_outputs(camera)
        logits = outputs["semantic_logits"]
        labels = batch["semantics"][: logits.shape[0], : logits.shape[1]]
        semantic_cross_entropy(logits, labels).backward()
        means_grad = model.gauss_params["means"].grad
        assert model.gauss_params["semantic_features"].grad.abs().sum() > 0
        if grad_to_geometry:
            assert means_grad is not None and means_grad.abs().sum() > 0
        else:
            assert means_grad is None or means_grad.abs().sum() == 0
    finally:
        model.config.semantic_grad_to_geometry = saved
        model.zero_grad(set_to_none=True)


def test_gaussian_cap_holds_after_a_training_step(trained):
    """Runs last: lowers the cap below the current count and trains one more step."""
    trainer = trained["trainer"]
    model = trainer.pipeline.model
    model.train()
    cap = model.num_points - 25
    model.strategy.cap_max = cap  # the cap is a setting of the densification strategy
    run_steps(trainer, [STEPS])
    assert model.num_points == cap
    assert model.semantic_features.shape[0] == cap
    optimizer = trainer.optimizers.optimizers["means"]
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"].shape[0] == cap


# -- nerfstudio's own command-line tools on a semsplat checkpoint (as a user runs them) -------------
# ns-render dataset runs as the real console script; ns-render camera-path and ns-eval run their console scripts'
# entry points in this process, on the same command lines (each process start costs ~20 s of imports on the CPU
# box). The real ns-eval and ns-render processes also run on a semsplat config in tests/scripts/test_user_errors.py.
def _tool_path(tmp_path: Path) -> str:
    """PATH with this environment's console scripts first, and an ffmpeg (ns-render always checks for one)."""
    path = [str(Path(sys.executable).parent)]
    if shutil.which("ffmpeg") is None:  # imageio-ffmpeg ships one
        import imageio_ffmpeg

        (tmp_path / "ffmpeg-bin").mkdir(exist_ok=True)
        link = tmp_path / "ffmpeg-bin" / "ffmpeg"
        if not link.exists():
            link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        path.append(str(link.parent))
    return os.pathsep.join(path + [os.environ.get("PATH", "")])


def _ns_command(name: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs a nerfstudio console script of this environment, with no weights-only workaround set."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["PATH"] = _tool_path(tmp_path)
    bin_dir = Path(sys.executable).parent
    done = subprocess.run([str(bin_dir / name), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _ns_entrypoint(name: str, *args: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the entry point of nerfstudio's console script ``name`` in this process on ``name args...``: its own
    argument parsing and main, with no weights-only workaround set."""
    import importlib

    scripts = {"ns-render": "nerfstudio.scripts.render", "ns-eval": "nerfstudio.scripts.eval"}
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    monkeypatch.setenv("PATH", _tool_path(tmp_path))
    monkeypatch.setattr(sys, "argv", [name, *args])
    importlib.import_module(scripts[name]).entrypoint()


def _palette_share(image: np.ndarray, palette: np.ndarray) -> float:
    """Share of pixels whose colour is a palette colour (within 1/255 per channel)."""
    pixels = image[..., :3].reshape(-1, 1, 3).astype(np.int16)  # [P, 1, 3]
    return float((np.abs(pixels - palette[None].astype(np.int16)).max(-1) <= 1).any(-1).mean())


def _palette(trained) -> np.ndarray:
    colors = trained["trainer"].pipeline.model.class_colors  # [C, 3] in [0, 1]
    return np.round(colors.cpu().numpy() * 255).astype(np.uint8)


def test_ns_render_dataset_writes_semantic_colormaps(trained, tmp_path):
    config_path = trained["config"].get_base_dir() / "config.yml"
    _ns_command(
        "ns-render",
        "dataset",
        "--load-config",
        str(config_path),
        "--output-path",
        str(tmp_path / "r"),
        "--split",
        "test",
        "--rendered-output-names",
        "rgb",
        "semantics_colormap",
        "--image-format",
        "png",
        tmp_path=tmp_path,
    )
    n_test = len(list((trained["scene"] / "test" / "rgb").glob("*.png")))
    semantic = sorted(p for p in (tmp_path / "r").rglob("*.png") if "semantics_colormap" in p.parts)
    rgb = sorted(p for p in (tmp_path / "r").rglob("*.png") if "rgb" in p.parts)
    assert len(semantic) == n_test and len(rgb) == n_test
    palette = _palette(trained)
    for path in semantic:
        assert _palette_share(np.asarray(Image.open(path)), palette) > 0.99, path
    # The RGB render is a photo-like image, not palette colours.
    assert _palette_share(np.asarray(Image.open(rgb[0])), palette) < 0.5


def test_ns_render_camera_path_renders_semantics(trained, tmp_path, monkeypatch):
    import json

    config_path = trained["config"].get_base_dir() / "config.yml"
    cameras = trained["trainer"].pipeline.datamanager.eval_dataset.cameras
    height, width = int(cameras.height[0]), int(cameras.width[0])
    path = []
    for index in range(2):
        c2w = torch.eye(4)
        c2w[:3] = cameras.camera_to_worlds[index]
        fov = 2 * math.degrees(math.atan(0.5 * height / float(cameras.fy[index])))  # vertical, as the viewer
        path.append({"camera_to_world": c2w.flatten().tolist(), "fov": fov, "aspect": width / height})
    camera_path = {
        "camera_type": "perspective",
        "render_height": height,
        "render_width": width,
        "camera_path": path,
        "seconds": 2.0,
        "fps": 1.0,
    }
    (tmp_path / "path.json").write_text(json.dumps(camera_path))
    _ns_entrypoint(
        "ns-render",
        "camera-path",
        "--load-config",
        str(config_path),
        "--camera-path-filename",
        str(tmp_path / "path.json"),
        "--output-path",
        str(tmp_path / "frames"),
        "--output-format",
        "images",
        "--image-format",
        "png",
        "--rendered-output-names",
        "semantics_colormap",
        tmp_path=tmp_path,
        monkeypatch=monkeypatch,
    )
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert len(frames) == 2
    palette = _palette(trained)
    for frame in frames:
        image = np.asarray(Image.open(frame))
        assert image.shape[:2] == (height, width)
        assert _palette_share(image, palette) > 0.99, frame


def test_ns_eval_reports_semantic_metrics(trained, tmp_path, monkeypatch):
    import json

    config_path = trained["config"].get_base_dir() / "config.yml"
    args = ("--load-config", str(config_path), "--output-path", str(tmp_path / "eval.json"))
    _ns_entrypoint("ns-eval", *args, tmp_path=tmp_path, monkeypatch=monkeypatch)
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert 0.0 <= results["semantic_miou"] <= 1.0 and 0.0 <= results["semantic_acc"] <= 1.0
    assert results["psnr"] > 5.0


def test_class_balance_counts_labelled_pixels_and_reweights_the_loss(trained):
    from semsplat_ns.model import losses as L

    trainer = trained["trainer"]
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    for step in range(STEPS, STEPS + 50):  # the next labelled view the datamanager draws
        camera, batch = datamanager.next_train(step)
        if "semantics" in batch:
            break
    else:
        raise AssertionError("no labelled view drawn in 50 steps")
    model.train()
    model.labelled_class_pixels.zero_()
    try:
        outputs = model.get_outputs(camera)  # a training render (splatfacto keeps its 2D means' gradients)
        plain = model.get_loss_dict(outputs, batch)["semantic_loss"].detach()
        assert torch.equal(model.labelled_class_pixels, torch.zeros(model.num_classes)), "counted while off"
        model.config.class_balance = "inverse-sqrt-frequency"
        balanced = model.get_loss_dict(outputs, batch)["semantic_loss"].detach()
        labels = L.downscale_labels(batch["semantics"], *outputs["semantic_logits"].shape[:2]).long()  # [h, w]
        expected = torch.bincount(labels[labels != L.IGNORE_INDEX], minlength=model.num_classes).float()
        assert torch.equal(model.labelled_class_pixels, expected)
        assert (expected > 0).sum() >= 2 and torch.isfinite(balanced) and not torch.isclose(balanced, plain)
    finally:
        model.config.class_balance = "none"
        model.labelled_class_pixels.zero_()
        model.zero_grad(set_to_none=True)


def test_pseudo_loss_can_leave_the_head_alone_and_defer_to_a_sure_model(trained):
    """pseudo_trains_head False: the pseudo loss's gradient reaches the features, not the head;
    pseudo_weight_by_agreement: each pseudo pixel is weighted by the model's agreement with its label."""
    import torch.nn.functional as F

    from semsplat_ns.model import losses as L

    trainer = trained["trainer"]
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    camera, batch = next(
        (cam, data) for cam, data in (datamanager.next_train(0) for _ in range(20)) if "semantics" not in data
    )
    height, width = batch["image"].shape[:2]
    pseudo = torch.randint(0, model.num_classes, (height, width), dtype=torch.uint8)  # [H, W]
    batch = {**batch, "pseudo_semantics": pseudo, "boundary_mask": torch.ones(height, width, dtype=torch.bool)}
    config = model.config
    saved = (config.pseudo_trains_head, config.pseudo_weight_by_agreement, config.pseudo_weight_by_label_support)
    model.train()

    def pseudo_gradients() -> Dict[str, float]:
        model.zero_grad(set_to_none=True)
        loss = model.get_loss_dict(model.get_outputs(camera), batch)["pseudo_loss"]
        loss.backward()
        head = sum(float(p.grad.abs().sum()) for p in model.transfer_head.parameters() if p.grad is not None)
        features = model.semantic_features.grad
        return {"head": head, "features": 0.0 if features is None else float(features.abs().sum())}

    try:
        config.pseudo_weight_by_label_support = False
        config.pseudo_weight_by_agreement = False
        config.pseudo_trains_head = True
        trains_head = pseudo_gradients()
        config.pseudo_trains_head = False
        frozen_head = pseudo_gradients()
        config.pseudo_trains_head = True
        config.pseudo_weight_by_agreement = True
        outputs = model.get_outputs(camera)
        deferring = model.get_loss_dict(outputs, batch)["pseudo_loss"].detach()
    finally:
        config.pseudo_trains_head, config.pseudo_weight_by_agreement, config.pseudo_weight_by_label_support = saved
        model.zero_grad(set_to_none=True)
    assert trains_head["head"] > 0 and trains_head["features"] > 0
    assert frozen_head["head"] == 0.0 and frozen_head["features"] > 0
    logits = outputs["semantic_logits"].detach()  # [H, W, C]
    per_pixel = F.cross_entropy(logits.reshape(-1, model.num_classes), pseudo.long().reshape(-1), reduction="none")
    agreement = L.pseudo_agreement(logits, pseudo)  # [H, W]
    assert agreement.min() < 0.99, "random pseudo labels: the model disagrees somewhere"
    expected = config.pseudo_loss_weight * (per_pixel * agreement.reshape(-1)).mean()
    assert torch.allclose(deferring, expected, rtol=1e-4)
