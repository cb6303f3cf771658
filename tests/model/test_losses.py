"""Each semsplat loss checked on a hand-made case."""

import math

import pytest
import torch

from semsplat_ns.model import losses as L


def test_downscale_labels_samples_block_centres_without_mixing_ids():
    labels = torch.arange(16, dtype=torch.uint8).reshape(4, 4)
    small = L.downscale_labels(labels, 2, 2)
    # centre of each 2x2 block rounds to its lower-right pixel: rows/cols 1 and 3
    assert small.tolist() == [[5, 7], [13, 15]]
    assert small.dtype == labels.dtype
    assert L.downscale_labels(labels, 4, 4) is labels


def test_semantic_cross_entropy_matches_hand_value_and_ignores_255():
    logits = torch.zeros(1, 2, 3)
    logits[0, 0] = torch.tensor([math.log(3.0), 0.0, 0.0])  # p(class 0) = 3/5
    labels = torch.tensor([[0, 255]])
    loss = L.semantic_cross_entropy(logits, labels)
    assert torch.isclose(loss, torch.tensor(-math.log(3 / 5)), atol=1e-6)


def test_pseudo_cross_entropy_only_inside_boundary_mask():
    logits = torch.zeros(1, 2, 2)
    logits[0, 1] = torch.tensor([5.0, 0.0])  # confidently class 0
    labels = torch.tensor([[0, 1]])
    inside = torch.tensor([[True, False]])
    # only the first pixel counts: uniform logits -> log 2
    assert torch.isclose(L.semantic_cross_entropy(logits, labels, inside), torch.tensor(math.log(2.0)))
    # whole map: mean of log 2 and the wrong confident pixel
    whole = L.semantic_cross_entropy(logits, labels)
    expected = (math.log(2.0) + (math.log(math.exp(5) + 1) - 0.0)) / 2
    assert torch.isclose(whole, torch.tensor(expected), atol=1e-5)


def test_cross_entropy_without_labelled_pixels_is_zero_with_graph():
    logits = torch.randn(3, 3, 4, requires_grad=True)
    loss = L.semantic_cross_entropy(logits, torch.full((3, 3), 255), None)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_softmax_kl_hand_value():
    p = torch.tensor([[math.log(0.75), math.log(0.25)]])  # softmax -> [0.75, 0.25]
    q = torch.tensor([[[math.log(0.5), math.log(0.5)]]])  # -> [0.5, 0.5]
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert torch.isclose(L.softmax_kl(p, q), torch.tensor(expected), atol=1e-6)


def test_pixel_neighbours_are_the_k_nearest():
    offsets = L.pixel_neighbour_offsets(100, 5)
    assert offsets.shape == (100, 5, 2)
    dist2 = (offsets.float() ** 2).sum(-1)
    assert torch.all(dist2[:, :4] == 1) and torch.all(dist2[:, 4] == 2)
    # no duplicates per sample
    flat = offsets[..., 0] * 10 + offsets[..., 1]
    assert all(len(set(row.tolist())) == 5 for row in flat)


def test_aggregation_2d_zero_on_constant_map_positive_on_edges():
    constant = torch.randn(1, 1, 8).expand(16, 16, 8).contiguous()
    assert L.aggregation_2d_loss(constant, 256, k=5).abs() < 1e-6
    halves = torch.zeros(16, 16, 2)
    halves[:, :8, 0] = 4.0
    halves[:, 8:, 1] = 4.0
    loss = L.aggregation_2d_loss(halves, 4096, k=5)
    assert loss > 0.01
    # only pixels next to the seam differ from a neighbour: the loss is a small share of one KL
    kl_across = (
        torch.softmax(halves[0, 0], -1) * (torch.log_softmax(halves[0, 0], -1) - torch.log_softmax(halves[0, 15], -1))
    ).sum()
    assert loss < 0.5 * kl_across


def test_aggregation_2d_gradient_pulls_neighbours_together():
    feature_map = torch.zeros(4, 4, 3)
    feature_map[1, 1] = torch.tensor([3.0, 0.0, 0.0])
    feature_map.requires_grad_(True)
    loss = L.aggregation_2d_loss(feature_map, 2000, k=5, generator=torch.Generator().manual_seed(0))
    loss.backward()
    # descending the gradient lowers the outlier's class-0 logit
    assert feature_map.grad is not None and feature_map.grad[1, 1, 0] > 0


