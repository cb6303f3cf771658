"""A training view's image losses, eager and replayed as CUDA graphs (semsplat_ns.model.view_losses).

The graph tests need a CUDA GPU (gsplat's kernels for the model-level one); on the CPU only the runner's choice and
its settings are tested, the eager arithmetic being what the model tests train with."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Dict, Optional

import pytest
import torch

from semsplat_ns.model.semsplat_model import SemSplatModelConfig
from semsplat_ns.model.ssim import SSIM
from semsplat_ns.model.view_losses import (
    ViewLossRunner,
    ViewLossSettings,
    capture_options,
    effective_loss_runner,
    view_losses,
)
from tests.cpu_training import run_steps, seeded_trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLASSES, CHANNELS = 6, 16


def test_the_runner_falls_back_to_eager_off_cuda_and_refuses_unknown_names():
    assert effective_loss_runner("cuda-graph", torch.device("cpu")) == "eager"
    assert effective_loss_runner("cuda-graph", torch.device("cuda")) == "cuda-graph"
    assert effective_loss_runner("eager", torch.device("cuda")) == "eager"
    with pytest.raises(ValueError, match="unknown loss runner 'graphs'; one of eager, cuda-graph"):
        ViewLossRunner("graphs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown view maps"):
        ViewLossRunner("eager")(SETTINGS, SSIM(channel=3), {"rgb": torch.zeros(4, 4, 3)}, semantic=False)


def test_settings_are_the_model_configs_fields():
    config = SemSplatModelConfig(agg2d_num_samples=77, pseudo_weight_by_agreement=True, ssim_lambda=0.3)
    settings = ViewLossSettings.of(config)
    assert settings.agg2d_num_samples == 77 and settings.pseudo_weight_by_agreement and settings.ssim_lambda == 0.3
    assert SemSplatModelConfig().loss_runner == "cuda-graph"


def test_on_the_cpu_the_graph_runner_computes_the_eager_losses():
    maps = _view_maps("pseudo", torch.device("cpu"), seed=1)
    ssim = SSIM(data_range=1.0, channel=3)
    torch.manual_seed(5)
    expected = view_losses(
        SETTINGS, ssim, {name: map_ for name, map_ in maps.items() if map_ is not None}, semantic=True
    )
    torch.manual_seed(5)
    runner = ViewLossRunner("cuda-graph")
    got = runner(SETTINGS, ssim, maps, semantic=True)
    assert runner.num_graphs == 0
    assert got.keys() == expected.keys() == {"main_loss", "semantic_loss", "pseudo_loss", "agg2d_loss"}
    for name in got:
        assert torch.equal(got[name], expected[name]), name


SETTINGS = ViewLossSettings(
    ssim_lambda=0.2,
    semantic_loss_weight=1.0,
    pseudo_loss_weight=0.25,
    pseudo_inside_boundary_only=True,
    pseudo_weight_by_label_support=True,
    pseudo_weight_by_agreement=True,
    agg2d_loss_weight=0.5,
    agg2d_num_samples=512,
    agg_k=5,
)


def _view_maps(kind: str, device: torch.device, seed: int, size=(40, 56)) -> Dict[str, Optional[torch.Tensor]]:
    """Random maps of a labelled or a pseudo-labelled view; the rendered ones need gradients (fresh leaves)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size

    def rand(*shape, grad=False):
        return torch.rand(*shape, generator=generator).to(device).requires_grad_(grad)

    def ids(high: int) -> torch.Tensor:
        values = torch.randint(0, high, (height, width), generator=generator, dtype=torch.uint8)  # [H, W]
        values[torch.rand(height, width, generator=generator) < 0.2] = 255  # some pixels without a label
        return values.to(device)

    maps: Dict[str, Optional[torch.Tensor]] = {
        "pred_rgb": rand(height, width, 3, grad=True),
        "gt_rgb": rand(height, width, 3),
        "features": rand(height, width, CHANNELS, grad=True),
        "logits": (rand(height, width, CLASSES) * 4).detach().requires_grad_(True),
        "class_weights": rand(CLASSES) + 0.5,
    }
    if kind == "labelled":
        maps["labels"] = ids(CLASSES)
    else:
        maps["pseudo"] = ids(CLASSES)
        maps["boundary"] = (torch.rand(height, width, generator=generator) < 0.7).to(device)
        maps["support"] = rand(height, width)
        maps["confidence"] = rand(height, width)
        maps["pseudo_logits"] = (rand(height, width, CLASSES) * 4).detach().requires_grad_(True)
    return maps


