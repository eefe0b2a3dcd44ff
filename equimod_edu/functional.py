"""Pure per-image pixel operations, in the style of torchvision.transforms.v2.functional.

Every function takes a batch (N, 3, H, W) float in [0, 1] and, where it has one, a per-image
parameter (N,), and returns a new batch: no hidden state, no randomness, tensors in and out, any
device. `augment.apply` chains them in the SimCLR order; `tests/test_functional.py` checks each one
against its torchvision twin for the same parameters: colour ops to float precision, the crop exactly
inside the crop and within the interpolation difference on its border (we resample the crop from the
whole image; torchvision cuts the crop out first, so its border pixels interpolate against a clamped
edge instead of the pixels just outside the crop). Work is in float32 without PIL's intermediate
uint8 rounding, and without antialiasing (irrelevant for CIFAR's upsampling crops). Also here: the
input checks of a batch (`check_images`, `check_params`), `jitter_every_image` (the colour jitter of
the GPU path), the crop boxes' geometry (`crop_box`: RandomResizedCrop.get_params for a batch), and
`four_rotations` (a batch in its four quarter turns, E-SSL's rotated views).

    x = to_float(images)                                   # uint8 0-255 -> float 0-1
    x = resized_crop(x, crop, flip, size=32)               # crop (N, 4) fractions, flip (N,) bool
    x = adjust_hue(x, torch.full((len(x),), 0.25))         # a quarter turn of the colour circle
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def check_images(images) -> None:
    """Raise ValueError unless images is a (N, 3, H, W) uint8 tensor or a float tensor in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ValueError(f"images must be uint8 (0-255) or float (0-1), got dtype {images.dtype}")
    # A float range check needs the values on the host: done on CPU only (uint8 needs none).
    if images.dtype.is_floating_point and images.device.type == "cpu" and images.numel():
        low, high = float(images.min()), float(images.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(f"float images must lie in [0, 1], got values in [{low:.3g}, {high:.3g}] "
                             "(already normalised? pass the raw images)")


def check_params(images: torch.Tensor, params) -> None:
    """Raise ValueError unless params (an AugmentationParams) has one row per image, on their device."""
    if len(params) != images.shape[0]:
        raise ValueError(f"params were sampled for a batch of {len(params)} images but images has "
                         f"{images.shape[0]}; sample them with n=len(images)")
    if params.device != images.device:
        raise ValueError(f"params are on {params.device} but images on {images.device}; "
                         "use params.to(images.device) or sample on the images' device")
    # Each jitter op runs once, as in ColorJitter (the GPU path relies on it). Checked on CPU only:
    # on a GPU it would cost a host synchronisation.
    if params.order.device.type == "cpu" and len(params) and not torch.equal(
            params.order.sort(dim=1).values, torch.arange(4).expand(len(params), 4)):
        raise ValueError("params.order must hold a permutation of 0, 1, 2, 3 in every row "
                         "(each jitter op once, as torchvision's ColorJitter)")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0-255 -> float32 0-1; float -> float32."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def _col(values: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, 1) to broadcast one value per image."""
    return values.view(-1, 1, 1, 1).to(torch.float32)


def _cubic_weights(t: torch.Tensor, a: float = -0.75) -> list[torch.Tensor]:
    """Weights of the 4 taps floor(x) - 1 .. floor(x) + 2 for fractional offsets ``t``.

    Keys' cubic, a = -0.75 as torch's bicubic interpolate and grid_sample.
    """
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def interpolation_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                         mode: str = "bilinear", flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, out_size, in_size) weights resampling the segment [start, start + length) of a line.

    start, length: (N,) fractions of the input line; flip: (N,) bool, reverse the output.
    Output pixel i samples the input at x = start * in + (i + 0.5) * length * in / out - 0.5
    (pixel centres, align_corners=False) with the interpolation kernel's taps; taps beyond the
    image are clamped to its edge pixels (grid_sample's padding_mode="border"). "nearest" takes
    the pixel at round(x), ties to even.
    """
    i = torch.arange(out_size, device=start.device, dtype=torch.float32) + 0.5
    x = (start[:, None] * in_size + i * (length[:, None] * in_size / out_size) - 0.5)  # (N, out)
    if flip is not None:
        x = torch.where(flip[:, None], x.flip(1), x)
    if mode == "nearest":
        taps, weights = [torch.round(x)], [torch.ones_like(x)]
    else:
        base = torch.floor(x)
        t = x - base
        if mode == "bilinear":
            taps, weights = [base, base + 1], [1 - t, t]
        else:
            taps, weights = [base - 1, base, base + 1, base + 2], _cubic_weights(t)
    taps = torch.stack(taps, dim=2).clamp_(0, in_size - 1).long()  # (N, out, taps)
    matrix = torch.zeros(x.shape[0], out_size, in_size, device=start.device)
    return matrix.scatter_add_(2, taps, torch.stack(weights, dim=2))


def resized_crop(images: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int,
                 interpolation: str = "bilinear") -> torch.Tensor:
    """Crop each image to its box, resize to size x size, flip where asked: two matrix products.

    images (N, 3, H, W) float; crop (N, 4) top, left, height, width fractions; flip (N,) bool.
    Returns (N, 3, size, size). An axis-aligned resized crop is separable: with R (N, size, H)
    resampling the rows and C (N, size, W) the columns, out = R @ image @ C^T for each channel.
    The flip reverses C's rows. Same result as grid_sample with the equivalent affine grid
    (padding_mode="border"), several times faster on a CPU.
    """
    n, channels, height, width = images.shape
    crop = crop.float()
    rows = interpolation_matrix(crop[:, 0], crop[:, 2], height, size, interpolation)
    cols = interpolation_matrix(crop[:, 1], crop[:, 3], width, size, interpolation, flip)
    # one matrix pair per image, its channels side by side: N products (S, H) @ (H, 3W), then
    # N products (3S, W) @ (W, S); the same sums as 3N per-channel products, bit for bit, but larger
    # matrices (faster on a CPU) and no copies of the matrices per channel
    wide = images.permute(0, 2, 1, 3).reshape(n, height, channels * width)                # (N, H, 3W)
    tall = torch.bmm(rows, wide).view(n, size, channels, width).transpose(1, 2)           # (N, 3, S, W)
    out = torch.bmm(tall.reshape(n, channels * size, width), cols.transpose(1, 2))         # (N, 3S, S)
    return out.view(n, channels, size, size)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma 0.2989 R + 0.587 G + 0.114 B."""
    r, g, b = images.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend as torchvision does: factor * a + (1 - factor) * b, clamped to [0, 1] (b may broadcast).

    A fused torch.lerp was measured 10x faster on this op alone (benchmarks: the engine ratio went
    from 8.7 to 8.9), but it rounds differently, and the shipped results were trained with this form.
    """
    return (_col(factor) * a + (1 - _col(factor)) * b).clamp_(0, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale all channels by factor (N,); clamp to [0, 1]."""
    return (images * _col(factor)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level (a constant image) by factor (N,)."""
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its own grayscale version by factor (N,)."""
    return _blend(images, rgb_to_grayscale(images), factor)


def _is_max(channel: torch.Tensor, maxc: torch.Tensor) -> torch.Tensor:
    """1.0 where channel == maxc (maxc >= channel everywhere), else 0.0: a float mask.

    Selecting with float masks (a * m + b * (1 - m), m in {0, 1}) gives the same bits as
    torch.where for finite values, and on a CPU it is vectorised where torch.where on a boolean
    mask is not (adjust_hue measured 1.45x faster with float masks and in-place steps).
    """
    return (maxc - channel).sign_().neg_().add_(1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by shift (N,) turns, keeping HSV value and saturation.

    In HSV, with V = max(R, G, B), C = V - min(R, G, B) and the hue H in [0, 6), the channels are
    V - C * clamp(min(k, 4 - k), 0, 1) with k = (n + H) mod 6 and n = 5, 3, 1 for R, G, B.
    Rotating the hue adds 6 * shift to H: no detour through a full HSV image is needed.
    The in-place steps (`op_`) only save memory allocations.
    """
    r, g, b = images.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)                                  # V, (N, H, W)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)                         # C
    inv = chroma.clamp(min=torch.finfo(chroma.dtype).tiny).reciprocal_()  # 1 / C; grey pixels (C = 0) get H = 0
    # the hue sector by the largest channel (the first one on ties):
    # R -> (G - B) / C, G -> 2 + (B - R) / C, B -> 4 + (R - G) / C
    on_r = _is_max(r, maxc)
    on_g = _is_max(g, maxc).mul_(1 - on_r)
    on_b = (1 - on_r).sub_(on_g)
    hue6 = (g - b).mul_(inv).mul_(on_r)
    hue6 += (b - r).mul_(inv).add_(2).mul_(on_g)
    hue6 += (r - g).mul_(inv).add_(4).mul_(on_b)
    hue6 += 6.0 * shift.float().view(-1, 1, 1)                                    # the rotation
    n = torch.arange(5.0, 0.0, -2.0, device=images.device).view(1, 3, 1, 1)       # 5, 3, 1: made on the device
    k = (hue6.unsqueeze(1) + n).remainder_(6.0)                                   # (N, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0, 1).mul_(chroma.unsqueeze(1))       # C * clamp(min(k, 4 - k), 0, 1)
    return ramp.neg_().add_(maxc.unsqueeze(1))                                    # V - that


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma replicated on three channels (as RandomGrayscale)."""
    return rgb_to_grayscale(images).expand_as(images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur each image with its own sigma (N,) pixels: separable kernel, reflect padding, as torchvision."""
    n, c, h, w = images.shape
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma.float().view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*3, K)
    pad = kernel_size // 2
    out = F.pad(images.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)  # vertical pass
    out = F.conv2d(out, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)  # horizontal pass
    return out.view(n, c, h, w)


def solarize(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels at or above threshold."""
    return torch.where(images >= threshold, 1 - images, images)


JITTER_FUNCTIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _blend_every_image(images: torch.Tensor, op: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """One blend f * x + (1 - f) * target for every image, its target chosen by ``op`` ``(N,)``.

    The target is black for brightness (0), the mean grey for contrast (1), the grey image for
    saturation (2). ``factor`` is ``(N,)``; a factor of 1 leaves an image exactly as it is
    (1 * x + 0 * target = x, and x is in [0, 1]).
    """
    gray = rgb_to_grayscale(images)
    target = torch.where((op == 1).view(-1, 1, 1, 1), gray.mean(dim=(1, 2, 3), keepdim=True), gray) * _col(op != 0)
    return (_col(factor) * images + (1 - _col(factor)) * target).clamp_(0, 1)  # _blend's arithmetic, bit for bit


def jitter_every_image(images: torch.Tensor, jitter: torch.Tensor, order: torch.Tensor, factors: torch.Tensor,
                       hue: torch.Tensor) -> torch.Tensor:
    """Colour jitter in each image's own op order, every image computed at every step (the GPU path).

    images (N, 3, H, W) in [0, 1]; jitter (N,) bool; order (N, 4) op indices (brightness 0,
    contrast 1, saturation 2, hue 3) in applied order; factors (N, 3) the brightness, contrast and
    saturation factors; hue (N,) shift in turns. Every jittered image runs the hue rotation exactly
    once, with blends before and after it. So the batch goes through three blend steps (the ops
    before its hue step), one hue rotation, then three blend steps (the ops after it); a blend an
    image does not run there gets factor 1, which leaves it unchanged, and torch.where keeps the hue
    rotation of jittered images only. No data-dependent shape, one hue rotation instead of four,
    and the same pixels as applying the four ops to the selected images only.
    """
    steps = torch.arange(4, device=order.device)
    hue_step = order.argsort(dim=1)[:, 3:]                                    # (N, 1) the step that rotates hue
    factor = factors.gather(1, order.clamp(max=2))                            # (N, 4) each step's blend factor
    before = torch.where(jitter[:, None] & (steps < hue_step), factor, 1.0)  # 1: not a blend before the hue
    after = torch.where(jitter[:, None] & (steps > hue_step), factor, 1.0)
    x = images
    for step in range(3):
        x = _blend_every_image(x, order[:, step], before[:, step])
    x = torch.where(jitter.view(-1, 1, 1, 1), adjust_hue(x, hue), x)
    for step in range(1, 4):
        x = _blend_every_image(x, order[:, step], after[:, step])
    return x


# --------------------------------------------------------------------------------------------
# Crop boxes: the geometry resized_crop consumes (top, left, height, width as fractions)
# --------------------------------------------------------------------------------------------
def crop_box(u: dict[str, torch.Tensor], image_size: tuple[int, int], scale, ratio) -> torch.Tensor:
    """RandomResizedCrop.get_params for n images at once -> (N, 4) top, left, height, width fractions.

    u holds the uniforms "area", "log_ratio" (N, 10) and "top", "left" (N,) (see augment.draw_uniforms).
    As torchvision: up to 10 tries of (area, log-uniform aspect ratio) rounded to whole pixels,
    kept if the box fits; images where no try fits get the central crop clamped to `ratio`.
    """
    height, width = image_size
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u["area"])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    log_ratio = log_low + (log_high - log_low) * u["log_ratio"]
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # index of the first try that fits
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(dim=1)

    in_ratio = width / height  # fallback: the central crop, as torchvision
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = torch.floor(u["top"] * (height - h + 1))
    left = torch.floor(u["left"] * (width - w + 1))
    top = torch.where(found, top, torch.div(height - h, 2, rounding_mode="floor"))
    left = torch.where(found, left, torch.div(width - w, 2, rounding_mode="floor"))
    return torch.stack([top / height, left / width, h / height, w / width], dim=1)


def centre_box(fraction: float, height: int, width: int) -> list[float]:
    """Crop box (top, left, height, width; fractions) of a centred square, ``fraction`` of the shorter side."""
    side = fraction * min(height, width)
    return [(1 - side / height) / 2, (1 - side / width) / 2, side / height, side / width]


def four_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image in all four rotations, and which rotation each copy shows (E-SSL's task, essl.py).

    ``(N, C, S, S)`` (any values: raw or normalised) -> ``((4N, C, S, S), (4N,) int64)``: the block
    k of N images is the batch turned k quarter turns counter-clockwise (k * 90 degrees: torch.rot90
    over (H, W)), its label k; blocks in the order k = 0, 1, 2, 3, as the official code.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square (N, C, S, S) to be turned, got {tuple(images.shape)}")
    turned = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return turned, labels