def test_knn_indices_exact_and_excludes_self():
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [3.5, 0, 0], [10, 0, 0]])
    ids = torch.tensor([0, 2])
    nn_ids = L.knn_indices(points[ids], points, k=2, query_ids=ids, chunk=1)
    assert nn_ids.tolist() == [[1, 2], [3, 1]]


def test_aggregation_3d_hand_value():
    features = torch.tensor([[math.log(0.75), math.log(0.25)], [0.0, 0.0], [0.0, 0.0]])
    loss = L.aggregation_3d_loss(features, torch.tensor([0]), torch.tensor([[1, 2]]))
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert torch.isclose(loss, torch.tensor(expected), atol=1e-6)


def test_psnr_unit_range_matches_torchmetrics():
    from torchmetrics.image import PeakSignalNoiseRatio

    generator = torch.Generator().manual_seed(0)
    prediction = torch.rand(1, 3, 17, 23, generator=generator)
    target = (prediction + 0.05 * torch.randn(1, 3, 17, 23, generator=generator)).clamp(0, 1)
    expected = PeakSignalNoiseRatio(data_range=1.0)(prediction, target)
    assert L.psnr_unit_range(prediction, target).item() == pytest.approx(expected.item(), rel=1e-5)
    # Hand value: a uniform error of 0.1 is 20 dB.
    assert L.psnr_unit_range(torch.zeros(4, 4, 3), torch.full((4, 4, 3), 0.1)).item() == pytest.approx(20.0, rel=1e-5)


def test_class_weights_make_a_weighted_mean_that_favours_rare_classes():
    logits = torch.zeros(1, 3, 2)  # uniform: every term is log 2
    logits[0, 2] = torch.tensor([0.0, 4.0])  # the rare class-1 pixel is predicted well
    labels = torch.tensor([[0, 0, 1]])
    counts = torch.tensor([900.0, 100.0])
    weights = L.inverse_sqrt_frequency_weights(counts)
    assert torch.isclose(weights.mean(), torch.tensor(1.0)) and weights[1] > weights[0]
    assert torch.isclose(weights[1] / weights[0], torch.tensor(math.sqrt(901 / 101)))
    rare_term = math.log(1 + math.exp(-4.0))
    expected = (2 * weights[0] * math.log(2.0) + weights[1] * rare_term) / (2 * weights[0] + weights[1])
    loss = L.semantic_cross_entropy(logits, labels, class_weights=weights)
    assert torch.isclose(loss, expected, atol=1e-6)
    # equal weights give the plain mean; ignored pixels stay out of the weighted mean
    assert torch.isclose(
        L.semantic_cross_entropy(logits, labels, class_weights=torch.ones(2)), L.semantic_cross_entropy(logits, labels)
    )
    assert L.semantic_cross_entropy(logits, torch.full((1, 3), 255), class_weights=weights) == 0.0


def test_unseen_classes_do_not_shift_the_mean_weight():
    weights = L.inverse_sqrt_frequency_weights(torch.tensor([99.0, 0.0, 399.0]))
    assert torch.isclose((weights[0] + weights[2]) / 2, torch.tensor(1.0))


def test_pseudo_agreement_hand_values():
    # pixel 0: the model's top class is the pseudo label; 1: it is sure of another; 2: it hesitates; 3: no label
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    pseudo = torch.tensor([[0, 1, 1, 255]], dtype=torch.uint8)  # [1, 4]
    agreement = L.pseudo_agreement(probabilities.log()[None], pseudo)  # [1, 4]
    assert torch.allclose(agreement, torch.tensor([[1.0, 0.15, 0.95, 1.0]]), atol=1e-6)


@pytest.mark.parametrize("shape", [(7,), (5, 3)])
def test_rows_of_is_advanced_indexing(shape):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(6, 4, generator=generator, requires_grad=True)
    ids = torch.randint(0, 6, shape, generator=generator)  # with repeats: their gradients add up
    weights = torch.randn(*shape, 4, generator=generator)
    ours, theirs = L.rows_of(values, ids), values[ids]
    assert ours.shape == theirs.shape == (*shape, 4) and torch.equal(ours, theirs)
    (our_gradient,) = torch.autograd.grad((ours * weights).sum(), values)
    (their_gradient,) = torch.autograd.grad((theirs * weights).sum(), values)
    torch.testing.assert_close(our_gradient, their_gradient, rtol=1e-6, atol=1e-7)
