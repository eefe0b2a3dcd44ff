"""The GPU path of augment.py: the same pixels in a fraction of the kernel launches.

``augment.py`` is the reference a learner reads: each op runs only on the images that draw it (a
subset, written in place). A GPU pays per kernel launch and per host synchronisation, and a
subset's size is data the host must wait for. So here:

- `apply_every_image` runs every op on every image and keeps the right result with torch.where
  (no data-dependent shape, no synchronisation); the colour jitter rotates the hue once, between
  blends (``functional.jitter_every_image``). Its pixels equal ``augment.apply``'s bit for bit
  (``tests/test_augment.py`` forces this path on a CPU to check it).
- `sample_views_together` draws both views' parameters in one torch.rand: the same distribution
  as ``AugmentationConfig.sample_pair``, other numbers (the same seed gives other views on a GPU).
- `CudaAugment` makes the normalisation and encoding constants once on its device.

Which one a step uses is the caller's choice, on the device of its images:

    augmenter = augmenter_for(config, device)   # the config itself on a CPU, a CudaAugment on CUDA
    views = augmenter.views(images, generator)  # both have views, apply, normalize, original, encode

``benchmarks/augment_ops.py`` counts this path's aten ops (what launch overhead scales with).
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import torch

from .augment import (
    DRAWS,
    JITTER_OPS,
    AugmentationConfig,
    AugmentationParams,
    Views,
    check_sampling,
    crop_and_flip,
    encoding_stats,
    params_from_uniforms,
    raw_vector,
    share_within_groups,
)
from .functional import (
    centre_box,
    check_images,
    check_params,
    gaussian_blur,
    grayscale,
    jitter_every_image,
    solarize,
    to_float,
)


def draw_uniforms_together(rows: int, generator=None, device=None) -> dict[str, torch.Tensor]:
    """``augment.draw_uniforms`` from one ``torch.rand(rows, 36)`` split into the names of ``DRAWS``.

    The same distribution in one kernel instead of 15 (other numbers than the CPU stream).
    """
    widths = [width for _, width in DRAWS]
    columns = torch.rand(rows, sum(widths), generator=generator, device=device).split(widths, dim=1)
    return {name: column[:, 0] if width == 1 else column for (name, width), column in zip(DRAWS, columns)}


def sample_views_together(config: AugmentationConfig, n: int, image_size=None, generator=None,
                          device=None) -> AugmentationParams:
    """Both views' parameters of n images from one draw: 2n rows, view 0 settings first.

    The same distribution as sample_pair, other numbers: use it where launches cost, not where a
    CPU result must be reproduced (sample_pair's stream is the one the shipped results used).
    """
    device = check_sampling(n, generator, device)
    u = draw_uniforms_together(2 * n, generator, device)
    second = torch.arange(2 * n, device=device) >= n  # the rows of view 1

    def per_view(name):
        p0, p1 = config.view_value(name, 0), config.view_value(name, 1)
        return p0 if p0 == p1 else torch.where(second, p1, p0)

    return params_from_uniforms(config, u, image_size or (config.size, config.size),
                                per_view("blur_p"), per_view("solarize_p"))


def _where(mask: torch.Tensor, op, images: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """A new tensor: op(images[i], args[i]) where mask[i], images[i] elsewhere; every image computed."""
    return torch.where(mask.view(-1, 1, 1, 1), op(images, *args), images)


def apply_every_image(images: torch.Tensor, params: AugmentationParams, config: Optional[AugmentationConfig] = None,
                      normalize: bool = True) -> torch.Tensor:
    """augment.apply, every op run on every image (see the module docstring): the same pixels."""
    config = config or AugmentationConfig()
    check_images(images)
    check_params(images, params)
    p = params
    x = crop_and_flip(images, p, config)
    factors = torch.stack([getattr(p, name) for name in JITTER_OPS[:3]], 1)  # brightness, contrast, saturation
    x = jitter_every_image(x, p.jitter, p.order, factors, p.hue)
    x = _where(p.grayscale, grayscale, x)
    if config.has_blur:
        sigma = torch.where(p.blur, p.sigma, torch.ones_like(p.sigma))  # sigma 0 never reaches the kernel
        x = _where(p.blur, lambda im, s: gaussian_blur(im, s, config.kernel_size), x, sigma)
    if config.has_solarize:
        x = _where(p.solarize, lambda im: solarize(im, config.solarize_threshold), x)
    return config.normalize(x) if normalize else x


class CudaAugment:
    """A config's per-step work on one device, launch-lean.

    The ``AugmentationConfig`` methods views, apply, normalize, original and encode, with the same
    pixels and vectors (views: other draws), and every constant (channel mean / std, centre boxes,
    encoding statistics) made once.
    """

    def __init__(self, config: AugmentationConfig, device):
        self.config, self.device = config, torch.device(device)
        self.mean, self.std = (torch.tensor(v, device=self.device).view(1, 3, 1, 1) for v in (config.mean, config.std))
        self._boxes: dict[tuple[int, int], torch.Tensor] = {}

    @functools.cached_property
    def _encoding_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = encoding_stats(self.config)
        return mean.to(self.device), std.to(self.device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """AugmentationConfig.normalize with the channel statistics already on the device."""
        return (to_float(images) - self.mean) / self.std

    def apply(self, images: torch.Tensor, params: AugmentationParams, normalize: bool = True) -> torch.Tensor:
        x = apply_every_image(images, params, self.config, normalize=False)
        return self.normalize(x) if normalize else x

    def original(self, images: torch.Tensor) -> torch.Tensor:
        """AugmentationConfig.original with its centre box made once per input size."""
        h, w = images.shape[-2:]
        if (h, w) == (self.config.size, self.config.size) and self.config.original_crop == 1.0:
            return self.normalize(images)
        if (h, w) not in self._boxes:
            self._boxes[h, w] = torch.tensor(centre_box(self.config.original_crop, h, w), device=self.device)
        params = AugmentationParams.identity(images.shape[0], images.device)
        params.crop[:] = self._boxes[h, w]
        return self.apply(images, params)

    def views(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
              rows: Optional[slice] = None, group_size: int = 0) -> Views:
        """``AugmentationConfig.views`` from one joint draw (``sample_views_together``).

        Both views are made by one apply of 2N images; ``rows`` keeps a share of the same draw;
        ``group_size`` > 0 shares each view's parameters within groups of the N first.
        """
        check_images(images)
        n = images.shape[0]
        both = sample_views_together(self.config, n, tuple(images.shape[-2:]), generator, images.device)
        p1, p2 = both[:n], both[n:]
        if group_size:
            p1, p2 = share_within_groups(p1, group_size), share_within_groups(p2, group_size)
        if rows is not None:
            images, p1, p2 = images[rows], p1[rows], p2[rows]
        if rows is not None or group_size:
            both = AugmentationParams.cat([p1, p2])
        x_1, x_2 = self.apply(torch.cat([images, images]), both).chunk(2)
        return Views(self.original(images), x_1, x_2, p1, p2)

    def encode(self, params: AugmentationParams) -> torch.Tensor:
        """AugmentationConfig.encode with the statistics already on the device."""
        mean, std = self._encoding_stats
        return (raw_vector(params, self.config) - mean) / std


def augmenter_for(config: AugmentationConfig, device) -> Union[AugmentationConfig, CudaAugment]:
    """What augments a step's batches on `device`: a CudaAugment on a CUDA device, else the config."""
    return CudaAugment(config, device) if torch.device(device).type == "cuda" else config
