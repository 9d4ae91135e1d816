"""A self-supervised image term beside the CLIP loss (SLIP, Mu et al. 2022): some images of each
batch are shown a second time, moved, rescaled, re-lit, blurred and noised, and the image tower
must tell each second view's own image from every other image of the batch (SimCLR's NT-Xent,
Chen et al. 2020).

Why a scorer may want it: a CLIP loss only teaches what the captions say. Where captions say
little (the demo's name a count, a colour, a shape and a scene), every scene with the same
caption lands on the same point, so an image embedding cannot tell a re-rendered copy of a scene
from another scene that the same words describe, and semantic dedup has nothing to work with.
The instance term makes the embedding keep what tells one scene from another (where the objects
are) and drop what a re-render changes (light, texture, noise, a small shift or rescale).

The views are made on the batch tensor itself (after the loader's preprocessing, on the
training device), with torch's default generator, which checkpoints save and restore: a resumed
run draws the same views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_SHIFT = 0.06            # of the half-width: about 2 px at 64 px
SCALE = (0.94, 1.06)
BRIGHTNESS = 0.4            # in the normalised units the preprocessing leaves
CONTRAST = (0.7, 1.3)
CHANNEL_SHIFT = 0.2
BLUR_SIGMA = (0.3, 1.2)
NOISE = 0.1


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable 5-tap Gaussian blur, edges reflected."""
    taps = torch.arange(-2, 3, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, 5).repeat(channels, 1, 1, 1)
    out = F.conv2d(F.pad(images, (2, 2, 0, 0), mode="reflect"), rows, groups=channels)
    return F.conv2d(F.pad(out, (0, 0, 2, 2), mode="reflect"), rows.transpose(2, 3), groups=channels)


def augment_views(images: torch.Tensor) -> torch.Tensor:
    """Second views of a batch of preprocessed images (N, C, H, W), each drawn on its own:
    shifted and rescaled (edges reflected), brightness, contrast and per-channel shifts, one blur
    for the batch, and pixel noise."""
    n, device, dtype = images.shape[0], images.device, images.dtype

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.empty(*shape).uniform_(low, high).to(device=device, dtype=dtype)

    scale = uniform(*SCALE, n)
    theta = torch.zeros(n, 2, 3, device=device, dtype=dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-MAX_SHIFT, MAX_SHIFT, n), uniform(-MAX_SHIFT, MAX_SHIFT, n)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = ((views - mean) * uniform(*CONTRAST, n, 1, 1, 1) + mean
             + uniform(-BRIGHTNESS, BRIGHTNESS, n, 1, 1, 1)
             + uniform(-CHANNEL_SHIFT, CHANNEL_SHIFT, n, images.shape[1], 1, 1))
    views = _blur(views, float(torch.empty(()).uniform_(*BLUR_SIGMA)))
    return views + NOISE * torch.randn(views.shape).to(device=device, dtype=dtype)


def instance_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2N normalised embeddings: row i of `first` and of `second` are two views of
    one image; every other row of either is a negative."""
    n = first.shape[0]
    z = torch.cat([first, second]).float()
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)