def _losses_and_grads(runner: ViewLossRunner, settings: ViewLossSettings, ssim, maps) -> Dict[str, torch.Tensor]:
    losses = runner(settings, ssim, maps, semantic=True)
    leaves = {name: value for name, value in maps.items() if value is not None and value.requires_grad}
    total = torch.stack(list(losses.values())).sum()
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    result = {name: value.detach().clone() for name, value in losses.items()}
    result.update({f"grad_{name}": grad for name, grad in zip(leaves, grads) if grad is not None})
    return result


@needs_cuda
@pytest.mark.parametrize("kind", ["labelled", "pseudo"])
def test_replayed_graphs_give_the_eager_losses_and_gradients_for_new_maps(kind):
    device = torch.device("cuda")
    ssim = SSIM(data_range=1.0, channel=3).to(device)
    settings = dataclasses.replace(SETTINGS, agg2d_loss_weight=0.0)  # no random draw: the same numbers
    graphs, eager = ViewLossRunner("cuda-graph"), ViewLossRunner("eager")
    for seed in range(3):  # the first call captures, the next ones copy new maps into the graph's inputs
        maps = _view_maps(kind, device, seed)
        expected = _losses_and_grads(eager, settings, ssim, maps)
        got = _losses_and_grads(graphs, settings, ssim, maps)
        assert graphs.num_graphs == 1
        assert got.keys() == expected.keys()
        assert {"grad_pred_rgb", "grad_logits"} <= got.keys()
        for name in expected:
            assert torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-7), (seed, name)
        assert expected["pseudo_loss" if kind == "pseudo" else "semantic_loss"] > 0


@needs_cuda
def test_graphed_2d_aggregation_draws_fresh_samples_on_every_replay():
    device = torch.device("cuda")
    ssim = SSIM(data_range=1.0, channel=3).to(device)
    maps = _view_maps("labelled", device, seed=0)
    graphs, eager = ViewLossRunner("cuda-graph"), ViewLossRunner("eager")
    with torch.no_grad():
        eager_values = torch.stack([eager(SETTINGS, ssim, maps, semantic=True)["agg2d_loss"] for _ in range(60)])
    graphed = [graphs(SETTINGS, ssim, maps, semantic=True)["agg2d_loss"] for _ in range(60)]  # kept: not overwritten
    graphed_values = torch.stack(graphed).detach()
    assert graphed_values.unique().numel() > 50, "each replay samples other pixels"
    # the same distribution: means within a few standard errors
    spread = (eager_values.std() ** 2 / 60 + graphed_values.std() ** 2 / 60).sqrt()
    assert (graphed_values.mean() - eager_values.mean()).abs() < 4 * spread


@needs_cuda
def test_the_least_recently_used_graphs_go_first():
    device = torch.device("cuda")
    ssim = SSIM(data_range=1.0, channel=3).to(device)
    runner = ViewLossRunner("cuda-graph", max_graphs=2)
    runner(SETTINGS, ssim, _view_maps("labelled", device, 0, size=(32, 32)), semantic=True)
    runner(SETTINGS, ssim, _view_maps("pseudo", device, 0, size=(32, 32)), semantic=True)
    runner(SETTINGS, ssim, _view_maps("labelled", device, 1, size=(32, 32)), semantic=True)  # a replay
    assert runner.num_graphs == 2 and runner.captures == 2
    losses = runner(SETTINGS, ssim, _view_maps("pseudo", device, 0, size=(64, 64)), semantic=True)
    assert runner.num_graphs == 2 and runner.captures == 3 and torch.isfinite(torch.stack(list(losses.values()))).all()
    runner(SETTINGS, ssim, _view_maps("labelled", device, 2, size=(32, 32)), semantic=True)  # kept: used last
    assert runner.captures == 3
    with torch.no_grad():  # no gradients (e.g. a loss read in evaluation): eager, no graph
        runner(SETTINGS, ssim, _view_maps("labelled", device, 0, size=(64, 64)), semantic=True)
    assert runner.captures == 3


