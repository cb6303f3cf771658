"""Pseudo labels: depth-tested reprojection, boundary masks B, the SAM2 backend and the CLI, on a tiny town."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from semsplat_ns.data import irt_io
from semsplat_ns.geometry.depth import DepthError, PointsDepthSettings, depth_from_points
from semsplat_ns.geometry.projection import backproject_depth, project_points
from semsplat_ns.geometry.visibility import ReferenceView, ReprojectSettings, boundary_mask, reproject_from_references
from semsplat_ns.pseudo.pipeline import PseudoLabelArgs, run
from semsplat_ns.pseudo.sam2 import Sam2CheckpointError, grow_boundary_to_masks
from semsplat_ns.scripts.pseudo_labels import main
from tests.pseudo.conftest import RES, SEED, VIEWS


@pytest.fixture(scope="module")
def base(town_with_depth):
    """A tiny generated scene, plus exact z-depth of every training view in a folder beside it."""
    return town_with_depth


@pytest.fixture(scope="module")
def scene96(demo_town):
    """The same town at 96 pixels: enough SIFT features to triangulate points for --depth points."""
    return demo_town(n_views=VIEWS, resolution=96, n_labelled=3, seed=SEED, writable=True)


def _copy(base_scene: Path, tmp_path: Path) -> Path:
    scene = tmp_path / "scene"
    shutil.copytree(base_scene, scene)
    return scene


def _targets(scene: Path):
    files = irt_io.find_split_stems(scene / "train")
    return [s for s, label in zip(files.stems, files.label_paths) if label is None]


def _tree_digest(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _check_outputs(scene: Path, num_classes: int, res: int = RES) -> None:
    for stem in _targets(scene):
        pseudo = irt_io.read_pseudo_label(scene / "train" / "pseudo" / f"{stem}.png")  # [H, W]
        boundary = np.asarray(irt_io.read_boundary_mask(scene / "train" / "boundary" / f"{stem}.png"))  # [H, W]
        assert pseudo.shape == boundary.shape == (res, res)
        assert np.all((pseudo < num_classes) | (pseudo == 255))
        assert boundary.dtype == bool
    leftovers = [p for p in scene.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def _view(scene: Path, depth_dir: Path, stem: str, labels: bool = True) -> ReferenceView:
    train = scene / "train"
    depth = np.load(depth_dir / f"{stem}.npy")
    depth[~np.isfinite(depth)] = 0
    label_path = train / "rgb" / f"{stem}.png"
    return ReferenceView(
        depth=torch.from_numpy(depth),
        K=torch.from_numpy(irt_io.read_intrinsics(train / "intrinsics" / f"{stem}.txt")),
        c2w=torch.from_numpy(irt_io.read_pose(train / "pose" / f"{stem}.txt")),
        labels=torch.from_numpy(irt_io.read_label(label_path, None, None)) if labels and label_path.exists() else None,
        photo=torch.from_numpy(irt_io.read_photo(next((train / "color").glob(f"{stem}.*")))),
    )


def test_projection_round_trip_and_self_reprojection(base):
    """A labelled view reprojected onto itself lands on its own pixels and carries its own labels."""
    scene, depth_dir = base
    stem = next((scene / "train" / "rgb").glob("*.png")).stem
    view = _view(scene, depth_dir, stem)
    points = backproject_depth(view.depth, view.K, view.c2w)  # [H, W, 3]
    uv, z = project_points(points, view.K, view.c2w)  # [H, W, 2], [H, W]
    known = view.depth > 0
    centres = torch.stack(torch.meshgrid(torch.arange(RES) + 0.5, torch.arange(RES) + 0.5, indexing="xy"), -1)
    assert torch.allclose(uv[known], centres[known].double(), atol=1e-6)
    assert torch.allclose(z[known], view.depth[known].double(), rtol=1e-5)
    exact = ReprojectSettings(depth_tolerance=1e-4, label_uncertainty=0.0, label_margin=0)
    seen, carried = reproject_from_references(view.depth, view.K, view.c2w, [view], 20, exact, view.photo)
    assert carried is not None and view.labels is not None
    assert torch.equal(seen, known)
    assert torch.equal(carried[known], view.labels[known])
    assert (carried[~known] == 255).all()


def test_reproject_with_exact_depth_is_accurate_and_b_is_consistent(base, tmp_path):
    scene, depth_dir = _copy(base[0], tmp_path), base[1]
    # Colour tolerance 5 (the default was 5 when the coverage bound below was set; at 3 exact depth covers 0.149).
    record = run(
        PseudoLabelArgs(data=scene, backend="reproject", depth_dir=depth_dir, boundary="unseen", color_tolerance=5.0)
    )
    assert record["counts"]["written"] == len(_targets(scene)) == 11
    _check_outputs(scene, 20)
    correct = labelled = total = 0
    train = scene / "train"
    references = [_view(scene, depth_dir, p.stem) for p in sorted((train / "rgb").glob("*.png"))]
    for stem in _targets(scene):
        pseudo = irt_io.read_pseudo_label(train / "pseudo" / f"{stem}.png")
        boundary = irt_io.read_boundary_mask(train / "boundary" / f"{stem}.png")
        truth = irt_io.read_label(scene / "gt_all" / f"{stem}.png", None, None)
        correct += int(((pseudo == truth) & (pseudo != 255)).sum())
        labelled += int((pseudo != 255).sum())
        total += pseudo.size
        # Labels are carried only from pixels a labelled view sees, i.e. outside B.
        assert not (boundary & (pseudo != 255)).any()
        # B from the CLI is B recomputed from the same inputs, and pixels without depth (sky) are in B.
        target = _view(scene, depth_dir, stem, labels=False)
        settings = ReprojectSettings(color_tolerance=5.0)
        expected = boundary_mask(target.depth, target.K, target.c2w, references, settings, target.photo)
        assert np.array_equal(boundary, expected.numpy())
        assert boundary[target.depth.numpy() == 0].all()
        # Independent check of "outside B = seen": every such pixel lands inside some labelled view on a
        # pixel of about the same depth.
        points = backproject_depth(target.depth, target.K, target.c2w)[torch.from_numpy(~boundary)]  # [M, 3]
        seen_somewhere = torch.zeros(points.shape[0], dtype=torch.bool)
        for ref in references:
            uv, z = project_points(points, ref.K, ref.c2w)
            col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (z > 0) & (col >= 0) & (col < RES) & (row >= 0) & (row < RES)
            there = ref.depth[row.clamp(0, RES - 1), col.clamp(0, RES - 1)].double()
            seen_somewhere |= inside & ((z - there).abs() <= 0.03 * there)
        assert seen_somewhere.all()
    accuracy, coverage = correct / labelled, labelled / total
    assert accuracy >= 0.95, f"pseudo-label accuracy {accuracy:.3f} with exact depth"
    assert coverage >= 0.2, f"pseudo-label coverage {coverage:.3f} with exact depth"
    meta = json.loads((train / "pseudo" / "meta.json").read_text())
    assert meta["backend"] == "reproject" and meta["boundary"] == "unseen" and meta["depth"] == "dir"
    assert 0.0 < meta["boundary_share"] < 1.0
    assert abs(meta["coverage"] - coverage) < 1e-6


def test_report_and_reproject_default_boundary_all(base, tmp_path):
    scene, depth_dir = _copy(base[0], tmp_path), base[1]
    # Colour tolerance 5, as in the test above (its coverage bound was set under that default).
    args = PseudoLabelArgs(
        data=scene, backend="reproject", depth_dir=depth_dir, report=scene / "gt_all", color_tolerance=5.0
    )
    record = run(args)
    assert record["boundary"] == "all"
    for stem in _targets(scene):
        assert irt_io.read_boundary_mask(scene / "train" / "boundary" / f"{stem}.png").all()
    report = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())["report"]
    assert report["views"] == 11
    assert report["accuracy"] >= 0.95
    assert 0.2 <= report["coverage"] <= 1.0
    # With B everywhere, the figures inside B are the overall ones.
    assert report["accuracy_in_boundary"] == pytest.approx(report["accuracy"])


def test_depth_from_points_is_exact_on_a_plane_and_leaves_depth_edges_unknown():
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]], dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=generator, dtype=torch.float64) * 4.0 - 2.0  # [P, 2]
    # A tilted plane z = 2 + 0.3 x: inverse depth is affine in the image, so the mesh is exact.
    plane = torch.cat([xy, (2.0 + 0.3 * xy[:, :1])], dim=1)  # [P, 3]
    depth = depth_from_points(plane, K, c2w, 64, 64)  # [H, W]
    known = depth > 0
    assert known.float().mean() > 0.9
    rays = backproject_depth(torch.ones(64, 64), K, c2w)  # [H, W, 3] at z = 1
    truth = 2.0 / (1.0 - 0.3 * rays[..., 0])  # z where the ray meets the plane
    assert torch.allclose(depth[known].double(), truth[known], rtol=1e-4)
    # Two fronto-parallel planes (left half near, right half far): nothing in between is invented.
    near = torch.cat([xy[xy[:, 0] < 0] * 2.0, torch.full((int((xy[:, 0] < 0).sum()), 1), 2.0, dtype=torch.float64)], 1)
    far = torch.cat([xy[xy[:, 0] >= 0] * 4.0, torch.full((int((xy[:, 0] >= 0).sum()), 1), 4.0, dtype=torch.float64)], 1)
    step = depth_from_points(torch.cat([near, far]), K, c2w, 64, 64, PointsDepthSettings(max_spread=0.1))
    values = step[step > 0]
    assert ((values - 2.0).abs() < 1e-3).sum() > 500 and ((values - 4.0).abs() < 1e-3).sum() > 500
    assert (((values - 2.0).abs() < 1e-3) | ((values - 4.0).abs() < 1e-3)).all()


def test_cli_with_points_depth_writes_resumes_and_overwrites(scene96, tmp_path, monkeypatch):
    scene = _copy(scene96, tmp_path)
    labels_before = _tree_digest(scene / "train" / "rgb")
    argv = ["semsplat-pseudo-labels", "--data", str(scene), "--backend", "reproject", "--boundary", "unseen"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    targets = _targets(scene)
    _check_outputs(scene, 20, 96)
    assert (scene / "sparse" / "points3D.ply").is_file()
    meta = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())
    assert meta["depth"] == "points" and meta["counts"]["written"] == len(targets)
    assert set(meta["views"]) == set(targets)
    assert {"points", "depth", "reproject", "write", "total"} <= set(meta["times_s"])  # points: triangulated
    boundaries = [irt_io.read_boundary_mask(scene / "train" / "boundary" / f"{s}.png") for s in targets]
    assert any(b.any() for b in boundaries) and any((~b).any() for b in boundaries)
    stamps = {p: p.stat().st_mtime_ns for p in (scene / "train").glob("[pb]*/*.png")}

    main()  # resume: everything exists
    meta = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())
    assert meta["counts"]["written"] == 0 and meta["counts"]["skipped"] == len(targets)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert set(meta["views"]) == set(targets)

    (scene / "train" / "pseudo" / f"{targets[0]}.png").unlink()  # a half-finished run
    main()
    meta = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())
    assert meta["counts"]["written"] == 1 and meta["counts"]["skipped"] == len(targets) - 1

    monkeypatch.setattr(sys, "argv", argv + ["--overwrite"])
    main()
    meta = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())
    assert meta["counts"]["written"] == len(targets) and meta["counts"]["skipped"] == 0
    assert all(p.stat().st_mtime_ns != stamps[p] for p in stamps if p.exists())
    _check_outputs(scene, 20, 96)
    assert _tree_digest(scene / "train" / "rgb") == labels_before


def test_depth_from_points_in_worker_processes_equals_one_process(scene96):
    from semsplat_ns.pseudo.depths import compute_depths
    from semsplat_ns.pseudo.scene import read_scene

    scene = read_scene(scene96)
    views = sorted(scene.targets)[:9]  # three tasks of VIEWS_PER_DEPTH_TASK views, the last one short
    alone = compute_depths(scene, views, "points", depth_workers=1)
    workers = compute_depths(scene, views, "points", depth_workers=2)
    assert list(workers) == views == list(alone)
    assert all(torch.equal(workers[i], alone[i]) for i in views)
    assert all(alone[i].shape == (96, 96) and (alone[i] > 0).any() for i in views)


def test_sam2_backend_with_random_weights(base, tmp_path):
    scene, depth_dir = _copy(base[0], tmp_path), base[1]
    labels_before = _tree_digest(scene / "train" / "rgb")
    args = PseudoLabelArgs(
        data=scene,
        backend="sam2",
        depth_dir=depth_dir,
        sam2_checkpoint="none",
        sam2_image_size=128,
        sam2_points_per_side=4,
        sam2_pred_iou_thresh=0.0,
        sam2_stability_thresh=0.0,
        sam2_min_class_share=0.0,
    )
    record = run(args)
    counts = record["counts"]
    assert counts["written"] == len(_targets(scene)) == 11
    assert counts["sam2_masks_kept"] >= 1
    assert counts["sam2_frames_propagated"] == counts["train_views"] == 14  # forward and backward: every view
    assert len(counts["sam2_prompt_views"]) == 1
    _check_outputs(scene, 20)
    assert _tree_digest(scene / "train" / "rgb") == labels_before
    references = [_view(scene, depth_dir, p.stem) for p in sorted((scene / "train" / "rgb").glob("*.png"))]
    for stem in _targets(scene):
        boundary = irt_io.read_boundary_mask(scene / "train" / "boundary" / f"{stem}.png")
        pseudo = irt_io.read_pseudo_label(scene / "train" / "pseudo" / f"{stem}.png")
        target = _view(scene, depth_dir, stem, labels=False)
        unseen = boundary_mask(target.depth, target.K, target.c2w, references, ReprojectSettings(), target.photo)
        unseen = unseen.numpy()
        assert (boundary | ~unseen).all(), "B may only grow from the reprojection's B"
        if counts["sam2_masks_kept"] == 1 and (unseen & (pseudo != 255)).any():
            # The one tracked mask touches B here, so all of it joins B (paper).
            assert boundary[pseudo != 255].all()
    meta = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())
    assert meta["backend"] == "sam2" and meta["parameters"]["sam2_checkpoint"] == "none"
    assert {"sam2_masks", "sam2_propagation"} <= set(meta["times_s"])


def test_grow_boundary_to_whole_masks():
    boundary = np.zeros((4, 6), dtype=bool)
    boundary[0, 0] = True
    objects = np.full((4, 6), -1, dtype=np.int32)
    objects[:2, :3] = 0  # touches B at (0, 0)
    objects[2:, 3:] = 1  # does not
    grown = grow_boundary_to_masks(boundary, objects)
    expected = boundary.copy()
    expected[:2, :3] = True
    assert np.array_equal(grown, expected)


def test_missing_sam2_checkpoint_is_one_clear_error(base, tmp_path, monkeypatch, capsys):
    scene = _copy(base[0], tmp_path)
    missing = tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(Sam2CheckpointError) as caught:
        run(PseudoLabelArgs(data=scene, backend="sam2", sam2_checkpoint=str(missing)))
    message = str(caught.value)
    assert str(missing) in message and "sam2.1_hiera_tiny.pt" in message and "--sam2-checkpoint" in message
    assert isinstance(caught.value, ValueError)
    assert not (scene / "train" / "pseudo").exists()
    monkeypatch.setattr(
        sys, "argv", ["semsplat-pseudo-labels", "--data", str(scene), "--sam2-checkpoint", str(missing)]
    )
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert "sam2.1_hiera_tiny.pt" in captured.out + captured.err
    # A file that is not a SAM2 checkpoint is refused before any long step, too.
    missing.parent.mkdir()
    missing.write_bytes(b"not a checkpoint")
    with pytest.raises(Sam2CheckpointError, match=f"{missing}: not a readable SAM2 checkpoint"):
        run(PseudoLabelArgs(data=scene, backend="sam2", sam2_checkpoint=str(missing)))
    torch.save({"weights": torch.zeros(1)}, missing)
    with pytest.raises(Sam2CheckpointError, match="no 'model' entry"):
        run(PseudoLabelArgs(data=scene, backend="sam2", sam2_checkpoint=str(missing)))
    assert not (scene / "train" / "pseudo").exists()


def test_bad_depth_files_name_the_file(base, tmp_path):
    scene, depth_dir = _copy(base[0], tmp_path), base[1]
    bad_dir = tmp_path / "depth"
    shutil.copytree(depth_dir, bad_dir)
    victim = sorted(bad_dir.glob("*.npy"))[1]
    np.save(victim, np.ones((RES, RES + 1), dtype=np.float32))
    with pytest.raises(DepthError, match=victim.name + ".*shape"):
        run(PseudoLabelArgs(data=scene, backend="reproject", depth_dir=bad_dir))
    victim.unlink()
    with pytest.raises(DepthError, match=victim.name + ".*missing"):
        run(PseudoLabelArgs(data=scene, backend="reproject", depth_dir=bad_dir))
    assert not any((scene / "train").glob("pseudo/*.png"))


def _train_tiny_model(scene: Path, out: Path, steps: int, scale_factor: float) -> Path:
    """Trains semsplat for a few CPU steps on ``scene`` and returns the run's config.yml."""
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig
    from tests.cpu_training import cpu_trainer_config, train

    config = cpu_trainer_config(scene, out, steps, "depth")
    datamanager_cfg, model_cfg = config.pipeline.datamanager, config.pipeline.model
    assert isinstance(datamanager_cfg, SemSplatDataManagerConfig) and isinstance(model_cfg, SemSplatModelConfig)
    # A scaled dataparser frame, so that depth must be converted back to scene units.
    datamanager_cfg.dataparser.scale_factor = scale_factor
    model_cfg.warmup_length = 20
    model_cfg.refine_every = 10
    model_cfg.stop_split_at = steps // 2
    model_cfg.resolution_schedule = 1000
    model_cfg.num_downscales = 0
    model_cfg.num_random = 1500
    # Only the geometry matters here: no aggregation losses (their kNN work dominates a CPU step).
    model_cfg.agg2d_loss_weight = 0.0
    model_cfg.agg3d_loss_weight = 0.0
    train(config, steps)
    return config.get_base_dir() / "config.yml"


