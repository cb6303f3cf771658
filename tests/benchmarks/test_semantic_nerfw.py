"""nerfstudio's semantic-nerfw on an IRT scene: labels only where labelled, CPU training, benchmark row."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.baselines.semantic_nerfw import build_config, evaluation_row, main  # noqa: E402
from benchmarks.baselines.semantic_nerfw_adapter import (  # noqa: E402
    IgnoreLabelCrossEntropy,
    IRTSemanticDataset,
    IRTSemanticNerfWDataParserConfig,
    IRTSemanticNerfWModel,
)
from benchmarks.common import ROW_KEYS  # noqa: E402
from semsplat_ns.data import irt_io  # noqa: E402
from semsplat_ns.eval.timing import PerViewTiming  # noqa: E402

IGNORE = irt_io.IGNORE_ID
RAYS = 256


@pytest.fixture(scope="module")
def scene(demo_town) -> Path:
    return demo_town(n_views=12, resolution=32, n_labelled=2, seed=0)


@pytest.fixture(scope="module")
def trainer(scene, tmp_path_factory):
    config = build_config(
        scene,
        steps=8,
        output_dir=tmp_path_factory.mktemp("runs"),
        device="cpu",
        rays_per_batch=RAYS,
        eval_rays_per_chunk=1024,
    )
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def _expected_labels(dataset: IRTSemanticDataset) -> list:
    """Per view: class ids [H, W] from irt_io.read_label, or all-255 for an unlabelled view."""
    out = []
    for index, path in enumerate(dataset.metadata["semantic_filenames"]):
        height, width = int(dataset.cameras.height[index, 0]), int(dataset.cameras.width[index, 0])
        if path is None:
            out.append(np.full((height, width), IGNORE, dtype=np.int64))
        else:
            out.append(irt_io.read_label(path, dataset.class_colors, dataset.num_classes).astype(np.int64))
    return out


def test_dataset_reads_ids_from_channel_0_and_marks_unlabelled_views(scene):
    outputs = IRTSemanticNerfWDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    dataset = IRTSemanticDataset(outputs)
    labelled = [p is not None for p in outputs.metadata["semantic_filenames"]]
    assert sum(labelled) == 2 and len(labelled) == 11
    assert outputs.metadata["semantics"].classes == outputs.metadata["class_names"]
    for index, has_label in enumerate(labelled):
        item = dataset[index]
        assert item["semantics"].shape == (32, 32, 1) and item["semantics"].dtype == torch.int64
        assert bool(item["mask"].all())  # RGB rays may come from every pixel of every view
        semantics = item["semantics"][..., 0].numpy()
        if not has_label:
            assert (semantics == IGNORE).all()
            continue
        # The label PNG is RGB with equal channels: channel 0 is the id (nerfstudio's own reader would
        # give [H, W, 3, 1]).
        raw = np.asarray(Image.open(outputs.metadata["semantic_filenames"][index]))
        assert raw.ndim == 3
        np.testing.assert_array_equal(semantics, raw[..., 0])
        assert semantics.max() < outputs.metadata["num_classes"]


def test_colour_coded_labels_decode_to_the_same_ids(scene, tmp_path):
    coded = tmp_path / "coded"
    shutil.copytree(scene, coded)
    colors = np.asarray(json.loads((scene / "classes.json").read_text())["colors"], dtype=np.uint8)  # [C, 3]
    for path in sorted(coded.glob("*/rgb/*.png")):
        ids = np.asarray(Image.open(path))[..., 0]  # [H, W]
        Image.fromarray(colors[ids]).save(path)
    plain = IRTSemanticDataset(IRTSemanticNerfWDataParserConfig(data=scene).setup().get_dataparser_outputs("test"))
    decoded = IRTSemanticDataset(IRTSemanticNerfWDataParserConfig(data=coded).setup().get_dataparser_outputs("test"))
    assert decoded.metadata["label_is_color"]
    for index in range(len(plain)):
        torch.testing.assert_close(decoded.read_semantics(index), plain.read_semantics(index), rtol=0, atol=0)


def test_ignore_label_cross_entropy():
    logits = torch.randn(6, 4, requires_grad=True)  # [R, C]
    target = torch.tensor([0, IGNORE, 3, IGNORE, 1, 2])  # [R]
    loss = IgnoreLabelCrossEntropy(IGNORE)(logits, target)
    valid = target != IGNORE
    torch.testing.assert_close(loss, F.cross_entropy(logits[valid], target[valid]))
    # No labelled ray: zero and finite gradients, not NaN.
    empty = IgnoreLabelCrossEntropy(IGNORE)(logits, torch.full((6,), IGNORE))
    empty.backward()
    assert float(empty) == 0.0 and logits.grad is not None and torch.isfinite(logits.grad).all()


def test_training_batches_hold_labels_only_on_labelled_pixels(trainer):
    datamanager = trainer.pipeline.datamanager
    expected = _expected_labels(datamanager.train_dataset)
    filenames = datamanager.train_dataset.metadata["semantic_filenames"]
    labelled_views = {i for i, path in enumerate(filenames) if path is not None}
    _, batch = datamanager.next_train(0)
    indices = batch["indices"]  # [R, 3] (view, y, x)
    semantics = batch["semantics"][..., 0]  # [R]
    assert indices.shape == (RAYS, 3) and semantics.shape == (RAYS,)
    want = torch.tensor([expected[c][y, x] for c, y, x in indices.tolist()])  # [R]
    torch.testing.assert_close(semantics, want, rtol=0, atol=0)
    from_labelled = torch.tensor([int(c) in labelled_views for c in indices[:, 0]])  # [R]
    assert bool((semantics[~from_labelled] == IGNORE).all())
    assert bool((semantics[from_labelled] != IGNORE).all())  # labelled views are labelled everywhere
    # RGB supervision comes from the unlabelled views too.
    assert int((~from_labelled).sum()) > 0 and int(from_labelled.sum()) > 0
    assert torch.isfinite(batch["image"]).all()


def test_cpu_training_steps_give_finite_semantic_loss(trainer):
    model = trainer.pipeline.model
    assert isinstance(model, IRTSemanticNerfWModel)
    semantic_params = [p for n, p in model.field.named_parameters() if "semantic" in n]
    assert semantic_params
    before = [p.detach().clone() for p in semantic_params]
    semantic_losses = []
    for step in range(3):  # a CPU step of semantic-nerfw takes ~2 s (hash grids in PyTorch)
        loss, loss_dict, metrics = trainer.train_iteration(step)
        assert math.isfinite(float(loss))
        semantic_losses.append(float(loss_dict["semantics_loss"]))
        assert 0.0 < float(metrics["labelled_ray_fraction"]) < 1.0
    assert all(math.isfinite(v) and v > 0 for v in semantic_losses)
    # The semantic head learns from the labelled rays.
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, semantic_params))


def test_evaluation_row_is_valid(trainer):
    # One warm-up render instead of the default three: CPU renders are slow, the protocol is the same.
    timing = PerViewTiming(warmup_views=1)
    row = evaluation_row(
        trainer.pipeline,
        "town",
        train_s=1.0,
        steps=3,
        peak_gpu_mem_gb=None,
        command="pytest",
        show_progress=False,
        timing=timing,
    )
    assert tuple(row)[: len(ROW_KEYS)] == ROW_KEYS
    # The timing protocol's other figures follow the standard keys.
    assert row["test_ms_per_view_p95"] >= row["test_ms_per_view"] > 0
    assert row["timing_warmup_views"] == 1
    assert row["method"] == "semantic-nerfw" and row["n_gaussians"] is None and row["device"] == "cpu"
    for key in ("miou", "miou_present", "acc"):
        assert row[key] is not None and 0.0 <= row[key] <= 1.0
    assert row["test_ms_per_view"] > 0


def test_cli_appends_one_row_per_scene(demo_town, tmp_path):
    # A 16-px town of its own: the CLI renders its test view four times (three timing warm-ups), ~4 s each at 32 px.
    scene = demo_town(n_views=12, resolution=16, n_labelled=2, seed=0)
    out = tmp_path / "results.json"
    args = [
        "--scene",
        str(scene),
        "--steps",
        "1",
        "--device",
        "cpu",
        "--rays-per-batch",
        str(RAYS),
        "--eval-rays-per-chunk",
        "1024",
        "--out",
        str(out),
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    returned = main(args)
    rows = json.loads(out.read_text())
    assert rows == returned and len(rows) == 1
    assert rows[0]["scene"] == scene.name and rows[0]["steps"] == 1 and rows[0]["train_s"] > 0
    assert 0.0 <= rows[0]["miou"] <= 1.0
