"""The self-supervised image term of the trainer (trainer/instance.py): its views and its loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from witcurate.trainer.instance import augment_views, instance_loss


def _images(n: int = 6) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, 32, 32)


def test_views_keep_the_shape_differ_from_the_input_and_follow_the_seed():
    images = _images()
    torch.manual_seed(5)
    first = augment_views(images)
    torch.manual_seed(5)
    again = augment_views(images)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, again)                      # a resumed run draws the same views
    assert not torch.allclose(first, images, atol=0.05)
    assert torch.isfinite(first).all()


def test_each_image_gets_its_own_draw():
    same = _images(1).repeat(4, 1, 1, 1)
    views = augment_views(same)
    assert all(not torch.allclose(views[0], views[i], atol=0.05) for i in range(1, 4))


def test_a_view_stays_nearer_its_own_image_than_another_image():
    """Moved and re-lit, not scrambled: the views keep the layout of their image."""
    torch.manual_seed(2)
    # smooth images (a few blobs), as drawings are, rather than white noise
    images = F.interpolate(torch.randn(8, 3, 4, 4), size=32, mode="bilinear", align_corners=False)
    views = augment_views(images)
    flat = lambda x: F.normalize((x - x.mean(dim=(1, 2, 3), keepdim=True)).flatten(1), dim=1)
    sims = flat(views) @ flat(images).T
    assert (sims.argmax(dim=1) == torch.arange(8)).all(), sims


def test_loss_matches_nt_xent_by_hand():
    """Orthonormal embeddings, each second view equal to its first: the positive scores 1/t,
    the 2n - 2 negatives 0."""
    n, t = 4, 0.5
    first = torch.eye(8)[:n]
    loss = instance_loss(first, first.clone(), t)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * n - 2)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_high_when_views_cannot_be_told_apart_and_low_when_they_can():
    n, t = 8, 0.1
    alike = F.normalize(torch.ones(n, 16), dim=1)
    assert instance_loss(alike, alike.clone(), t).item() == pytest.approx(math.log(2 * n - 1), rel=1e-5)
    distinct = torch.eye(16)[:n]
    assert instance_loss(distinct, distinct.clone(), t).item() < 0.01


def test_loss_has_gradients_for_both_views():
    first = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    second = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    instance_loss(first, second, 0.1).backward()
    assert first.grad.abs().sum() > 0 and second.grad.abs().sum() > 0
