"""The pure-PyTorch rasterizer against a dense brute-force reference (CPU) and gsplat's CUDA kernels (GPU).

The reference below is written from the documented contract, independently of the implementation:
every Gaussian is evaluated at every pixel and composited in a plain front-to-back loop.
"""

from __future__ import annotations

import math
from typing import Dict, List, Literal, Optional, Tuple, TypedDict, Union

import pytest
import torch

from semsplat_ns.model.rasterize import rasterization, spherical_harmonics
from semsplat_ns.model.torch_rasterizer import (
    RasterizationInputError,
    rasterization_torch,
    spherical_harmonics_torch,
)

TILE = 16

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]


class Scene(TypedDict):
    """The inputs of one rasterization call, as keyword arguments of ``rasterization_torch``."""

    means: torch.Tensor
    """Centres [N, 3]."""
    quats: torch.Tensor
    """Rotations, not normalised [N, 4]."""
    scales: torch.Tensor
    """Axis scales [N, 3]."""
    opacities: torch.Tensor
    """Opacities [N]."""
    colors: torch.Tensor
    """Features [N, D] or per camera [C, N, D] (or SH coefficients [N, K, 3])."""
    viewmats: torch.Tensor
    """World-to-camera matrices [C, 4, 4]."""
    Ks: torch.Tensor
    """Intrinsics [C, 3, 3]."""
    width: int
    """Image width, pixels."""
    height: int
    """Image height, pixels."""


