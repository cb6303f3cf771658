"""``semsplat-export``: trained semantic Gaussians as PLY files.

- ``gaussians.ply``: a 3DGS-compatible splat file (positions, SH colour, opacity, scales, rotations,
  in the training frame as ``ns-export gaussian-splat`` writes it) plus per-Gaussian ``class_id``,
  ``class_red/green/blue`` and ``class_confidence`` (viewers ignore unknown properties).
- ``semantic_points.ply``: positions in the INPUT world frame (an IRT scene's pose frame; a capture's own frame,
  i.e. COLMAP's world frame, nerfstudio's orientation, centring, scale and ns-process-data's
  ``applied_transform`` undone) coloured by class, with ``class_id`` and ``class_confidence``.
- ``transform.json``: the dataparser transform and scale that map the input frame to the training frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import tyro
from rich.console import Console

from semsplat_ns.atomic import atomic_open, write_json_atomic
from semsplat_ns.errors import exit_on_user_error
from semsplat_ns.scripts import import_nerfstudio_method_registry

CONSOLE = Console()
PROG = "semsplat-export"


def write_ply(path: Path, columns: Dict[str, np.ndarray]) -> None:
    """Writes a binary little-endian PLY of one vertex element, atomically.

    Args:
        path: Destination file.
        columns: Property name -> [N] array (float32 or uint8), in file order.
    """
    names = list(columns)
    count = len(next(iter(columns.values()))) if columns else 0
    types = {np.dtype(np.float32): "float", np.dtype(np.uint8): "uchar", np.dtype(np.int32): "int"}
    dtype = np.dtype([(name, columns[name].dtype.newbyteorder("<")) for name in names])
    records = np.empty(count, dtype=dtype)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    for name in names:
        records[name] = columns[name]
        header.append(f"property {types[columns[name].dtype]} {name}")
    header.append("end_header")
    with atomic_open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(records.tobytes())


@torch.no_grad()
def gaussian_classes(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Class id [N] and confidence [N] of each Gaussian: the transfer head applied to its own feature."""
    probs = torch.softmax(model.transfer_head(model.semantic_features), dim=-1)  # [N, C]
    confidence, class_id = probs.max(dim=-1)
    return class_id, confidence


@torch.no_grad()
def export_model(model, dataparser_transform: torch.Tensor, dataparser_scale: float, output_dir: Path) -> dict:
    """Writes gaussians.ply, semantic_points.ply and transform.json for a SemSplatModel.

    Args:
        model: The trained model.
        dataparser_transform: [3, 4] input-world -> training frame (before scaling).
        dataparser_scale: Scale applied after the transform.
        output_dir: Destination folder.
    """
    class_id, confidence = gaussian_classes(model)
    class_colors = (model.class_colors.cpu() * 255).round().to(torch.uint8)  # [C, 3]
    colours = class_colors[class_id.cpu()].numpy()  # [N, 3]
    means = model.means.detach().cpu().float()  # [N, 3]
    count = means.shape[0]
    columns: Dict[str, np.ndarray] = {"x": means[:, 0].numpy(), "y": means[:, 1].numpy(), "z": means[:, 2].numpy()}
    for axis in ("nx", "ny", "nz"):
        columns[axis] = np.zeros(count, dtype=np.float32)
    if model.config.sh_degree > 0:
        features_dc = model.features_dc.detach().cpu()  # [N, 3]
    else:  # colour-only models store logits of RGB; 3DGS files hold SH DC
        from nerfstudio.models.splatfacto import RGB2SH

        features_dc = RGB2SH(torch.sigmoid(model.features_dc.detach().cpu()))
    for i in range(3):
        columns[f"f_dc_{i}"] = features_dc[:, i].contiguous().numpy().astype(np.float32)
    if model.config.sh_degree > 0:
        rest = model.features_rest.detach().cpu().transpose(1, 2).reshape(count, -1)  # [N, 3*(K-1)], channel-major
        for i in range(rest.shape[1]):
            columns[f"f_rest_{i}"] = rest[:, i].contiguous().numpy().astype(np.float32)
    columns["opacity"] = model.opacities.detach().cpu()[:, 0].numpy().astype(np.float32)
    scales = model.scales.detach().cpu()
    quats = model.quats.detach().cpu()
    for i in range(3):
        columns[f"scale_{i}"] = scales[:, i].contiguous().numpy().astype(np.float32)
    for i in range(4):
        columns[f"rot_{i}"] = quats[:, i].contiguous().numpy().astype(np.float32)
    columns["class_id"] = class_id.cpu().numpy().astype(np.uint8)
    columns["class_red"], columns["class_green"], columns["class_blue"] = (colours[:, i].copy() for i in range(3))
    columns["class_confidence"] = confidence.cpu().numpy().astype(np.float32)
    write_ply(output_dir / "gaussians.ply", columns)

    # Back to the scene's own frame: x_train = scale * (A x + t)  =>  x = A^-1 (x_train / scale - t). A is a
    # rotation for nerfstudio's orientations (and ns-process-data's applied_transform); the exact inverse also
    # holds for any other invertible A. For a capture this is its COLMAP world frame.
    transform = dataparser_transform.cpu().double()  # [3, 4]
    to_input = torch.linalg.inv(transform[:, :3])  # [3, 3]
    world = ((means.double() / dataparser_scale - transform[:, 3]) @ to_input.T).float()  # [N, 3]
    write_ply(
        output_dir / "semantic_points.ply",
        {
            "x": world[:, 0].numpy(),
            "y": world[:, 1].numpy(),
            "z": world[:, 2].numpy(),
            "red": colours[:, 0].copy(),
            "green": colours[:, 1].copy(),
            "blue": colours[:, 2].copy(),
            "class_id": columns["class_id"],
            "class_confidence": columns["class_confidence"],
        },
    )
    summary = {
        "n_gaussians": int(count),
        "class_names": list(model.class_names),
        "class_counts": np.bincount(columns["class_id"], minlength=model.num_classes).tolist(),
        "dataparser_transform": transform.float().tolist(),
        "dataparser_scale": float(dataparser_scale),
    }
    write_json_atomic(output_dir / "transform.json", summary)
    return summary


@dataclass
class ExportArgs:
    """Export trained semantic Gaussians (3DGS PLY + labelled point cloud in the input frame)."""

    load_config: Path
    """config.yml of the training run."""
    output_dir: Optional[Path] = None
    """Destination folder; default: <run dir>/export."""


def run(args: ExportArgs) -> dict:
    """Loads the run of ``args.load_config`` and writes its PLY files and transform.json."""
    from semsplat_ns.eval.run_config import load_run

    _, pipeline, _, _ = load_run(args.load_config, "inference")
    # Typed as a torch Module by nerfstudio; it is the run's (full-image) datamanager.
    datamanager: Any = pipeline.datamanager
    outputs = datamanager.train_dataparser_outputs
    output_dir = args.output_dir or args.load_config.parent / "export"
    summary = export_model(pipeline.model, outputs.dataparser_transform, float(outputs.dataparser_scale), output_dir)
    CONSOLE.print(
        f"Exported {summary['n_gaussians']} Gaussians to [bold]{output_dir}[/bold] "
        "(gaussians.ply, semantic_points.ply, transform.json)"
    )
    return summary


def entrypoint() -> None:
    """Console entry point ``semsplat-export``."""
    args = tyro.cli(ExportArgs, prog=PROG)
    import_nerfstudio_method_registry()
    with exit_on_user_error(PROG):
        run(args)


if __name__ == "__main__":
    entrypoint()
