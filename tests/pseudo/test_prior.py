"""The prior backend (``semsplat-pseudo-labels --backend prior``) and its network, on a tiny town (CPU)."""

from __future__ import annotations

import hashlib
import json
import shutil
import typing
from dataclasses import replace
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import tyro

from semsplat_ns.data import irt_io
from semsplat_ns.data.irt_io import IGNORE_ID, IRTDataError
from semsplat_ns.model.losses import inverse_sqrt_frequency_weights
from semsplat_ns.pseudo import store
from semsplat_ns.pseudo.pipeline import BACKENDS, PseudoLabelArgs, cache_key, run
from semsplat_ns.pseudo.prior import PriorError, PriorSettings, fuse, load_prior, same_size_batches
from semsplat_ns.pseudo.unet import (
    STEP_RUNNERS,
    CropSampler,
    CudaGraphStep,
    StepRunner,
    Unet,
    UnetRecipe,
    class_pixel_counts,
    cudnn_settings,
    effective_step_runner,
    masked_cross_entropy,
    predict_batch_probabilities,
    predict_probabilities,
    train_unet,
)
from tests.pseudo.conftest import RES

# Small enough for a few seconds on a 2-core CPU. A 200-step prior is rarely 90 % sure of anything, so the
# threshold is lower than the default 0.9: the same code path, a looser cut.
THRESHOLD = 0.5


def fast(**overrides) -> PriorSettings:
    """Prior settings for a few seconds of CPU training."""
    tiny = PriorSettings(unet=UnetRecipe(steps=100, crop=32, width=8, levels=2, peak_lr=5e-3), threshold=THRESHOLD)
    return replace(tiny, **overrides)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Small CPU work runs far faster on one thread than with OpenMP threads fighting over busy cores; and the
    same seed gives the same network only with the same number of threads (the order of float sums)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _copy(scene: Path, folder: Path) -> Path:
    copy = folder / "scene"
    shutil.copytree(scene, copy)
    return copy


def _targets(scene: Path):
    files = irt_io.find_split_stems(scene / "train")
    return [s for s, label in zip(files.stems, files.label_paths) if label is None]