# --------------------------------------------------------------------------------------------
# scenes
# --------------------------------------------------------------------------------------------
def look_at_viewmat(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World-to-camera matrix of an OpenCV camera at ``eye`` looking at ``target``. [4, 4]"""
    forward = torch.nn.functional.normalize(target - eye, dim=0)  # [3]
    right = torch.nn.functional.normalize(
        torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype)), dim=0
    )
    down = torch.linalg.cross(forward, right)  # [3]
    rotation = torch.stack([right, down, forward])  # [3, 3] rows: camera axes in world
    viewmat = torch.eye(4, dtype=eye.dtype)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat


def make_scene(
    seed: int, n: int, cameras: int, channels: int, width: int, height: int, dtype: torch.dtype = torch.float64
) -> Scene:
    """Random Gaussians around the origin, seen by cameras on a circle; a few are culled on purpose."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen) - 0.5) * 1.6  # [N, 3]
    quats = torch.randn(n, 4, generator=gen)  # [N, 4]
    scales = torch.exp(torch.rand(n, 3, generator=gen) * 2.2 - 3.6)  # [N, 3] ~ 0.03 .. 0.25
    opacities = torch.rand(n, generator=gen) * 0.9 + 0.05  # [N]
    # three opaque, overlapping Gaussians at the centre drive transmittance to the 1e-4 stop
    opacities[:3] = 1.0
    means[:3] = (torch.rand(3, 3, generator=gen) - 0.5) * 0.1
    scales[:3] = 0.12
    colors = torch.rand(n, channels, generator=gen)  # [N, D]
    means[-1] = torch.tensor([0.0, 0.0, 30.0])  # behind / far from every camera
    viewmat_list: List[torch.Tensor] = []
    K_list: List[torch.Tensor] = []
    for c in range(cameras):
        angle = 2 * math.pi * c / cameras + 0.3
        eye = torch.tensor([3.0 * math.cos(angle), 3.0 * math.sin(angle), 1.0])
        viewmat_list.append(look_at_viewmat(eye, torch.zeros(3)))
        focal = 1.1 * width
        K_list.append(torch.tensor([[focal, 0, width / 2 + c], [0, focal * 1.05, height / 2 - c], [0, 0, 1]]))
    viewmats = torch.stack(viewmat_list)  # [C, 4, 4]
    Ks = torch.stack(K_list)  # [C, 3, 3]
    # a Gaussian far outside the first camera's view (off screen)
    means[-2] = -viewmats[0, :3, :3].T @ viewmats[0, :3, 3] + viewmats[0, :3, :3].T @ torch.tensor([40.0, 0.0, 2.0])
    cast = lambda t: t.to(dtype)  # noqa: E731
    return Scene(
        means=cast(means),
        quats=cast(quats),
        scales=cast(scales),
        opacities=cast(opacities),
        colors=cast(colors),
        viewmats=cast(viewmats),
        Ks=cast(Ks),
        width=width,
        height=height,
    )


# --------------------------------------------------------------------------------------------
# dense brute-force reference
# --------------------------------------------------------------------------------------------
def reference_rasterization(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    backgrounds: Optional[torch.Tensor] = None,
    render_mode: RenderMode = "RGB",
    antialiased: bool = False,
    packed: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], List[Dict[int, torch.Tensor]], torch.Tensor]:
    """Dense reference (gsplat 1.4's packed kernel floors the radius discriminant at 0.1, not 0.01).

    Returns colours [C,H,W,X], alphas [C,H,W,1], means2d [C,N,2], per-pixel means2d copies, radii.
    """
    num_cameras, n = viewmats.shape[0], means.shape[0]
    # rotation of a unit quaternion: R = I + 2 w [v]x + 2 [v]x^2
    unit = quats / quats.norm(dim=-1, keepdim=True)  # [N, 4]
    w, v = unit[:, 0], unit[:, 1:]  # [N], [N, 3]
    cross = torch.zeros(n, 3, 3, dtype=means.dtype)  # [N, 3, 3]
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    cross = cross - cross.transpose(1, 2)
    rot = torch.eye(3, dtype=means.dtype) + 2 * w[:, None, None] * cross + 2 * cross @ cross  # [N, 3, 3]
    covar3d = rot @ torch.diag_embed(scales**2) @ rot.transpose(1, 2)  # [N, 3, 3]

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).to(means.dtype) + 0.5  # [P, 2]
    tiles = torch.stack([xs.reshape(-1) // TILE, ys.reshape(-1) // TILE], -1)  # [P, 2]

    images: List[torch.Tensor] = []
    alphas: List[torch.Tensor] = []
    all_means2d: List[torch.Tensor] = []
    copies: List[Dict[int, torch.Tensor]] = []
    all_radii: List[torch.Tensor] = []
    for c in range(num_cameras):
        rotation, translation = viewmats[c, :3, :3], viewmats[c, :3, 3]
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        cam_means = means @ rotation.T + translation  # [N, 3]
        cam_cov = rotation @ covar3d @ rotation.T  # [N, 3, 3]
        x, y, z = cam_means.unbind(-1)
        lim_x = (-(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
        lim_y = (-(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy)
        jac = torch.zeros(n, 2, 3, dtype=means.dtype)  # [N, 2, 3]
        jac[:, 0, 0], jac[:, 1, 1] = fx / z, fy / z
        jac[:, 0, 2] = -fx * torch.clamp(x / z, *lim_x) / z
        jac[:, 1, 2] = -fy * torch.clamp(y / z, *lim_y) / z
        cov2d = jac @ cam_cov @ jac.transpose(1, 2)  # [N, 2, 2]
        blurred = cov2d + eps2d * torch.eye(2, dtype=means.dtype)  # [N, 2, 2]
        conic = torch.linalg.inv(blurred)  # [N, 2, 2]
        opac = opacities
        if antialiased:
            opac = opacities * torch.sqrt(torch.linalg.det(cov2d) / torch.linalg.det(blurred))
        means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)  # [N, 2]
        means2d.retain_grad()
        all_means2d.append(means2d)
        with torch.no_grad():
            det = torch.linalg.det(blurred)
            half_trace = 0.5 * (blurred[:, 0, 0] + blurred[:, 1, 1])
            floor = 0.1 if packed else 0.01
            radius = torch.ceil(3 * torch.sqrt(half_trace + torch.sqrt(torch.clamp(half_trace**2 - det, min=floor))))
            visible = (
                (z >= near_plane)
                & (z <= far_plane)
                & (det > 0)
                & (means2d[:, 0] + radius > 0)
                & (means2d[:, 0] - radius < width)
                & (means2d[:, 1] + radius > 0)
                & (means2d[:, 1] - radius < height)
            )
            radius = torch.where(visible, radius, torch.zeros_like(radius))
        all_radii.append(radius.int())
        feats = colors if colors.dim() == 2 else colors[c]  # [N, D]
        if render_mode in ("RGB+D", "RGB+ED"):
            feats = torch.cat([feats, z[:, None]], -1)
        elif render_mode in ("D", "ED"):
            feats = z[:, None]
        transmit = torch.ones(len(centres), dtype=means.dtype)  # [P]
        out = torch.zeros(len(centres), feats.shape[1], dtype=means.dtype)  # [P, X]
        done = torch.zeros(len(centres), dtype=torch.bool)  # [P]
        camera_copies: Dict[int, torch.Tensor] = {}
        for g in sorted(torch.nonzero(visible).flatten().tolist(), key=lambda i: (z[i].item(), i)):
            per_pixel = means2d[g].expand(len(centres), 2).clone()  # [P, 2]
            per_pixel.retain_grad()
            camera_copies[g] = per_pixel
            delta = per_pixel - centres  # [P, 2]
            sigma = 0.5 * torch.einsum("pi,ij,pj->p", delta, conic[g], delta)  # [P]
            alpha = torch.clamp(opac[g] * torch.exp(-sigma), max=0.999)  # [P]
            tile_lo = torch.floor((means2d[g].detach() - radius[g]) / TILE)  # [2]
            tile_hi = torch.ceil((means2d[g].detach() + radius[g]) / TILE)  # [2]
            in_tiles = ((tiles >= tile_lo) & (tiles < tile_hi)).all(-1)  # [P]
            active = in_tiles & (sigma >= 0) & (alpha >= 1 / 255) & ~done
            next_transmit = transmit * (1 - alpha)
            stop = active & (next_transmit <= 1e-4)
            done = done | stop
            use = active & ~stop
            out = out + torch.where(use, alpha * transmit, torch.zeros_like(alpha))[:, None] * feats[g]
            transmit = torch.where(use, next_transmit, transmit)
        copies.append(camera_copies)
        if backgrounds is not None:
            background = backgrounds[c] if render_mode in ("RGB", "RGB+D", "RGB+ED") else torch.zeros(1)
            if render_mode in ("RGB+D", "RGB+ED"):
                background = torch.cat([background, torch.zeros(1, dtype=means.dtype)])
            out = out + transmit[:, None] * background
        alpha_img = (1 - transmit)[:, None]
        if render_mode in ("ED", "RGB+ED"):
            out = torch.cat([out[:, :-1], out[:, -1:] / alpha_img.clamp(min=1e-10)], -1)
        images.append(out.reshape(height, width, -1))
        alphas.append(alpha_img.reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas), all_means2d, copies, torch.stack(all_radii)


def weighted_loss(colors: torch.Tensor, alphas: torch.Tensor, seed: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    weights_c = torch.randn(colors.shape, generator=gen, dtype=colors.dtype)
    weights_a = torch.randn(alphas.shape, generator=gen, dtype=alphas.dtype)
    return (colors * weights_c).sum() + (alphas * weights_a).sum()


def leaves(scene: Scene, device: Union[str, torch.device, None] = None) -> Scene:
    """A copy of ``scene`` (on ``device``, default its own) whose per-Gaussian inputs are fresh leaf tensors
    that collect gradients."""
    device = device if device is not None else scene["means"].device
    copy = scene.copy()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        copy[name] = scene[name].detach().to(device).clone().requires_grad_(True)
    for name in ("viewmats", "Ks"):
        copy[name] = scene[name].to(device)
    return copy


def grad_of(tensor: torch.Tensor) -> torch.Tensor:
    """The gradient that a backward pass left on ``tensor``; fails the test when none reached it."""
    assert tensor.grad is not None, "no gradient reached this tensor"
    return tensor.grad


# --------------------------------------------------------------------------------------------
# CPU tests
# --------------------------------------------------------------------------------------------
CONFIGS = [
    # seed, N, C, D, W, H, render_mode, backgrounds, per-camera colours, packed, antialiased
    (0, 40, 2, 3, 40, 28, "RGB", True, False, False, False),
    (1, 40, 3, 19, 33, 20, "RGB+ED", True, True, True, False),
    (2, 30, 2, 3, 24, 36, "D", False, False, False, True),
    (3, 60, 1, 4, 48, 32, "RGB+D", True, False, True, True),
]


@pytest.mark.parametrize("seed,n,cams,dim,width,height,mode,with_bg,per_camera,packed,antialiased", CONFIGS)
def test_values_and_gradients_match_dense_reference(
    seed, n, cams, dim, width, height, mode, with_bg, per_camera, packed, antialiased
):
    scene = make_scene(seed, n, cams, dim, width, height)
    if per_camera:
        gen = torch.Generator().manual_seed(seed + 100)
        scene["colors"] = torch.rand(cams, n, dim, generator=gen, dtype=torch.float64)
    backgrounds = torch.rand(cams, dim, dtype=torch.float64) if with_bg else None

    ours = leaves(scene)
    bg_ours = backgrounds.clone().requires_grad_(True) if backgrounds is not None else None
    colors, alphas, info = rasterization_torch(
        **ours,
        backgrounds=bg_ours,
        render_mode=mode,
        packed=packed,
        absgrad=True,
        rasterize_mode="antialiased" if antialiased else "classic",
    )
    info["means2d"].retain_grad()
    weighted_loss(colors, alphas).backward()

    ref = leaves(scene)
    bg_ref = backgrounds.clone().requires_grad_(True) if backgrounds is not None else None
    ref_colors, ref_alphas, ref_means2d, ref_copies, ref_radii = reference_rasterization(
        **ref, backgrounds=bg_ref, render_mode=mode, antialiased=antialiased, packed=packed
    )
    weighted_loss(ref_colors, ref_alphas).backward()

    expected_channels = {"RGB": dim, "D": 1, "ED": 1, "RGB+D": dim + 1, "RGB+ED": dim + 1}[mode]
    assert colors.shape == (cams, height, width, expected_channels)
    assert alphas.shape == (cams, height, width, 1)
    assert (ref_alphas > 0.5).any(), "the scene must cover part of the image"
    assert torch.allclose(alphas, ref_alphas, atol=1e-9), (alphas - ref_alphas).abs().max()
    assert torch.allclose(colors, ref_colors, atol=1e-8), (colors - ref_colors).abs().max()
    rendered = ("means", "quats", "scales", "opacities") + (() if mode in ("D", "ED") else ("colors",))
    for name in rendered:
        grad, ref_grad = grad_of(ours[name]), grad_of(ref[name])
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, ref_grad, atol=1e-7, rtol=1e-6), (name, (grad - ref_grad).abs().max())
    if bg_ours is not None and bg_ref is not None:
        assert torch.allclose(grad_of(bg_ours), grad_of(bg_ref), atol=1e-8)

    # radii, means2d.grad and absgrad, per (camera, Gaussian)
    radii = info["radii"]
    dense_grad = torch.zeros(cams, n, 2, dtype=torch.float64)
    dense_abs = torch.zeros(cams, n, 2, dtype=torch.float64)
    if packed:
        dense_radii = torch.zeros(cams, n, dtype=torch.int32)
        dense_radii[info["camera_ids"], info["gaussian_ids"]] = radii
        dense_grad[info["camera_ids"], info["gaussian_ids"]] = info["means2d"].grad
        dense_abs[info["camera_ids"], info["gaussian_ids"]] = info["means2d"].absgrad
    else:
        dense_radii, dense_grad, dense_abs = radii, info["means2d"].grad, info["means2d"].absgrad
    assert torch.equal(dense_radii, ref_radii)
    assert (dense_radii[:, -1] == 0).all(), "the Gaussian behind the cameras must be culled"
    assert dense_radii[0, -2] == 0, "the off-screen Gaussian must be culled"
    ref_grad = torch.stack([grad_of(m) for m in ref_means2d])  # [C, N, 2]
    ref_abs = torch.zeros(cams, n, 2, dtype=torch.float64)
    for c, per_camera_copies in enumerate(ref_copies):
        for g, copy in per_camera_copies.items():
            ref_abs[c, g] = grad_of(copy).abs().sum(0)
    assert torch.allclose(dense_grad, ref_grad, atol=1e-8, rtol=1e-6)
    assert torch.allclose(dense_abs, ref_abs, atol=1e-8, rtol=1e-6)
    assert (dense_abs >= dense_grad.abs() - 1e-12).all()


def test_info_contract_and_packed_layout():
    scene = make_scene(5, 50, 2, 5, 36, 30, dtype=torch.float32)
    dense_colors, dense_alphas, dense = rasterization_torch(**scene, packed=False)
    packed_colors, packed_alphas, packed = rasterization_torch(**scene, packed=True)
    # packed radii may be a pixel larger (gsplat's packed kernel), reaching a little more of a tile border
    assert (packed_colors - dense_colors).abs().max() < 0.05 and (packed_alphas - dense_alphas).abs().mean() < 1e-3

    assert dense["camera_ids"] is None and dense["gaussian_ids"] is None
    assert dense["radii"].shape == (2, 50) and dense["radii"].dtype == torch.int32
    assert dense["means2d"].shape == (2, 50, 2) and dense["conics"].shape == (2, 50, 3)
    assert dense["depths"].shape == (2, 50) and dense["opacities"].shape == (2, 50)
    assert (dense["width"], dense["height"], dense["n_cameras"], dense["tile_size"]) == (36, 30, 2, 16)
    visible = dense["radii"] > 0
    assert 0 < visible.sum() < 100
    assert (dense["depths"][visible] > 0).all()
    # every visible centre's radius box reaches the image
    m2d, r = dense["means2d"][visible], dense["radii"][visible]
    assert ((m2d[:, 0] + r > 0) & (m2d[:, 0] - r < 36) & (m2d[:, 1] + r > 0) & (m2d[:, 1] - r < 30)).all()

    nnz = len(packed["camera_ids"])
    assert packed["gaussian_ids"].shape == (nnz,) and packed["radii"].shape == (nnz,)
    cam, gid = packed["camera_ids"], packed["gaussian_ids"]
    assert nnz >= int(visible.sum()) and visible.sum() == visible[cam, gid].sum(), "packed keeps every visible one"
    assert (packed["radii"] >= dense["radii"][cam, gid]).all() and (packed["radii"] > 0).all()
    cam, gid = cam[visible[cam, gid]], gid[visible[cam, gid]]
    in_both = visible[packed["camera_ids"], packed["gaussian_ids"]]
    assert torch.equal(packed["means2d"][in_both], dense["means2d"][cam, gid])
    assert torch.equal(packed["conics"][in_both], dense["conics"][cam, gid])
    assert torch.equal(packed["opacities"][in_both], dense["opacities"][cam, gid])
    order = packed["camera_ids"] * 50 + packed["gaussian_ids"]
    assert (order[1:] > order[:-1]).all(), "packed order is camera-major"


def test_default_strategy_reads_cpu_info():
    from gsplat.strategy import DefaultStrategy

    scene = make_scene(6, 30, 1, 3, 32, 32, dtype=torch.float32)
    params = torch.nn.ParameterDict(
        {k: torch.nn.Parameter(scene[k].clone()) for k in ("means", "quats", "scales", "opacities", "colors")}
    )
    optimizers: Dict[str, torch.optim.Optimizer] = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    for absgrad in (False, True):
        strategy = DefaultStrategy(absgrad=absgrad, refine_start_iter=100)
        strategy.check_sanity(params, optimizers)
        state = strategy.initialize_state()
        colors, alphas, info = rasterization_torch(
            params["means"],
            params["quats"],
            params["scales"],
            params["opacities"],
            params["colors"],
            scene["viewmats"],
            scene["Ks"],
            32,
            32,
            packed=False,
            absgrad=absgrad,
        )
        strategy.step_pre_backward(params, optimizers, state, 1, info)
        weighted_loss(colors, alphas).backward()
        strategy.step_post_backward(params, optimizers, state, 1, info, packed=False)
        seen = info["radii"][0] > 0
        assert (state["count"][seen] == 1).all() and (state["count"][~seen] == 0).all()
        assert (state["grad2d"][seen] > 0).any() and (state["grad2d"][~seen] == 0).all()
        for p in params.values():
            p.grad = None


def direct_sh(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Real SH of 3DGS (Kerbl et al., ``utils/sh_utils.eval_sh``) with the constants spelled out."""
    x, y, z = torch.nn.functional.normalize(dirs, dim=-1).unbind(-1)
    basis = [torch.full_like(x, 0.28209479177387814)]
    if degree >= 1:
        basis += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
    if degree >= 2:
        basis += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (2 * z * z - x * x - y * y),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (x * x - y * y),
        ]
    if degree >= 3:
        basis += [
            -0.5900435899266435 * y * (3 * x * x - y * y),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (4 * z * z - x * x - y * y),
            0.3731763325901154 * z * (2 * z * z - 3 * x * x - 3 * y * y),
            -0.4570457994644658 * x * (4 * z * z - x * x - y * y),
            1.445305721320277 * z * (x * x - y * y),
            -0.5900435899266435 * x * (x * x - 3 * y * y),
        ]
    return torch.stack([b[..., None] * coeffs[..., i, :] for i, b in enumerate(basis)]).sum(0)  # [..., 3]


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_match_direct_formula(degree):
    gen = torch.Generator().manual_seed(degree)
    dirs = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 3
    coeffs = torch.randn(64, 16, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(spherical_harmonics(degree, dirs, coeffs), direct_sh(degree, dirs, coeffs), atol=1e-12)
    # degree 4 against gsplat's own PyTorch version (pure torch, no kernels)
    if degree == 3:
        from gsplat.cuda._torch_impl import _spherical_harmonics

        coeffs25 = torch.randn(64, 25, 3, generator=gen, dtype=torch.float64)
        for d in range(5):
            assert torch.allclose(spherical_harmonics_torch(d, dirs, coeffs25), _spherical_harmonics(d, dirs, coeffs25))
    masks = torch.arange(64) % 2 == 0
    masked = spherical_harmonics_torch(degree, dirs, coeffs, masks=masks)
    assert (masked[~masks] == 0).all()


def test_sh_colours_render_like_precomputed_colours():
    scene = make_scene(8, 30, 2, 3, 32, 24)
    gen = torch.Generator().manual_seed(8)
    coeffs = torch.randn(30, 16, 3, generator=gen, dtype=torch.float64) * 0.5
    sh_scene: Scene = {**scene, "colors": coeffs}
    sh_colors, sh_alphas, _ = rasterization_torch(**sh_scene, sh_degree=3, packed=False)
    camera_centres = torch.linalg.inv(scene["viewmats"])[:, :3, 3]  # [C, 3]
    dirs = scene["means"][None] - camera_centres[:, None]  # [C, N, 3]
    direct = torch.clamp_min(direct_sh(3, dirs, coeffs.expand(2, -1, -1, -1)) + 0.5, 0.0)  # [C, N, 3]
    rgb_scene: Scene = {**scene, "colors": direct}
    rgb_colors, rgb_alphas, _ = rasterization_torch(**rgb_scene, packed=False)
    assert torch.allclose(sh_colors, rgb_colors, atol=1e-12) and torch.equal(sh_alphas, rgb_alphas)


def test_empty_and_all_culled_scenes_give_background():
    scene = make_scene(9, 10, 2, 3, 20, 16)
    backgrounds = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64, requires_grad=True)
    no_gaussians = scene.copy()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        no_gaussians[name] = scene[name][:0]
    # (inputs, far plane): no Gaussian at all; every Gaussian beyond the far plane (the cameras are ~3 units away)
    for case, far_plane in ((no_gaussians, 1e10), (scene, 0.5)):
        colors, alphas, info = rasterization_torch(
            **case, far_plane=far_plane, backgrounds=backgrounds, render_mode="RGB+ED"
        )
        assert colors.shape == (2, 16, 20, 4)
        assert torch.equal(colors[..., :3], backgrounds[:, None, None, :].expand(-1, 16, 20, -1))
        assert (colors[..., 3] == 0).all() and (alphas == 0).all()
        assert int((info["radii"] > 0).sum()) == 0
        colors[..., :3].sum().backward()
        assert torch.equal(grad_of(backgrounds), torch.full((2, 3), 320.0, dtype=torch.float64))
        backgrounds.grad = None


def test_bad_input_raises_one_clear_error():
    scene = make_scene(10, 8, 1, 3, 16, 16)
    with pytest.raises(RasterizationInputError, match="camera_model 'fisheye'"):
        rasterization_torch(**scene, camera_model="fisheye")
    with pytest.raises(ValueError, match="colors must be"):
        rasterization_torch(**{**scene, "colors": scene["colors"][:5]})
    with pytest.raises(ValueError, match="render_mode"):
        # Deliberately outside the Literal: the run-time check is what this test is about.
        rasterization_torch(**scene, render_mode="RGBD")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="sh_degree 3 needs"):
        rasterization_torch(**{**scene, "colors": torch.rand(8, 4, 3, dtype=torch.float64)}, sh_degree=3)
    with pytest.raises(ValueError, match="backgrounds must be"):
        rasterization_torch(**scene, backgrounds=torch.zeros(1, 4, dtype=torch.float64))


def test_dispatch_uses_torch_on_cpu():
    scene = make_scene(11, 20, 1, 6, 24, 24, dtype=torch.float32)
    colors, alphas, info = rasterization(**scene, packed=False)
    expected_colors, expected_alphas, _ = rasterization_torch(**scene, packed=False)
    assert torch.equal(colors, expected_colors) and torch.equal(alphas, expected_alphas)
    assert info["means2d"].device.type == "cpu"


# --------------------------------------------------------------------------------------------
# GPU parity with gsplat's CUDA kernels
# --------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and gsplat's kernels")
@pytest.mark.parametrize("mode,dim,packed", [("RGB", 3, False), ("RGB+ED", 19, False), ("RGB", 16, True)])
def test_parity_with_gsplat_cuda(mode, dim, packed):
    from gsplat.rendering import rasterization as gsplat_rasterization

    scene = make_scene(12, 300, 2, dim, 64, 48, dtype=torch.float32)
    backgrounds = torch.rand(2, dim)
    results = {}
    for device in ("cpu", "cuda"):
        inputs = leaves(scene, device)
        render = rasterization_torch if device == "cpu" else gsplat_rasterization
        colors, alphas, info = render(
            **inputs, backgrounds=backgrounds.to(device), render_mode=mode, packed=packed, absgrad=True
        )
        info["means2d"].retain_grad()
        weighted_loss(colors.cpu(), alphas.cpu()).backward()
        results[device] = dict(
            colors=colors.detach().cpu(),
            alphas=alphas.detach().cpu(),
            radii=info["radii"].cpu(),
            means2d_grad=grad_of(info["means2d"]).cpu(),
            absgrad=info["means2d"].absgrad.cpu(),
            means_grad=grad_of(inputs["means"]).cpu(),
            quats_grad=grad_of(inputs["quats"]).cpu(),
            scales_grad=grad_of(inputs["scales"]).cpu(),
            opacities_grad=grad_of(inputs["opacities"]).cpu(),
            colors_grad=grad_of(inputs["colors"]).cpu(),
        )
    cpu, gpu = results["cpu"], results["cuda"]
    assert torch.equal(cpu["radii"], gpu["radii"])
    diffs = {k: (cpu[k].float() - gpu[k].float()).abs().max().item() for k in cpu if k != "radii"}
    scale = {k: max(gpu[k].float().abs().max().item(), 1e-6) for k in cpu if k != "radii"}
    print("max abs diff (cpu torch vs gsplat cuda):", {k: f"{v:.2e} / {scale[k]:.2e}" for k, v in diffs.items()})
    assert diffs["alphas"] < 2e-3 and diffs["colors"] < 2e-3 * max(1.0, scale["colors"])
    for k in diffs:
        if k.endswith("grad"):
            assert diffs[k] <= 2e-2 * scale[k], (k, diffs[k], scale[k])
