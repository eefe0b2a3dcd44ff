"""functional.py: each per-image pixel operation equals torchvision's.

Colour ops, grayscale, blur, solarize, the resized crop inside its box.
"""

import pytest
import torch
from helpers import gen, random_images
from torchvision.transforms.v2 import functional as TF

from equimod_edu import functional
from equimod_edu.augment import AugmentationConfig

N = 48
COLOUR_TOL = 1 / 255  # mean absolute error allowed for the colour ops (they agree far closer)


def images_float(n=N, size=32, seed=0):
    return random_images(n, size, seed).float() / 255


@pytest.mark.parametrize("ours,theirs,low,high", [
    (functional.adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    (functional.adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (functional.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
    (functional.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_colour_ops_match_torchvision(ours, theirs, low, high):
    x = images_float()
    factor = low + (high - low) * torch.rand(N, generator=gen(1))
    got = ours(x, factor)
    want = torch.stack([theirs(x[i], float(factor[i])) for i in range(N)])
    assert (got - want).abs().mean() < COLOUR_TOL
    assert (got - want).abs().max() < 1e-4  # in fact equal to float precision


def test_hue_handles_grey_and_saturated_pixels():
    grey = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(functional.adjust_hue(grey, torch.tensor([0.3, -0.2])), grey)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    green = functional.adjust_hue(red, torch.tensor([1 / 3]))  # a third of a turn: red -> green
    assert torch.allclose(green.flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)


def test_grayscale_blur_solarize_match_torchvision():
    x = images_float()
    want = torch.stack([TF.rgb_to_grayscale(x[i], num_output_channels=3) for i in range(N)])
    assert (functional.grayscale(x) - want).abs().max() < 1e-5
    for k in (3, 5, 23):
        xx = images_float(8, size=32 if k < 23 else 48)
        sigma = 0.1 + 1.9 * torch.rand(8, generator=gen(2))
        want = torch.stack([TF.gaussian_blur(xx[i], [k, k], [float(sigma[i])] * 2) for i in range(8)])
        assert (functional.gaussian_blur(xx, sigma, k) - want).abs().max() < 1e-5
    want = torch.stack([TF.solarize(x[i], 0.5) for i in range(N)])
    assert torch.equal(functional.solarize(x, 0.5), want)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resized_crop_matches_torchvision_inside_the_box(mode):
    """Equal inside the box; on its border torchvision interpolates against a clamped edge."""
    x = images_float(32)
    cfg = AugmentationConfig.cifar10(interpolation=mode)
    p = cfg.sample(32, generator=gen(3))
    got = functional.resized_crop(x, p.crop, p.flip, 32, mode)
    interp = TF.InterpolationMode.BILINEAR if mode == "bilinear" else TF.InterpolationMode.BICUBIC
    reach = 1 if mode == "bilinear" else 2  # input pixels the kernel reaches on each side
    for i in range(32):
        top, left, h, w = (p.crop[i] * 32).round().int().tolist()
        want = TF.resized_crop(x[i], top, left, h, w, [32, 32], interpolation=interp, antialias=False)
        mine = got[i].flip(-1) if p.flip[i] else got[i]
        # output pixel j samples the box at (j + 0.5) * h / 32 - 0.5: interior if the kernel stays inside
        ys = (torch.arange(32) + 0.5) * h / 32 - 0.5
        xs = (torch.arange(32) + 0.5) * w / 32 - 0.5
        rows = (ys >= reach - 1) & (ys <= h - reach)
        cols = (xs >= reach - 1) & (xs <= w - reach)
        inside = rows[:, None] & cols[None, :]
        assert (mine - want).abs()[:, inside].max() < 1e-4
        assert (mine - want).abs().mean() < 0.02  # the border difference is small on average