def _digests(scene: Path, folder: str) -> Dict[str, str]:
    files = sorted((scene / "train" / folder).glob("*.png"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _accuracy_and_coverage(scene: Path) -> Tuple[float, float, float]:
    """Accuracy where set, coverage, and the share of the most frequent true class (a constant guess)."""
    correct = labelled = total = 0
    counts = np.zeros(256, dtype=np.int64)
    for stem in _targets(scene):
        pseudo = irt_io.read_pseudo_label(scene / "train" / "pseudo" / f"{stem}.png")  # [H, W]
        truth = irt_io.read_label(scene / "gt_all" / f"{stem}.png", None, None)  # [H, W]
        judged = truth != IGNORE_ID
        correct += int(((pseudo == truth) & (pseudo != IGNORE_ID) & judged).sum())
        labelled += int(((pseudo != IGNORE_ID) & judged).sum())
        total += int(judged.sum())
        counts += np.bincount(truth[judged].ravel(), minlength=256)
    return correct / max(labelled, 1), labelled / total, counts.max() / counts.sum()


@pytest.fixture(scope="module")
def runs(town_with_depth, tmp_path_factory):
    """The same tiny town labelled by reprojection alone and by the prior (seed 0)."""
    scene, depth_dir = town_with_depth
    reprojected = _copy(scene, tmp_path_factory.mktemp("reproject"))
    run(PseudoLabelArgs(data=reprojected, backend="reproject", depth_dir=depth_dir))
    prior = _copy(scene, tmp_path_factory.mktemp("prior"))
    weights = tmp_path_factory.mktemp("weights") / "prior.pt"
    record = run(PseudoLabelArgs(data=prior, backend="prior", depth_dir=depth_dir, prior=fast(save_weights=weights)))
    return reprojected, prior, record, weights


def test_prior_writes_ids_and_confidence_for_every_unlabelled_view(runs):
    _, scene, record, _ = runs
    targets = _targets(scene)
    assert record["backend"] == "prior" and record["boundary"] == "all" and record["counts"]["written"] == len(targets)
    assert {"depth", "reproject", "prior_train", "prior_predict", "write"} <= set(record["times_s"])
    assert record["prior"]["crop"] == 32 and record["prior"]["labelled_views"] == 3
    assert record["prior"]["reprojected_views"] >= 1
    for stem in targets:
        pseudo = irt_io.read_pseudo_label(scene / "train" / "pseudo" / f"{stem}.png")  # [H, W]
        confidence = store.read_confidence(store.confidence_path(scene, stem))  # [H, W]
        assert pseudo.shape == confidence.shape == (RES, RES) and confidence.dtype == np.float32
        assert 0.0 <= confidence.min() and confidence.max() <= 1.0
        # No pseudo label: confidence 0; a kept prior class: at least the threshold.
        assert (confidence[pseudo == IGNORE_ID] == 0).all()
        assert (confidence[pseudo != IGNORE_ID] >= THRESHOLD - 0.5 / 255).all()
        assert np.all((pseudo < 20) | (pseudo == IGNORE_ID))
        assert irt_io.read_boundary_mask(scene / "train" / "boundary" / f"{stem}.png").all()  # B = all
    meta = json.loads((scene / "train" / "pseudo" / "meta.json").read_text())
    assert meta["origin"] == "semsplat-pseudo-labels" and meta["parameters"]["prior"]["steps"] == 100
    assert meta["cache_key"]["prior"]["threshold"] == THRESHOLD and len(meta["inputs_sha256"]) == 64
    assert not [p for p in scene.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not (scene / "train" / "rgb" / "pseudo").exists()


def test_prior_is_more_accurate_than_chance_and_covers_more_than_reprojection(runs):
    reprojected, scene, record, _ = runs
    accuracy, coverage, majority = _accuracy_and_coverage(scene)
    reprojected_accuracy, reprojected_coverage, _ = _accuracy_and_coverage(reprojected)
    assert accuracy > max(0.8, majority), f"accuracy {accuracy:.3f}, a constant guess {majority:.3f}"
    assert coverage > reprojected_coverage + 0.05, f"coverage {coverage:.3f} vs reprojection {reprojected_coverage:.3f}"
    assert reprojected_accuracy > 0.95
    # Where reprojection gives a class, the fused label is that class, with confidence 1.
    for stem in _targets(scene):
        carried = irt_io.read_pseudo_label(reprojected / "train" / "pseudo" / f"{stem}.png")
        fused = irt_io.read_pseudo_label(scene / "train" / "pseudo" / f"{stem}.png")
        confidence = store.read_confidence(store.confidence_path(scene, stem))
        here = carried != IGNORE_ID
        assert np.array_equal(fused[here], carried[here]) and (confidence[here] == 1.0).all()
    assert record["coverage_reprojected"] == pytest.approx(
        json.loads((reprojected / "train" / "pseudo" / "meta.json").read_text())["coverage"]
    )


def test_training_is_deterministic_per_seed():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(0, 3, (24, 24), dtype=np.uint8) for _ in range(2)]
    sampler = CropSampler(photos, labels, 16, brightness=0.2, device=torch.device("cpu"))

    def weights(seed: int) -> torch.Tensor:
        recipe = UnetRecipe(steps=5, crop=16, width=2, levels=2, seed=seed)
        model, _ = train_unet([(sampler, 2)], 3, recipe, torch.device("cpu"))
        return torch.cat([value.flatten().float() for value in model.state_dict().values()])

    first = weights(0)
    assert torch.equal(weights(0), first)
    assert not torch.equal(weights(1), first)


def test_saved_weights_reload_to_the_same_predictions(runs):
    _, scene, _, weights = runs
    model, payload = load_prior(weights, torch.device("cpu"))
    assert payload["num_classes"] == 20 and payload["width"] == 8 and payload["levels"] == 2
    stem = _targets(scene)[0]
    photo = irt_io.read_photo(next((scene / "train" / "color").glob(f"{stem}.*")))
    ids, probability = predict_probabilities(model, photo, torch.device("cpu"))
    fused = irt_io.read_pseudo_label(scene / "train" / "pseudo" / f"{stem}.png")
    confidence = store.read_confidence(store.confidence_path(scene, stem))
    from_prior = (confidence < 1.0) & (fused != IGNORE_ID)
    assert np.array_equal(ids[from_prior], fused[from_prior])
    assert np.abs(probability[from_prior] - confidence[from_prior]).max() <= 0.5 / 255 + 1e-6


def test_resume_remakes_incomplete_views_identically_and_another_backend_drops_stale_confidence(
    runs, town_with_depth, tmp_path
):
    _, made, _, _ = runs
    depth_dir = town_with_depth[1]
    scene = _copy(made, tmp_path)
    targets = _targets(scene)
    before = _digests(scene, "confidence")
    store.confidence_path(scene, targets[0]).unlink()  # a view is incomplete without its confidence
    record = run(PseudoLabelArgs(data=scene, backend="prior", depth_dir=depth_dir, prior=fast()))
    assert record["counts"]["written"] == 1 and record["counts"]["skipped"] == len(targets) - 1
    # A new prior, trained with the same seed, remade the same view: end-to-end determinism per seed.
    assert _digests(scene, "confidence") == before
    assert record["cache_key"] == cache_key(
        PseudoLabelArgs(data=scene, backend="prior", depth_dir=depth_dir, prior=fast())
    )
    # Reprojection's pseudo labels have no confidence: stale maps of the prior must not stay beside them.
    run(PseudoLabelArgs(data=scene, backend="reproject", depth_dir=depth_dir, overwrite=True))
    assert _digests(scene, "confidence") == {}


def test_batched_prediction_matches_one_view_at_a_time_and_needs_one_size():
    torch.manual_seed(0)
    model = Unet(5, width=4, levels=2).eval()
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(3)]  # 20, 28: padded to 4s
    batched = predict_batch_probabilities(model, photos, torch.device("cpu"))
    assert len(batched) == 3
    for photo, (ids, probability) in zip(photos, batched):
        single_ids, single_probability = predict_probabilities(model, photo, torch.device("cpu"))
        assert ids.shape == (20, 28) and ids.dtype == np.uint8 and probability.dtype == np.float32
        assert np.array_equal(ids, single_ids)
        np.testing.assert_allclose(probability, single_probability, atol=1e-5)
    with pytest.raises(ValueError, match="one size"):
        predict_batch_probabilities(model, [photos[0], photos[0][:16]], torch.device("cpu"))


def test_same_size_batches_keep_the_order_and_cut_at_a_size_change_or_the_limit():
    photos = {i: np.zeros((8, 8, 3) if i != 3 else (4, 8, 3), np.uint8) for i in range(7)}
    assert same_size_batches([0, 1, 2, 3, 4, 5, 6], photos, 2) == [[0, 1], [2], [3], [4, 5], [6]]
    assert same_size_batches([6, 0], photos, 8) == [[6, 0]]
    assert same_size_batches([], photos, 8) == []


def test_fuse_prefers_reprojection_then_confident_prior():
    carried = np.array([[3, IGNORE_ID, IGNORE_ID, IGNORE_ID]], dtype=np.uint8)
    prior_ids = np.array([[1, 2, 4, 5]], dtype=np.uint8)
    probability = np.array([[0.2, 0.95, 0.9, 0.89]], dtype=np.float32)
    labels, confidence = fuse(carried, prior_ids, probability, threshold=0.9)
    assert labels.tolist() == [[3, 2, 4, IGNORE_ID]]
    assert confidence[0].tolist() == pytest.approx([1.0, 0.95, 0.9, 0.0])
    assert store.encode_confidence(np.array([0.0, 0.5, 1.0, 1.2])).tolist() == [0, 128, 255, 255]


def test_fuse_margin_keeps_no_prior_label_beside_a_prior_class_edge():
    # A 1-pixel stripe of class 2 in class 0: with margin 1 the stripe and its neighbours get no prior label,
    # pixels two columns away keep class 0, and a reprojected label beside the stripe stays.
    prior_ids = np.zeros((5, 7), dtype=np.uint8)
    prior_ids[:, 3] = 2
    carried = np.full((5, 7), IGNORE_ID, dtype=np.uint8)
    carried[0, 2] = 4
    probability = np.full((5, 7), 0.99, dtype=np.float32)
    labels, confidence = fuse(carried, prior_ids, probability, threshold=0.9, margin=1)
    assert labels[2].tolist() == [0, 0, IGNORE_ID, IGNORE_ID, IGNORE_ID, 0, 0]
    assert labels[0, 2] == 4 and confidence[0, 2] == 1.0 and confidence[2, 3] == 0.0
    unchanged, _ = fuse(carried, prior_ids, probability, threshold=0.9)
    assert unchanged[2].tolist() == [0, 0, 0, 2, 0, 0, 0]


def test_confidence_file_round_trip_and_bad_files(tmp_path):
    probability = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "train" / "confidence" / "a.png"
    irt_io.atomic_write_png(path, store.encode_confidence(probability))
    assert np.abs(store.read_confidence(path) - probability).max() <= 0.5 / 255 + 1e-7
    irt_io.atomic_write_png(path, np.zeros((3, 4, 3), dtype=np.uint8))
    with pytest.raises(IRTDataError, match=r"a\.png: a confidence map must be a 1-channel 8-bit PNG"):
        store.read_confidence(path)
    path.write_bytes(b"not a png")
    with pytest.raises(IRTDataError, match=r"a\.png: cannot read the confidence image"):
        store.read_confidence(path)


def test_bad_settings_fail_before_any_work(town_with_depth, tmp_path):
    scene = _copy(town_with_depth[0], tmp_path)
    for settings, message in (
        (PriorSettings(threshold=1.5), "--prior.threshold"),
        (PriorSettings(margin=-1), "--prior.margin"),
        (PriorSettings(unet=UnetRecipe(crop=40)), "--prior.crop must be a positive multiple of 16"),
        (PriorSettings(unet=UnetRecipe(steps=0)), "--prior.steps"),
    ):
        with pytest.raises(PriorError, match=message):
            run(PseudoLabelArgs(data=scene, backend="prior", prior=settings))
    assert not (scene / "train" / "pseudo").exists() and not (scene / "sparse").exists()


def test_cli_flags_reach_the_prior_settings():
    args = tyro.cli(
        PseudoLabelArgs,
        args=["--data", "x", "--backend", "prior", "--prior.steps", "7", "--prior.crop", "64", "--prior.width", "4"],
    )
    recipe = args.prior.unet
    assert args.backend == "prior" and (recipe.steps, recipe.crop, recipe.width) == (7, 64, 4)
    assert args.prior.threshold == 0.9 and recipe.bf16 and recipe.labelled_batch == args.prior.pseudo_batch == 4
    assert BACKENDS["prior"].writes_confidence and not BACKENDS["reproject"].writes_confidence


def test_unet_recipe_is_declared_once_and_keyed_whole():
    """The prior, the datamanager's automatic prior and the Unet baseline share UnetRecipe's fields and flags; the
    cache key holds every recipe field, so a change of any of them rebuilds cached pseudo labels."""
    from dataclasses import fields

    from benchmarks.baselines.unet import UnetBaselineConfig
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
    from semsplat_ns.pseudo.prior import cache_fields

    recipe_names = {f.name for f in fields(UnetRecipe)}
    for owner in (PriorSettings, UnetBaselineConfig):
        assert not recipe_names & {f.name for f in fields(owner)}, owner  # declared only in UnetRecipe
    datamanager = tyro.cli(SemSplatDataManagerConfig, args=["--pseudo-prior.steps", "5", "--pseudo-prior.width", "8"])
    assert (datamanager.pseudo_prior.unet.steps, datamanager.pseudo_prior.unet.width) == (5, 8)
    baseline = tyro.cli(UnetBaselineConfig, args=["--data", "s", "--steps", "9", "--labelled-batch", "3", "--bf16"])
    assert (baseline.unet.steps, baseline.unet.labelled_batch, baseline.unet.bf16) == (9, 3, True)
    baseline_recipe = UnetRecipe(
        steps=3000, crop=256, labelled_batch=8, bf16=False, deterministic=False, class_balance="none"
    )
    assert UnetBaselineConfig(data=[]).unet == baseline_recipe  # as the baseline's rows were measured
    assert PriorSettings().unet.class_balance == "inverse-sqrt-frequency"  # the prior's own default
    key = cache_fields(PriorSettings())
    how_it_runs = {"step_runner", "cudnn_benchmark"}  # like device and save_weights: not in the key
    assert set(key) == recipe_names - how_it_runs | {"pseudo_batch", "threshold", "margin", "labelled_only_share"}
    for name in how_it_runs:
        changed = PriorSettings(unet=replace(UnetRecipe(), **{name: _another(getattr(UnetRecipe(), name))}))
        args = PseudoLabelArgs(data=Path("x"), backend="prior", prior=changed)
        assert cache_key(args) == cache_key(PseudoLabelArgs(data=Path("x"), backend="prior")), name
    for name in recipe_names - how_it_runs:
        changed = PriorSettings(unet=replace(UnetRecipe(), **{name: _another(getattr(UnetRecipe(), name))}))
        args = PseudoLabelArgs(data=Path("x"), backend="prior", prior=changed)
        assert cache_key(args) != cache_key(PseudoLabelArgs(data=Path("x"), backend="prior")), name
    moved = PseudoLabelArgs(data=Path("x"), backend="prior", prior=PriorSettings(device="cpu", save_weights=Path("w")))
    assert cache_key(moved) == cache_key(PseudoLabelArgs(data=Path("x"), backend="prior"))


def _another(value):
    """A different value of the same type (a Literal string: the recipe's other choice)."""
    if isinstance(value, str):
        return {"none": "inverse-sqrt-frequency", "eager": "cuda-graph"}.get(value, "none")
    return (not value) if isinstance(value, bool) else value * 2 + 1


def test_masked_cross_entropy_matches_torch_and_ignores_unlabelled_pixels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, generator=generator, requires_grad=True)  # [B, C, H, W]
    targets = torch.randint(0, 5, (2, 4, 4), generator=generator)  # [B, H, W]
    targets[0, :2] = IGNORE_ID
    ours = masked_cross_entropy(logits, targets)
    reference = F.cross_entropy(logits, targets, ignore_index=IGNORE_ID)
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_reference,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-7)
    nothing = masked_cross_entropy(logits, torch.full_like(targets, IGNORE_ID))
    assert float(nothing) == 0.0  # not NaN


