"""semsplat's SSIM module gives pytorch_msssim's SSIM (splatfacto's loss and metric), values and gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from pytorch_msssim import SSIM as ReferenceSSIM

from semsplat_ns.model.ssim import SSIM

# square, non-square, and sides shorter than the 11-tap window (one or both, left unfiltered as pytorch_msssim does)
SHAPES = [(11, 11), (33, 33), (24, 57), (90, 40), (8, 30), (8, 8)]


def _value_and_gradient(module: torch.nn.Module, shape, seed: int):
    """SSIM of a photo against a render near it, passed as splatfacto does ([H, W, 3] permuted to [1, 3, H, W]),
    and its gradient with respect to the render [H, W, 3]."""
    generator = torch.Generator().manual_seed(seed)
    photo = torch.rand(*shape, 3, generator=generator)  # [H, W, 3]
    render = (photo + 0.1 * torch.randn(*shape, 3, generator=generator)).clamp(0.0, 1.0).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short sides
        value = module(photo.permute(2, 0, 1)[None], render.permute(2, 0, 1)[None])
    (gradient,) = torch.autograd.grad(value, render)
    return value.detach(), gradient


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_pytorch_msssim_with_its_gradients(shape):
    ours = _value_and_gradient(SSIM(data_range=1.0, channel=3), shape, seed=sum(shape))
    theirs = _value_and_gradient(ReferenceSSIM(data_range=1.0, size_average=True, channel=3), shape, seed=sum(shape))
    torch.testing.assert_close(ours[0], theirs[0], rtol=0.0, atol=1e-5)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-4, atol=1e-8)
    # on the CPU the same bits: the same taps summed in the same order, the gradients added up in the same order
    # (what keeps semsplat's training bit-for-bit the same, tests/model/test_photometric_loss.py)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def test_batches_and_short_sides_as_pytorch_msssim():
    ours, reference = SSIM(), ReferenceSSIM(data_range=1.0, size_average=True, channel=3)
    generator = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 2, 3, 8, 30, generator=generator)  # [B, 3, H, W] each, H shorter than the window
    with pytest.warns(UserWarning, match="filtered along dimensions"):
        value = ours(x, y)
    with pytest.warns(UserWarning):
        expected = reference(x, y)
    torch.testing.assert_close(value, expected, rtol=0.0, atol=1e-5)
    with pytest.warns(UserWarning):
        assert torch.equal(ours(x, x), torch.ones(()))  # an image is its own perfect match


def test_window_is_an_unsaved_buffer_that_follows_the_module():
    module = SSIM()
    assert "window" in dict(module.named_buffers()) and module.state_dict() == {}
    assert module.window.shape == (15, 1, 1, 11)
    torch.testing.assert_close(module.window.sum(dim=-1), torch.ones(15, 1, 1))
    double = module.to(torch.float64)
    assert double.window.dtype == torch.float64
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    value = double(x, x)
    assert value.dtype == torch.float64 and float(value) == pytest.approx(1.0, abs=1e-12)


def test_rejects_other_channel_counts_and_shapes():
    with pytest.raises(ValueError, match="expected images"):
        SSIM(channel=3)(torch.rand(1, 4, 16, 16), torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="differ in shape"):
        SSIM()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