@pytest.mark.slow
def test_depth_from_a_trained_model_is_in_scene_units(base, tmp_path):
    scene, depth_dir = _copy(base[0], tmp_path), base[1]
    # 100 steps (densifying until 50): median depth ratio ~0.70-0.73 on the 2-core box, 0.76 after 150 steps, which
    # take twice as long; a missing conversion from the x2.5 frame would give ~1.8, an inverted one ~0.3 or less.
    config_path = _train_tiny_model(scene, tmp_path / "outputs", steps=100, scale_factor=2.5)
    from semsplat_ns.geometry.depth import render_depths_from_config

    stems = _targets(scene)[:4]
    depths = render_depths_from_config(config_path, stems, [(RES, RES)] * len(stems))
    ratios = []
    for stem in stems:
        exact = torch.from_numpy(np.load(depth_dir / f"{stem}.npy"))  # [H, W]
        both = (depths[stem] > 0) & torch.isfinite(exact)
        assert both.float().mean() > 0.5
        ratios.append(depths[stem][both] / exact[both])
    ratio = torch.cat(ratios)
    # Scene units: a missing or inverted conversion from the x2.5 dataparser frame would give ~2 or ~0.1.
    # (100 CPU steps from random Gaussians leave floaters in front, so the depth is only roughly right.)
    assert 0.5 < float(ratio.median()) < 1.5
    record = run(PseudoLabelArgs(data=scene, backend="reproject", depth_config=config_path, boundary="unseen"))
    assert record["depth"] == "config" and record["counts"]["written"] == 11
    _check_outputs(scene, 20)