def test_class_weighted_cross_entropy_matches_torch_and_counts_every_pool():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=generator, requires_grad=True)  # [B, C, H, W]
    targets = torch.randint(0, 4, (2, 3, 3), generator=generator)  # [B, H, W]
    targets[1, 0] = IGNORE_ID
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0])  # [C]
    ours = masked_cross_entropy(logits, targets, weights)
    reference = F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE_ID)
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_reference,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-7)
    photo = np.zeros((4, 4, 3), dtype=np.uint8)
    first = np.full((4, 4), IGNORE_ID, dtype=np.uint8)
    first[0] = 1
    second = np.full((4, 4), 3, dtype=np.uint8)
    pools = [(CropSampler([photo], [first], 4, 0.0, torch.device("cpu")), 1)]
    pools.append((CropSampler([photo, photo], [second, first], 4, 0.0, torch.device("cpu")), 1))
    assert class_pixel_counts(pools, 5).tolist() == [0, 8, 0, 16, 0]


def test_crop_sampler_keeps_no_label_pixels():
    photo = np.zeros((8, 8, 3), dtype=np.uint8)
    label = np.full((8, 8), IGNORE_ID, dtype=np.uint8)
    label[:4] = 2
    sampler = CropSampler([photo], [label], 8, brightness=0.0, device=torch.device("cpu"))
    _, targets = sampler.sample(16, torch.Generator().manual_seed(0))
    assert set(torch.unique(targets).tolist()) == {2, IGNORE_ID}
    assert (targets == IGNORE_ID).float().mean() == 0.5


