"""Time of L3D's neighbour-pool kNN (``semsplat_ns.model.losses.knn_indices``) against other exact formulations, on
the device: M queries drawn from N points, k neighbours each, the query itself excluded.

Variants:
- ``cdist``: ``torch.cdist`` per block of queries, then ``topk`` (what ``knn_indices`` does);
- ``addmm``: squared distances less the query's own squared norm (constant along a row: the order is the same) as
  one matrix product with the points' squared norms as its bias, then ``topk``;
- ``knn_indices``: the library's function as it is now.

Each variant's ``recall`` is the share of its neighbours that are among the exact k nearest (float64 distances):
float32 products (TF32 where torch allows it) can swap near neighbours.

    python benchmarks/knn_speed.py --n 200000 --m 8192 --k 5 --out benchmarks/results/knn_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import device_name, git_commit  # noqa: E402
from semsplat_ns.atomic import write_json_atomic  # noqa: E402
from semsplat_ns.model.losses import knn_indices  # noqa: E402


def knn_cdist(queries, points, k, query_ids, chunk=1024):
    out = []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.cdist(queries[start : start + chunk], points)  # [m, N]
        dist.scatter_(1, query_ids[start : start + chunk, None], float("inf"))
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out, dim=0)


def knn_addmm(queries, points, k, query_ids, chunk=1024):
    sq_norms = points.pow(2).sum(-1)[None, :]  # [1, N]
    out = []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.addmm(sq_norms, queries[start : start + chunk], points.t(), alpha=-2.0)  # [m, N]
        dist.scatter_(1, query_ids[start : start + chunk, None], float("inf"))
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out, dim=0)


def knn_exact(queries, points, k, query_ids, chunk=256):
    """The exact k nearest (float64 differences, no matrix-product shortcut) [M, k]."""
    out = []
    points64 = points.double()
    for start in range(0, queries.shape[0], chunk):
        block = queries[start : start + chunk].double()  # [m, 3]
        dist = (block[:, None, :] - points64[None, :, :]).pow(2).sum(-1)  # [m, N]
        dist.scatter_(1, query_ids[start : start + chunk, None], float("inf"))
        out.append(dist.topk(k, dim=1, largest=False).indices)
    return torch.cat(out, dim=0)


VARIANTS: Dict[str, Callable] = {
    "cdist": knn_cdist,
    "addmm": knn_addmm,
    "knn_indices": lambda q, p, k, ids: knn_indices(q, p, k, query_ids=ids),
}


def time_ms(function: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``function`` (the device waited for after each call)."""
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - started))
    return sorted(times)[len(times) // 2]


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the found neighbours [M, k] that are among the exact ones [M, k]."""
    return (found[:, :, None] == exact[:, None, :]).any(dim=2).float().mean().item()


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--m", type=int, default=8192)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator(device="cpu").manual_seed(0)
    points = (torch.rand(args.n, 3, generator=generator) * 2 - 1).to(device)  # [N, 3] in a unit-scaled scene's box
    query_ids = torch.randperm(args.n, generator=generator)[: args.m].to(device)  # [M]
    queries = points[query_ids]  # [M, 3]
    exact = knn_exact(queries, points, args.k, query_ids)  # [M, k]
    row: Dict[str, object] = dict(
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        n=args.n,
        m=args.m,
        k=args.k,
        device=device_name(),
    )
    for name, variant in VARIANTS.items():
        share = recall(variant(queries, points, args.k, query_ids), exact)
        ms = time_ms(lambda: variant(queries, points, args.k, query_ids), args.repeats, device)
        row[f"{name}_ms"], row[f"{name}_recall"] = ms, share
        print(f"{name:14s} {ms:8.2f} ms  recall {share:.4f}", flush=True)
    row.update(date=datetime.date.today().isoformat(), commit=git_commit())
    if args.out is not None:
        write_json_atomic(args.out, row, indent=1)


if __name__ == "__main__":
    main()