def test_reused_reference_views_give_fresh_results_and_threads_write_and_read_the_same_files(base, tmp_path):
    """Reprojection keeps what each labelled view derives (depth, box colours, uniform labels per margin) across tested
    views: the same results as fresh reference views, per margin; writing and reading several views at once gives
    the files and photos of one at a time; a failed write is raised."""
    from semsplat_ns.pseudo.pipeline import _write_view, write_views
    from semsplat_ns.pseudo.scene import read_photo, read_photos, read_scene

    scene_dir, depth_dir = base
    stems = [p.stem for p in sorted((scene_dir / "train" / "rgb").glob("*.png"))]
    kept = [_view(scene_dir, depth_dir, stem) for stem in stems]
    results = {}
    for margin in (1, 0, 1):
        settings = ReprojectSettings(label_margin=margin)
        for stem in _targets(scene_dir)[:3]:
            target = _view(scene_dir, depth_dir, stem, labels=False)
            fresh = [_view(scene_dir, depth_dir, s) for s in stems]
            args = (target.depth, target.K, target.c2w)
            reused = reproject_from_references(*args, kept, 20, settings, target.photo)
            alone = reproject_from_references(*args, fresh, 20, settings, target.photo)
            assert reused[1] is not None and alone[1] is not None
            assert torch.equal(reused[0], alone[0]) and torch.equal(reused[1], alone[1])
            results[(margin, stem)] = reused[1]
    assert any(not torch.equal(results[(0, s)], results[(1, s)]) for s in _targets(scene_dir)[:3])  # margins differ

    scene = read_scene(scene_dir)
    views = list(range(len(scene.stems)))
    photos = read_photos(scene, views)
    assert all(np.array_equal(photos[i], read_photo(scene, i)) for i in views)
    generator = np.random.default_rng(0)
    names = ["a", "b", "c"]
    pseudo = [generator.integers(0, 256, (9, 7), dtype=np.uint8) for _ in names]
    boundary = [generator.random((9, 7)) > 0.5 for _ in names]
    confidence = [generator.random((9, 7)).astype(np.float32) for _ in names]
    write_views(tmp_path / "threads", names, pseudo, boundary, confidence)
    for k, name in enumerate(names):
        _write_view(tmp_path / "alone", name, pseudo[k], boundary[k], confidence[k])
    assert (
        _tree_digest(tmp_path / "threads") == _tree_digest(tmp_path / "alone")
        and len(_tree_digest(tmp_path / "alone")) == 9
    )
    (tmp_path / "blocked").write_text("a file where the store root should be")
    with pytest.raises(OSError):
        write_views(tmp_path / "blocked", names, pseudo, boundary, None)


