"""Host time of the transfer head applied before the loss graph (op by op) against inside it (replayed with it).

A stand-in for a training step's semantic part at 512²: 16 rendered features per pixel, the preset's head (16 -> 64
-> ReLU -> 20 classes), a cross-entropy over every pixel captured as a CUDA graph with
``torch.cuda.make_graphed_callables`` (as :class:`semsplat_ns.model.view_losses.ViewLossRunner` captures the losses).
``before``: the head's module runs eagerly and the graph takes its logits (what semsplat does); ``inside``: the graph
takes the features and the head's parameters and applies the head itself (``torch.func.functional_call``). Each
variant's forward + backward is timed on the host (no wait for the device but every tenth call), alternately, and the
gradients of both are checked equal. CUDA only.

Measured 2026-11-27 (one H100, ``head_in_graph.json``): 0.95 ms of host time before, 0.48 inside. Tried in training
(7c126c8: the loss graphs applied the head), four alternated before/after pairs of whole runs
(``step_trace_{before,after}[1-4]_r1.json``) showed no steady difference (after - before: +6.2, +0.4, -4.6, +6.1
steps/s), and on the faster machines the time saved turned into waiting at gsplat's per-step intersection count; the
change was taken back.

    python benchmarks/head_in_graph.py --out benchmarks/results/profile/head_in_graph.json
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import git_commit  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402

SIZE, FEATURES, HIDDEN, CLASSES = 512, 16, 64, 20


def host_us(step: Callable[[], None], calls: int) -> float:
    """Mean host microseconds of ``step`` (the device waited for before every tenth call)."""
    total = 0.0
    for index in range(calls + 50):
        if index % 10 == 0:
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if index >= 50:
            total += time.perf_counter() - started
    torch.cuda.synchronize()
    return 1e6 * total / calls


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs CUDA (the losses are captured as CUDA graphs)")
    device = torch.device("cuda")
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(inplace=True), nn.Linear(HIDDEN, CLASSES)).to(device)
    names = [name for name, _ in head.named_parameters()]
    labels = torch.randint(0, CLASSES, (SIZE * SIZE,), device=device)
    render = torch.randn(SIZE, SIZE, FEATURES, device=device, requires_grad=True)  # stands for the Gaussians

    def loss_of_logits(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, CLASSES), labels)

    def loss_of_features(features: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        return loss_of_logits(torch.func.functional_call(head, dict(zip(names, parameters)), (features,)))

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, requires_grad=True)

    graph_before: Callable[..., torch.Tensor] = torch.cuda.make_graphed_callables(  # type: ignore[assignment]
        loss_of_logits, (leaf(SIZE, SIZE, CLASSES),)
    )
    samples = (leaf(SIZE, SIZE, FEATURES), *[p.detach().clone().requires_grad_() for p in head.parameters()])
    graph_inside: Callable[..., torch.Tensor] = torch.cuda.make_graphed_callables(  # type: ignore[assignment]
        loss_of_features, samples
    )

    def before() -> None:
        graph_before(head(render * 1.0)).backward()  # render * 1.0: a non-leaf, as a rendered map

    def inside() -> None:
        graph_inside(render * 1.0, *head.parameters()).backward()

    def gradients(step: Callable[[], None]) -> list:
        head.zero_grad(set_to_none=True)
        render.grad = None
        step()
        return [p.grad.clone() for p in head.parameters()] + [render.grad.clone()]  # type: ignore[union-attr]

    same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(gradients(before), gradients(inside)))
    timings = {"before": [], "inside": []}
    for _ in range(args.rounds):
        for name, step in (("before", before), ("inside", inside)):
            timings[name].append(host_us(step, args.calls))
    row = dict(
        device=torch.cuda.get_device_name(),
        size=SIZE,
        head=f"{FEATURES}-{HIDDEN}-{CLASSES}",
        before_us=min(timings["before"]),
        inside_us=min(timings["inside"]),
        rounds=timings,
        same_gradients=same,
        date=datetime.date.today().isoformat(),
        commit=git_commit(),
    )
    print(row, flush=True)
    if args.out is not None:
        write_json_atomic(args.out, row, indent=1)


if __name__ == "__main__":
    main()