def test_unet_checks_its_arguments():
    with pytest.raises(ValueError, match="at least 2 levels"):
        Unet(3, levels=1)
    assert Unet(3, width=2, levels=3).divisor == 4


def _reference_training(pools, num_classes: int, recipe: UnetRecipe, later_pools=None, switch_step: int = 0) -> Unet:
    """The eager training loop as it was written before step runners existed (the CPU's results must not move);
    with ``later_pools``, its crops and class weights come from them from ``switch_step`` on."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = Unet(num_classes, width=recipe.width, levels=recipe.levels)
    model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.peak_lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.peak_lr, total_steps=recipe.steps)
    generator = torch.Generator().manual_seed(recipe.seed)
    class_weights = inverse_sqrt_frequency_weights(class_pixel_counts(pools, num_classes))  # [C]
    for step in range(recipe.steps):
        if later_pools is not None and step == switch_step:
            pools = later_pools
            class_weights = inverse_sqrt_frequency_weights(class_pixel_counts(pools, num_classes))  # [C]
        drawn = [sampler.sample(count, generator) for sampler, count in pools]
        batch = torch.cat([images for images, _ in drawn]).contiguous(memory_format=torch.channels_last)
        targets = torch.cat([labels for _, labels in drawn])  # [B, S, S]
        loss = masked_cross_entropy(model(batch), targets, class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model


def test_every_step_runner_but_compiled_gives_the_eager_network_on_the_cpu():
    """Same seed, same network as before step runners existed: eager, and cuda-graph (eager on the CPU), with and
    without cuDNN's settings (CUDA only); compiled is left out (it compiles for ~20 s here)."""
    generator = np.random.default_rng(0)
    photos = [generator.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    labels = [generator.integers(0, 4, (40, 40), dtype=np.uint8) for _ in range(3)]
    labels[1][:10] = IGNORE_ID
    cpu = torch.device("cpu")
    pools = [
        (CropSampler(photos[:2], labels[:2], 16, 0.2, cpu), 2),
        (CropSampler(photos[1:], labels[1:], 16, 0.2, cpu), 3),
    ]
    recipe = UnetRecipe(steps=12, crop=16, width=4, levels=2, seed=3)
    reference = _reference_training(pools, 4, recipe).state_dict()
    assert set(STEP_RUNNERS) == set(typing.get_args(StepRunner))
    for runner, benchmark in (("eager", False), ("cuda-graph", True)):
        model, _ = train_unet(pools, 4, replace(recipe, step_runner=runner, cudnn_benchmark=benchmark), cpu)
        weights = model.state_dict()
        assert all(torch.equal(weights[name], reference[name]) for name in reference), runner
    moved = train_unet(pools, 4, replace(recipe, seed=4), cpu)[0].state_dict()
    assert not all(torch.equal(moved[name], reference[name]) for name in reference)  # the comparison can fail


def test_pools_changed_before_a_step_train_as_a_loop_that_changes_them_there():
    """use_pools from before_step: the later steps draw from the new pools with their class weights, for every step
    runner but compiled (the CUDA-graph step reads the weights where it captured them: they are rewritten in place)."""
    generator = np.random.default_rng(1)
    photos = [generator.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    labels = [generator.integers(0, 4, (40, 40), dtype=np.uint8) for _ in range(3)]
    labels[2][:, :20] = 3  # the second pool's classes are balanced otherwise
    cpu = torch.device("cpu")
    first = CropSampler(photos[:1], labels[:1], 16, 0.2, cpu)
    second = CropSampler(photos[1:], labels[1:], 16, 0.2, cpu)
    early, later = [(first, 4)], [(first, 2), (second, 2)]
    recipe = UnetRecipe(steps=10, crop=16, width=4, levels=2, seed=5)
    reference = _reference_training(early, 4, recipe, later_pools=later, switch_step=6).state_dict()
    seen = []

    def switch(step: int, training) -> None:
        seen.append(step)
        if step == 6:
            weights = training.class_weights
            training.use_pools(later)
            assert training.class_weights is weights  # rewritten, not replaced
            expected = inverse_sqrt_frequency_weights(class_pixel_counts(later, 4))
            assert torch.allclose(weights, expected)
            with pytest.raises(ValueError, match="as many crops per step"):
                training.use_pools([(first, 3)])

    for runner in ("eager", "cuda-graph"):
        seen.clear()
        model, _ = train_unet(early, 4, replace(recipe, step_runner=runner), cpu, before_step=switch)
        assert seen == list(range(10))
        weights = model.state_dict()
        assert all(torch.equal(weights[name], reference[name]) for name in reference), runner
    unchanged = train_unet(early, 4, recipe, cpu)[0].state_dict()
    assert not all(torch.equal(unchanged[name], reference[name]) for name in reference)  # the change mattered


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA-graph step needs CUDA")
def test_cuda_graph_step_reads_the_class_weights_use_pools_rewrites():
    """On CUDA the CUDA-graph step replays the cross-entropy it captured: after use_pools it must weigh the classes
    with the new pools' weights, as the eager step does (the same network)."""
    generator = np.random.default_rng(3)
    photos = [generator.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    labels = [generator.integers(0, 4, (40, 40), dtype=np.uint8) for _ in range(3)]
    labels[2][:, :30] = 3  # the later pool weighs class 3 far less
    cuda = torch.device("cuda")
    first = CropSampler(photos[:1], labels[:1], 16, 0.2, cuda)
    second = CropSampler(photos[1:], labels[1:], 16, 0.2, cuda)
    early, later = [(first, 4)], [(first, 2), (second, 2)]
    recipe = UnetRecipe(steps=14, crop=16, width=4, levels=2, seed=5)

    def switch(step: int, training) -> None:
        if step == 8:  # after the graph's capture (step 3)
            training.use_pools(later)

    def network(runner: str, before_step=switch) -> Dict[str, torch.Tensor]:
        trained = train_unet(early, 4, replace(recipe, step_runner=runner), cuda, before_step=before_step)[0]
        return {name: value.float() for name, value in trained.state_dict().items()}

    eager, graph = network("eager"), network("cuda-graph")
    assert max(float((eager[name] - graph[name]).abs().max()) for name in eager) < 1e-5
    unswitched = network("cuda-graph", before_step=lambda step, training: None)
    assert max(float((eager[name] - unswitched[name]).abs().max()) for name in eager) > 1e-3  # the switch matters


def test_labelled_only_steps_draw_no_reprojected_crop_before_them(monkeypatch):
    from semsplat_ns.pseudo import prior as prior_module

    generator = np.random.default_rng(2)
    photo = lambda: generator.integers(0, 256, (48, 48, 3), dtype=np.uint8)  # noqa: E731
    labelled = [(photo(), generator.integers(0, 3, (48, 48), dtype=np.uint8)) for _ in range(2)]
    propagated = [(photo(), generator.integers(0, 3, (48, 48), dtype=np.uint8)) for _ in range(3)]
    draws = []  # (views of the sampler, crops) of every draw, in order
    original = CropSampler.sample

    def counted(self, count, generator):
        draws.append((self.images.shape[0], count))
        return original(self, count, generator)

    monkeypatch.setattr(CropSampler, "sample", counted)
    settings = fast(unet=UnetRecipe(steps=8, crop=32, width=4, levels=2), labelled_only_share=0.6)
    assert prior_module.labelled_only_steps(settings) == 5  # 4.8, rounded
    prior_module.train_prior(3, labelled, propagated, settings, torch.device("cpu"))
    labelled_batch, pseudo_batch = settings.unet.labelled_batch, settings.pseudo_batch
    assert draws[:5] == [(2, labelled_batch + pseudo_batch)] * 5  # the labelled views fill the first batches
    assert draws[5:] == [(2, labelled_batch), (3, pseudo_batch)] * 3  # then both pools, as without the setting
    with pytest.raises(PriorError, match=r"--prior.labelled-only-share must lie in \[0, 1\), got 1.0"):
        prior_module.check_settings(replace(settings, labelled_only_share=1.0))
    # never every step: the reprojected labels join for the last one at the latest
    assert prior_module.labelled_only_steps(replace(settings, labelled_only_share=0.99)) == 7


def test_labels_made_beside_the_prior_give_the_pseudo_labels_of_labels_made_before_it(town_with_depth, tmp_path):
    """--prior.labelled-only-share: the pipeline makes the reprojected labels in a thread beside the prior's first
    steps; the pseudo labels are those of the same prior given the labels before it starts."""
    from semsplat_ns.pseudo import prior as prior_module
    from semsplat_ns.pseudo.scene import read_labels, read_photos, read_scene

    source, depth_dir = town_with_depth
    settings = fast(labelled_only_share=0.4)  # 40 of 100 steps
    beside = _copy(source, tmp_path / "beside")
    record = run(PseudoLabelArgs(data=beside, backend="prior", depth_dir=depth_dir, prior=settings))
    assert record["counts"]["reprojected_beside_prior"] and record["prior"]["reprojected_views"] >= 1
    assert {"depth", "reproject", "prior_train", "prior_wait", "prior_predict"} <= set(record["times_s"])

    # the same prior given, before it starts, the reprojected labels (the reproject backend writes them)
    reprojected = _copy(source, tmp_path / "reprojected")
    run(PseudoLabelArgs(data=reprojected, backend="reproject", depth_dir=depth_dir))
    scene = read_scene(beside)
    labels_of = {i: read_labels(scene, i) for i in scene.labelled}
    photos = read_photos(scene, sorted(set(scene.targets) | set(scene.labelled)))
    carried_of = {
        i: irt_io.read_pseudo_label(reprojected / "train" / "pseudo" / f"{scene.stems[i]}.png") for i in scene.targets
    }
    times = {}
    device = prior_module.resolve_device(settings)  # where the pipeline trained it (CUDA when there is one)
    pseudo_of, _, _ = prior_module.prior_pseudo_labels(
        settings, scene, labels_of, photos, carried_of, list(scene.targets), device, times
    )
    for i in scene.targets:
        written = irt_io.read_pseudo_label(beside / "train" / "pseudo" / f"{scene.stems[i]}.png")
        assert np.array_equal(pseudo_of[i], written), scene.stems[i]

    # the late labels are asked for when they join the batches, not before
    started, asked = [], []
    late = prior_module.LateLabels(
        start=lambda: started.append(len(asked)),
        result=lambda: asked.append(1) or carried_of,
        sizes=[scene.sizes[i] for i in scene.targets],
    )
    late_pseudo, _, _ = prior_module.prior_pseudo_labels(
        settings, scene, labels_of, photos, late, list(scene.targets), device, times
    )
    assert started == [0] and len(asked) == 2  # at the join, then once more for the fusion
    assert all(np.array_equal(late_pseudo[i], pseudo_of[i]) for i in scene.targets)


def test_cudnn_settings_follow_the_recipe_and_are_restored():
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cases = [
        (UnetRecipe(), (True, False)),
        (UnetRecipe(cudnn_benchmark=True), (True, True)),
        (UnetRecipe(deterministic=False, cudnn_benchmark=True), (before[0], True)),
        (UnetRecipe(deterministic=False), before),
    ]
    for recipe, inside in cases:
        with cudnn_settings(recipe, torch.device("cuda")):  # sets flags only; no CUDA call
            assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == inside, recipe
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == before
    with cudnn_settings(UnetRecipe(cudnn_benchmark=True), torch.device("cpu")):
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == before
    assert effective_step_runner(UnetRecipe(step_runner="cuda-graph"), torch.device("cpu")) == "eager"
    assert effective_step_runner(UnetRecipe(step_runner="cuda-graph"), torch.device("cuda")) == "cuda-graph"
    assert effective_step_runner(UnetRecipe(step_runner="compiled"), torch.device("cpu")) == "compiled"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        CudaGraphStep(Unet(2, width=2, levels=2), UnetRecipe(), None, torch.device("cpu"), (2, 16))