def test_depth_workers_follow_the_usable_cores_not_torchs_threads(monkeypatch):
    import os

    from semsplat_ns.pseudo import depths

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert depths.usable_cores() == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert depths.usable_cores() == 16
    # a run given a share of the machine (OMP_NUM_THREADS, as semsplat-batch gives each scene) keeps to it
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert depths.usable_cores() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert depths.usable_cores() == 16
    monkeypatch.setenv("OMP_NUM_THREADS", "auto")
    assert depths.usable_cores() == 16
    # 93 views on 16 workers: 2 per task (47 tasks, three rounds); on 2 workers the most, 4; never 0.
    assert (
        depths.views_per_task(93, 16) == 2 and depths.views_per_task(93, 2) == 4 and depths.views_per_task(1, 16) == 1
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="reprojection on a GPU needs CUDA")
def test_reprojection_on_the_gpu_matches_the_cpu(base):
    """ns-train reprojects on the GPU: the same visibility and carried classes as on the CPU, but for float rounding
    at a tolerance's edge (here: at most 0.1 % of the pixels)."""
    scene_dir, depth_dir = base
    stems = [p.stem for p in sorted((scene_dir / "train" / "rgb").glob("*.png"))]
    cuda = torch.device("cuda")

    def on(view: ReferenceView, device: torch.device) -> ReferenceView:
        labels = view.labels.to(device) if view.labels is not None else None
        photo = view.photo.to(device) if view.photo is not None else None
        return ReferenceView(view.depth.to(device), view.K, view.c2w, labels, photo)

    references = [_view(scene_dir, depth_dir, stem) for stem in stems]
    for stem in _targets(scene_dir)[:3]:
        target = _view(scene_dir, depth_dir, stem, labels=False)
        seen, carried = reproject_from_references(
            target.depth, target.K, target.c2w, references, 20, ReprojectSettings(), target.photo
        )
        gpu = on(target, cuda)
        seen_gpu, carried_gpu = reproject_from_references(
            gpu.depth, gpu.K, gpu.c2w, [on(view, cuda) for view in references], 20, ReprojectSettings(), gpu.photo
        )
        assert carried is not None and carried_gpu is not None and carried_gpu.device.type == "cuda"
        assert (seen_gpu.cpu() != seen).float().mean() <= 1e-3
        assert (carried_gpu.cpu() != carried).float().mean() <= 1e-3
        assert (carried != 255).any()
