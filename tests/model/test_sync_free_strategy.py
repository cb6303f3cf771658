"""CappedDefaultStrategy's dense ``_update_state`` keeps the running state gsplat's DefaultStrategy keeps (CPU).

gsplat's version selects the visible (camera, Gaussian) pairs with ``torch.where`` and boolean masks (host syncs);
the override updates every pair with a fixed shape. Compared here on random gradients and radii, several calls in a
row, with and without AbsGS gradients and the 2D-scale state.
"""

from __future__ import annotations

from typing import Any, Dict

import pytest
import torch
from gsplat.strategy import DefaultStrategy

from semsplat_ns.model.strategy import CappedDefaultStrategy

N = 500
WIDTH, HEIGHT = 64, 48


def _params() -> Dict[str, torch.nn.Parameter]:
    return {name: torch.nn.Parameter(torch.zeros(N, width)) for name, width in (("means", 3), ("opacities", 1))}


def _info(cameras: int, seed: int) -> Dict[str, Any]:
    """A render's info after backward: gradients of the 2D means, radii with about a third 0 (unseen)."""
    generator = torch.Generator().manual_seed(seed)
    radii = torch.randint(1, 30, (cameras, N), generator=generator, dtype=torch.int32)  # [C, N]
    radii[torch.rand(cameras, N, generator=generator) < 0.35] = 0
    means2d = torch.zeros(cameras, N, 2, requires_grad=True)  # [C, N, 2]
    means2d.grad = torch.randn(cameras, N, 2, generator=generator) * 1e-3
    # what gsplat's backward adds with absgrad (an attribute torch's stubs do not know)
    means2d.absgrad = torch.rand(cameras, N, 2, generator=generator) * 1e-3  # pyright: ignore[reportAttributeAccessIssue]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "n_cameras": cameras,
        "radii": radii,
        "gaussian_ids": None,  # unpacked
        "means2d": means2d,
    }


@pytest.mark.parametrize("cameras", [1, 3])
@pytest.mark.parametrize("absgrad", [False, True])
@pytest.mark.parametrize("scale2d", [0, 4000])
def test_dense_update_keeps_gsplats_state(cameras: int, absgrad: bool, scale2d: int):
    ours = CappedDefaultStrategy(cap_max=N, absgrad=absgrad, refine_scale2d_stop_iter=scale2d)
    theirs = DefaultStrategy(absgrad=absgrad, refine_scale2d_stop_iter=scale2d)
    params = _params()
    our_state, their_state = ours.initialize_state(), theirs.initialize_state()
    assert (scale2d > 0) == ("radii" in our_state)
    previous_radii = torch.zeros(N)  # [N], the 2D-scale state before the call
    seen_once = torch.ones(N, dtype=torch.bool)  # [N]: no call yet had several cameras see the Gaussian
    for call in range(2):
        info = _info(cameras, seed=call)
        ours._update_state(params, our_state, info, packed=False)
        theirs._update_state(params, their_state, info, packed=False)
        assert torch.equal(our_state["count"], their_state["count"]), call
        if cameras == 1:  # the same additions in the same order: the same bits
            assert torch.equal(our_state["grad2d"], their_state["grad2d"]), call
        else:  # gsplat adds the cameras one by one, the override sums them first
            torch.testing.assert_close(our_state["grad2d"], their_state["grad2d"], rtol=1e-6, atol=1e-9)
        if scale2d == 0:
            assert "radii" not in our_state
            continue
        if cameras == 1:
            assert torch.equal(our_state["radii"], their_state["radii"]), call
        else:
            # gsplat's index assignment keeps one camera's radius of a Gaussian several see; the override the
            # largest (gsplat's comment: "should be ideally using scatter max")
            visible = info["radii"] > 0  # [C, N]
            normalised = info["radii"] / float(max(WIDTH, HEIGHT))  # [C, N]
            expected = torch.maximum(previous_radii, torch.where(visible, normalised, 0.0).amax(dim=0))  # [N]
            assert torch.equal(our_state["radii"], expected), call
            seen_once &= visible.sum(dim=0) <= 1  # [N]: here gsplat's value is the max too
            assert seen_once.any() and torch.equal(our_state["radii"][seen_once], their_state["radii"][seen_once])
        previous_radii = our_state["radii"].clone()


def test_state_is_created_lazily_and_updated_in_place():
    strategy = CappedDefaultStrategy(cap_max=N, refine_scale2d_stop_iter=10)
    state = strategy.initialize_state()
    assert state["grad2d"] is None and state["count"] is None and state["radii"] is None
    params = _params()
    strategy._update_state(params, state, _info(1, seed=0), packed=False)
    kept = {name: state[name] for name in ("grad2d", "count", "radii")}
    assert all(value.shape == (N,) and value.dtype == torch.float32 for value in kept.values())
    strategy._update_state(params, state, _info(1, seed=1), packed=False)
    assert all(state[name] is value for name, value in kept.items())  # the same tensors, updated
    assert float(kept["count"].max()) <= 2


def test_missing_info_keys_are_reported():
    strategy = CappedDefaultStrategy(cap_max=N)
    info = _info(1, seed=0)
    del info["n_cameras"]
    with pytest.raises(AssertionError, match="n_cameras"):
        strategy._update_state(_params(), strategy.initialize_state(), info, packed=False)


def test_packed_info_goes_to_gsplat():
    ours = CappedDefaultStrategy(cap_max=N, refine_scale2d_stop_iter=10)
    theirs = DefaultStrategy(refine_scale2d_stop_iter=10)
    info = _info(1, seed=2)
    visible = info["radii"] > 0  # [1, N]
    gaussian_ids = torch.nonzero(visible[0])[:, 0]  # [nnz]
    means2d = torch.zeros(len(gaussian_ids), 2, requires_grad=True)  # [nnz, 2]
    means2d.grad = info["means2d"].grad[visible]
    packed = {**info, "radii": info["radii"][visible], "gaussian_ids": gaussian_ids, "means2d": means2d}
    our_state, their_state = ours.initialize_state(), theirs.initialize_state()
    ours._update_state(_params(), our_state, packed, packed=True)
    theirs._update_state(_params(), their_state, packed, packed=True)
    for name in ("grad2d", "count", "radii"):
        assert torch.equal(our_state[name], their_state[name]), name