@needs_cuda
def test_the_model_trains_on_graphed_losses_as_on_eager_ones(demo_town, tmp_path):
    """One model, one render of a labelled and of a pseudo-labelled view: the loss dict and every parameter's gradient
    with the graphs are the eager ones (L2D and L3D off: they draw random samples), and a few graphed steps train."""
    trainer = seeded_trainer(
        demo_town(),
        tmp_path,
        6,
        "graphs",
        # random Gaussians: no triangulation (pycolmap is not on every GPU machine)
        trainer_settings={"machine.device_type": "cuda", "pipeline.datamanager.dataparser.load_points": False},
        agg2d_loss_weight=0.0,
        agg3d_loss_weight=0.0,  # L3D samples Gaussians at random on every call, graphs or not
        pseudo_weight_by_label_support=True,
        pseudo_weight_by_agreement=True,
    )
    model = trainer.pipeline.model
    assert model.device.type == "cuda" and model.config.loss_runner == "cuda-graph"
    # graphed steps first (the trainer's callbacks hand the model its optimisers, which its renders need)
    history = run_steps(trainer, range(3))
    datamanager = trainer.pipeline.datamanager
    draws = [datamanager.next_train(step) for step in range(12)]
    labelled = next((camera, batch) for camera, batch in draws if "semantics" in batch)
    unlabelled_camera, unlabelled = next((camera, batch) for camera, batch in draws if "semantics" not in batch)
    height, width = unlabelled["image"].shape[:2]
    generator = torch.Generator().manual_seed(0)
    pseudo = torch.randint(0, model.num_classes, (height, width), generator=generator, dtype=torch.uint8)
    unlabelled = {
        **unlabelled,
        "pseudo_semantics": pseudo,
        "boundary_mask": torch.rand(height, width, generator=generator) < 0.8,
        "pseudo_confidence": torch.rand(height, width, generator=generator),
    }
    model.train()
    for camera, batch in (labelled, (unlabelled_camera, unlabelled)):
        results = {}
        for runner in ("eager", "cuda-graph", "cuda-graph"):  # the second graphed call replays
            model._view_loss_runner.runner = runner
            model.zero_grad(set_to_none=True)
            torch.manual_seed(7)  # splatfacto draws a random background for each training render
            outputs = model.get_outputs(camera)
            losses = model.get_loss_dict(outputs, batch)
            torch.stack(list(losses.values())).sum().backward()
            grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
            results.setdefault(runner, []).append(({k: v.detach().clone() for k, v in losses.items()}, grads))
        (eager_losses, eager_grads) = results["eager"][0]
        assert eager_losses["semantic_loss" if "semantics" in batch else "pseudo_loss"] > 0
        for graph_losses, graph_grads in results["cuda-graph"]:
            assert graph_losses.keys() == eager_losses.keys()
            for name in eager_losses:
                assert torch.allclose(graph_losses[name], eager_losses[name], rtol=1e-5, atol=1e-7), name
            assert graph_grads.keys() == eager_grads.keys()
            for name in eager_grads:
                scale = eager_grads[name].abs().max().clamp_min(1e-12)
                assert (graph_grads[name] - eager_grads[name]).abs().max() <= 1e-4 * scale, name
    model.zero_grad(set_to_none=True)
    model._view_loss_runner.runner = "cuda-graph"
    history += run_steps(trainer, range(3, 6))
    assert all(torch.isfinite(value).all() for loss_dict in history for value in loss_dict.values())
    assert model._view_loss_runner.num_graphs >= 1


def test_a_failed_capture_warns_once_and_the_losses_run_eagerly(monkeypatch):
    """Where the GPU, driver or torch cannot capture an op, training goes on with the eager losses (CPU: the capture
    is made to fail, and the runner is told the CPU takes graphs)."""
    calls = []

    def failing_capture(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(ViewLossRunner, "graphs_on", lambda self, device: self.runner == "cuda-graph")
    monkeypatch.setattr(ViewLossRunner, "_capture", staticmethod(failing_capture))
    maps = _view_maps("labelled", torch.device("cpu"), seed=2)
    ssim = SSIM(data_range=1.0, channel=3)
    runner = ViewLossRunner("cuda-graph")
    with pytest.warns(UserWarning, match=r"not as CUDA graphs \(a capture failed: operation not permitted [^\n]*\)"):
        torch.manual_seed(3)
        got = runner(SETTINGS, ssim, maps, semantic=True)
    torch.manual_seed(3)
    expected = view_losses(SETTINGS, ssim, {name: map_ for name, map_ in maps.items() if map_ is not None}, True)
    assert runner.runner == "eager" and runner.num_graphs == 0 and len(calls) == 1
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    runner(SETTINGS, ssim, maps, semantic=True)  # eager from now on: no second attempt
    assert len(calls) == 1


def test_captures_let_other_threads_use_the_gpu_where_torch_allows():
    """The viewer renders in its own thread while training captures: thread-local capture errors where torch's
    ``make_graphed_callables`` takes the mode, and only arguments it takes."""
    parameters = inspect.signature(torch.cuda.make_graphed_callables).parameters
    options = capture_options()
    assert set(options) <= set(parameters)
    if "capture_error_mode" in parameters:
        assert options == {"capture_error_mode": "thread_local"}


def test_views_of_too_many_shapes_make_the_runner_give_up_graphs(monkeypatch):
    """Captures pay only when view shapes repeat: past ``max_captures`` the runner warns and runs eagerly (CPU: the
    runner is told the CPU takes graphs, and a capture returns the eager function, counted)."""
    captured = []

    def counted_capture(settings, ssim, names, tensors, semantic, photometric):
        captured.append(tuple(tensors[0].shape[:2]))
        return lambda *inputs: view_losses(settings, ssim, dict(zip(names, inputs)), semantic, photometric)

    monkeypatch.setattr(ViewLossRunner, "graphs_on", lambda self, device: self.runner == "cuda-graph")
    monkeypatch.setattr(ViewLossRunner, "_capture", staticmethod(counted_capture))
    ssim = SSIM(data_range=1.0, channel=3)
    runner = ViewLossRunner("cuda-graph", max_graphs=2, max_captures=3)
    for size in ((32, 32), (32, 32), (40, 32), (32, 32)):  # the second and fourth views replay
        runner(SETTINGS, ssim, _view_maps("labelled", torch.device("cpu"), 0, size=size), semantic=True)
    assert captured == [(32, 32), (40, 32)] and runner.num_graphs == 2
    runner(SETTINGS, ssim, _view_maps("labelled", torch.device("cpu"), 0, size=(48, 32)), semantic=True)
    assert captured[-1] == (48, 32) and runner.num_graphs == 2  # the least recently used, (40, 32), went
    assert runner.runner == "cuda-graph"
    with pytest.warns(UserWarning, match=r"not as CUDA graphs \(the views came in so many shapes that 3 graphs"):
        # (40, 32) again: it would be a fourth capture
        losses = runner(SETTINGS, ssim, _view_maps("labelled", torch.device("cpu"), 0, size=(40, 32)), semantic=True)
    assert runner.runner == "eager" and runner.num_graphs == 0 and len(captured) == 3
    assert torch.isfinite(torch.stack(list(losses.values()))).all()
