"""Augmentations as parameters: sample them per image, apply them to a whole batch, encode them.

EquiMod's predictor needs to know *which* augmentation made each view, so an augmentation here is
three separate steps (kornia's "randomness you can replay"):

    config = AugmentationConfig.cifar10()            # strengths and probabilities (the paper's)
    params = config.sample(n, image_size=(32, 32))    # per-image parameters t, one row per image
    views = apply(images, params, config)             # pure function: same params -> same pixels
    t = config.encode(params)                         # (n, 15) standardised vector for the predictor

`apply` is vectorised over the batch (no Python loop over images) and runs wherever the images
are (CPU or CUDA). It reproduces the torchvision pipeline of SimCLR / BYOL, in this order:

    RandomResizedCrop -> HorizontalFlip -> ColorJitter (random order, p) -> Grayscale (p)
    -> GaussianBlur (p) -> Solarize (p) -> Normalize

Two paths, the same pixels. On a CPU each op runs only on the images that draw it (a subset). On
a GPU (`_compute_all`) every op runs on every image and torch.where keeps the right result: no
data-dependent shape, so no host synchronisation; the colour jitter rotates the hue once, between
blends (``functional.jitter_every_image``), and `views` draws both views' parameters in one
torch.rand (`sample_views_together`). A GPU pays per kernel launch, so that path is counted in
aten ops by ``benchmarks/augment_ops.py``. The CPU draw order (`DRAWS`) is the stream every
shipped result was trained with.

The file reads in that order: parameters -> config -> sample -> apply -> encode. The pixel
operations themselves are pure functions in ``functional.py``, and each matches its twin in
``torchvision.transforms.v2.functional`` for the same parameters (tested in
``tests/test_augment.py``): colour ops to float precision, the crop exactly inside the crop and
within the interpolation difference on its border (we resample the crop from the whole image;
torchvision cuts the crop out first, so its border pixels interpolate against a clamped edge
instead of the pixels just outside the crop). Work is done in float32 without the intermediate
uint8 rounding of PIL, and without antialiasing (irrelevant for CIFAR's upsampling crops).

Parameter vector (official EquiMod order, docs/design.md section 1), 15 values on CIFAR-10:
    crop top, left, height, width (fractions of the image) | flip |
    jitter applied, the four op indices in applied order, brightness, contrast, saturation, hue |
    grayscale | [blur applied, sigma] | [solarize applied]
With ``hue_encoding="cyclic"`` the hue shift (a fraction of a turn) becomes (cos, sin): 16 values.
Every column is standardised with a mean and std measured on the preset's own sampling
distribution (not hard-coded constants).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Union

import torch

from .functional import (JITTER_FUNCTIONS, check_images, check_params, gaussian_blur, grayscale,
                         jitter_every_image, resized_crop, solarize, to_float)

# Colour-jitter operations, indexed as in torchvision's ColorJitter (the order tensor holds these).
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

PerView = Union[float, tuple[float, float]]  # a probability that may differ between the two views


# --------------------------------------------------------------------------------------------
# Parameters: one row per image
# --------------------------------------------------------------------------------------------
@dataclass
class AugmentationParams:
    """The parameters t of one augmentation per image (all tensors have N rows, same device).

    crop:           (N, 4) float  top, left, height, width as fractions of the input image
    flip:           (N,)   bool   horizontal flip after the crop
    jitter:         (N,)   bool   colour jitter applied
    order:          (N, 4) long   jitter op indices (see JITTER_OPS) in the order applied: a permutation
    brightness, contrast, saturation: (N,) float  multiplicative factors (1 = identity)
    hue:            (N,)   float  hue shift in turns, in [-0.5, 0.5] (0 = identity)
    grayscale:      (N,)   bool
    blur:           (N,)   bool;  sigma: (N,) float  Gaussian blur std in pixels (0 if not blurred)
    solarize:       (N,)   bool
    When jitter is False the factors hold identity values and order is 0, 1, 2, 3.
    """

    crop: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    grayscale: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor

    def __len__(self) -> int:
        return self.crop.shape[0]

    @property
    def device(self) -> torch.device:
        return self.crop.device

    def _map(self, fn) -> "AugmentationParams":
        return AugmentationParams(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device) -> "AugmentationParams":
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index) -> "AugmentationParams":
        """Rows `index` (an int, slice, bool mask or index tensor) as a new params object."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    def clone(self) -> "AugmentationParams":
        return self._map(torch.clone)

    @classmethod
    def identity(cls, n: int, device=None) -> "AugmentationParams":
        """Parameters that change nothing (full crop, no flip, no jitter...): a start for sliders.
        Made on `device` without copying host data (x_o is built from them every step)."""
        zeros = torch.zeros(n, device=device)
        false = torch.zeros(n, dtype=torch.bool, device=device)
        return cls(
            crop=torch.cat([torch.zeros(n, 2, device=device), torch.ones(n, 2, device=device)], dim=1),  # 0, 0, 1, 1
            flip=false.clone(), jitter=false.clone(),
            order=torch.arange(4, device=device).repeat(n, 1),
            brightness=zeros + 1, contrast=zeros + 1, saturation=zeros + 1, hue=zeros.clone(),
            grayscale=false.clone(), blur=false.clone(), sigma=zeros.clone(), solarize=false.clone(),
        )

    @classmethod
    def cat(cls, params: Sequence["AugmentationParams"]) -> "AugmentationParams":
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in params]) for f in dataclasses.fields(cls)})

    def where(self, mask: torch.Tensor, other: "AugmentationParams") -> "AugmentationParams":
        """Row i from self where mask[i] (N,) bool, else from other (torch.where, row by row)."""
        def pick(name):
            x, y = getattr(self, name), getattr(other, name)
            return torch.where(mask.view(-1, *[1] * (x.dim() - 1)), x, y)
        return AugmentationParams(**{f.name: pick(f.name) for f in dataclasses.fields(self)})


class Views(NamedTuple):
    """What one EquiMod step needs: x_o (N,3,S,S) normalised original, two augmented views, their params."""

    x_o: torch.Tensor
    x_1: torch.Tensor
    x_2: torch.Tensor
    params_1: AugmentationParams
    params_2: AugmentationParams


# --------------------------------------------------------------------------------------------
# Configuration: strengths and probabilities, with the paper's presets
# --------------------------------------------------------------------------------------------
@dataclass
class AugmentationConfig:
    """Strengths and probabilities of every augmentation (each one a field a slider can set).

    Defaults are SimCLR's CIFAR-10 pipeline as used by EquiMod. `blur_p` and `solarize_p` may be a
    pair (view 1, view 2) for BYOL's asymmetric views; `sample(..., view=k)` picks the k-th value.
    """

    size: int = 32                                   # output side, pixels
    crop_scale: tuple[float, float] = (0.2, 1.0)     # crop area as a fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (width / height)
    interpolation: str = "bicubic"                   # "bilinear" | "bicubic" | "nearest"
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4                          # factor drawn in [1 - b, 1 + b]
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1                                 # shift drawn in [-h, h] turns, h <= 0.5
    gray_p: float = 0.2
    blur_p: PerView = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)     # pixels
    blur_kernel: Optional[int] = None                # odd side; None: odd int(0.1 * size), as SimCLR
    solarize_p: PerView = 0.0
    solarize_threshold: float = 0.5
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    hue_encoding: str = "raw"                        # "raw" (paper) | "cyclic" (cos, sin of the turn)
    original_crop: float = 1.0                       # x_o keeps the central fraction of the shorter side

    def __post_init__(self):
        for f in dataclasses.fields(self):  # lists (from JSON or a CLI flag) become tuples: hashable
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        self.validate()

    # ---- presets ---------------------------------------------------------------------------
    @classmethod
    def cifar10(cls, **overrides) -> "AugmentationConfig":
        """SimCLR / EquiMod CIFAR-10: crop 0.2-1 bicubic, flip, jitter 0.4/0.4/0.4/0.1 p 0.8, gray 0.2."""
        return cls(**overrides)

    @classmethod
    def imagenet(cls, **overrides) -> "AugmentationConfig":
        """SimCLR ImageNet: crop 0.08-1 to 224 (bicubic), jitter 0.8/0.8/0.8/0.2, gray 0.2, blur p 0.5
        sigma 0.1-2; x_o is Resize(256) + CenterCrop(224), as the official runs (original_crop 224/256)."""
        base = dict(size=224, crop_scale=(0.08, 1.0), interpolation="bicubic", brightness=0.8,
                    contrast=0.8, saturation=0.8, hue=0.2, blur_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    original_crop=224 / 256)
        return cls(**{**base, **overrides})

    @classmethod
    def byol_cifar10(cls, **overrides) -> "AugmentationConfig":
        """BYOL views on CIFAR-10: jitter 0.4/0.4/0.2/0.1, asymmetric blur (1.0 / 0.1) and solarize (0 / 0.2)."""
        base = dict(saturation=0.2, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
        return cls(**{**base, **overrides})

    @classmethod
    def byol_imagenet(cls, **overrides) -> "AugmentationConfig":
        """BYOL ImageNet: as SimCLR ImageNet with BYOL's jitter 0.4/0.4/0.2/0.1, blur (1.0 / 0.1), solarize (0 / 0.2)."""
        base = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2))
        return cls.imagenet(**{**base, **overrides})

    @classmethod
    def synthetic(cls, **overrides) -> "AugmentationConfig":
        """The shipped synthetic dataset: CIFAR-10's pipeline, but a hue jitter of +-0.5 turn.

        Each augmentation must really destroy the factor it acts on. The object colour classes
        are 30 degrees apart; CIFAR's +-0.1 turn (+-36 degrees) moves a colour by about one class,
        so colour survives the jitter, stays a useful feature for instance discrimination and no
        invariance to colour can be seen. +-0.5 turn spreads any colour over the whole hue circle
        (with grayscale p 0.2 on top), so an invariant representation must drop the colour label.
        Normalisation statistics are neutral (0.5, 0.25): the images are synthetic.
        """
        base = dict(hue=0.5, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        return cls(**{**base, **overrides})

    PRESETS = ("cifar10", "imagenet", "byol_cifar10", "byol_imagenet", "synthetic")

    @classmethod
    def preset(cls, name: str, **overrides) -> "AugmentationConfig":
        if name not in cls.PRESETS:
            raise ValueError(f"unknown augmentation preset {name!r}; choose one of {cls.PRESETS}")
        return getattr(cls, name)(**overrides)

    def replace(self, **changes) -> "AugmentationConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    # ---- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first field with an impossible value."""
        def bad(name, why):
            raise ValueError(f"AugmentationConfig.{name} = {getattr(self, name)!r}: {why}")

        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        for f in dataclasses.fields(self):  # shapes and finiteness first, so later checks can compare
            value = getattr(self, f.name)
            if f.name in ("crop_scale", "crop_ratio", "blur_sigma"):
                if not (isinstance(value, tuple) and len(value) == 2 and all(map(number, value))):
                    bad(f.name, "must be a pair of finite numbers (low, high)")
            elif f.name in ("mean", "std"):
                if not (isinstance(value, tuple) and len(value) == 3 and all(map(number, value))):
                    bad(f.name, "must be 3 finite numbers, one per channel")
            elif f.name in ("blur_p", "solarize_p"):
                values = value if isinstance(value, tuple) else (value,)
                if len(values) not in (1, 2) or not all(map(number, values)):
                    bad(f.name, "must be a probability in [0, 1] (or a pair of them, one per view)")
            elif f.name in ("interpolation", "hue_encoding"):
                if not isinstance(value, str):
                    bad(f.name, "must be a string")
            elif f.name != "blur_kernel" and not number(value):
                bad(f.name, "must be a finite number")
        if not (isinstance(self.size, int) and self.size > 0):
            bad("size", "must be a positive int (pixels)")
        lo, hi = self.crop_scale
        if not (0 < lo <= hi <= 1):
            bad("crop_scale", "needs 0 < min <= max <= 1 (fractions of the image area)")
        lo, hi = self.crop_ratio
        if not (0 < lo <= hi):
            bad("crop_ratio", "needs 0 < min <= max")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            bad("interpolation", "must be 'bilinear', 'bicubic' or 'nearest'")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            values = getattr(self, name)
            values = values if isinstance(values, (tuple, list)) else (values,)
            if len(values) not in (1, 2) or not all(0 <= float(v) <= 1 for v in values):
                bad(name, "must be a probability in [0, 1] (or a pair of them, one per view)")
        for name in ("brightness", "contrast", "saturation"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0 (factor drawn in [max(0, 1 - s), 1 + s])")
        if not 0 <= self.hue <= 0.5:
            bad("hue", "must lie in [0, 0.5] turns")
        lo, hi = self.blur_sigma
        if not (0 < lo <= hi):
            bad("blur_sigma", "needs 0 < min <= max (pixels)")
        if self.blur_kernel is not None and not (isinstance(self.blur_kernel, int) and self.blur_kernel > 0
                                                 and self.blur_kernel % 2 == 1):
            bad("blur_kernel", "must be a positive odd int")
        if self.kernel_size > 2 * self.size - 1:
            bad("blur_kernel", f"must be at most 2 * size - 1 = {2 * self.size - 1} (the blur pads by reflection)")
        if not 0 < self.original_crop <= 1:
            bad("original_crop", "must lie in (0, 1]: the central fraction of the shorter side that x_o keeps")
        if not 0 <= self.solarize_threshold <= 1:
            bad("solarize_threshold", "must lie in [0, 1]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            bad("std", "mean and std need 3 values each, std > 0")
        if self.hue_encoding not in ("raw", "cyclic"):
            bad("hue_encoding", "must be 'raw' or 'cyclic'")

    # ---- per-view values ---------------------------------------------------------------------
    def view_value(self, name: str, view: int) -> float:
        """The value of a per-view field (blur_p, solarize_p) for view 0 or 1."""
        value = getattr(self, name)
        return float(value[view]) if isinstance(value, (tuple, list)) else float(value)

    @property
    def has_blur(self) -> bool:
        return max(self.view_value("blur_p", v) for v in (0, 1)) > 0

    @property
    def has_solarize(self) -> bool:
        return max(self.view_value("solarize_p", v) for v in (0, 1)) > 0

    @property
    def kernel_size(self) -> int:
        """Blur kernel side: blur_kernel, or SimCLR's 10% of the image made odd (3 at 32 px, 23 at 224)."""
        if self.blur_kernel is not None:
            return self.blur_kernel
        k = max(3, int(0.1 * self.size))
        return k if k % 2 == 1 else k + 1

    # ---- the three steps -------------------------------------------------------------------
    def sample(self, n: int, image_size: Optional[tuple[int, int]] = None, generator: Optional[torch.Generator] = None,
               device=None, view: int = 0) -> AugmentationParams:
        """Draw per-image parameters for a batch of n images of `image_size` (H, W) (default: size x size)."""
        return sample(self, n, image_size, generator, device, view)

    def apply(self, images: torch.Tensor, params: AugmentationParams, normalize: bool = True) -> torch.Tensor:
        return apply(images, params, self, normalize)

    def encode(self, params: AugmentationParams) -> torch.Tensor:
        return encode(params, self)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 or float in [0, 1] -> float, (x - mean) / std per channel."""
        x = to_float(images)
        mean, std = channel_stats(self.mean, self.std, x.device)
        return (x - mean) / std

    def original(self, images: torch.Tensor) -> torch.Tensor:
        """x_o, EquiMod's anchor: the central square of `original_crop` of the shorter side, resized to
        `size` (Resize(size / original_crop) + CenterCrop(size)), and normalised. With the defaults
        (1.0) and images of `size` already, it is only normalised."""
        h, w = images.shape[-2:]
        if (h, w) == (self.size, self.size) and self.original_crop == 1.0:
            return self.normalize(images)
        params = AugmentationParams.identity(images.shape[0], images.device)
        params.crop[:] = centre_box(self.original_crop, h, w, images.device)
        return apply(images, params, self)

    def sample_pair(self, n: int, image_size: Optional[tuple[int, int]] = None,
                    generator: Optional[torch.Generator] = None, device=None
                    ) -> tuple[AugmentationParams, AugmentationParams]:
        """Parameters of both views of n images: (view 0 settings, view 1 settings), drawn in that order."""
        return tuple(self.sample(n, image_size, generator, device, view=v) for v in (0, 1))

    def views(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
              rows: Optional[slice] = None) -> Views:
        """x_o and two independently augmented views (view 0 and view 1 settings) with their params.

        images (N, 3, H, W). Parameters are drawn for all N images; `rows` then keeps a share of
        them (one process's share of a global batch: every process draws the same parameters).
        On a CPU the views come from sample_pair's stream; on a GPU from one joint draw
        (sample_views_together: the same distribution, other numbers).
        """
        check_images(images)
        n, size = images.shape[0], tuple(images.shape[-2:])
        if not _compute_all(images):
            p1, p2 = self.sample_pair(n, size, generator, images.device)
            if rows is not None:
                images, p1, p2 = images[rows], p1[rows], p2[rows]
            return Views(self.original(images), apply(images, p1, self), apply(images, p2, self), p1, p2)
        # The GPU path: both views drawn at once and applied in one pass (a fraction of the launches).
        both = sample_views_together(self, n, size, generator, images.device)
        p1, p2 = both[:n], both[n:]
        if rows is not None:
            images, p1, p2 = images[rows], p1[rows], p2[rows]
            both = AugmentationParams.cat([p1, p2])
        x_1, x_2 = apply(torch.cat([images, images]), both, self).chunk(2)
        return Views(self.original(images), x_1, x_2, p1, p2)

    @property
    def encoded_dim(self) -> int:
        """P, the length of encode()'s vector: 15 on CIFAR-10, +1 cyclic hue, +2 blur, +1 solarize."""
        return sum(width for _, width in self.layout())

    def layout(self) -> list[tuple[str, int]]:
        """(group name, number of columns) in the order of the encoded vector."""
        groups = [("crop", 4), ("flip", 1), ("jitter", 1), ("order", 4), ("brightness", 1),
                  ("contrast", 1), ("saturation", 1), ("hue", 2 if self.hue_encoding == "cyclic" else 1),
                  ("grayscale", 1)]
        if self.has_blur:
            groups.append(("blur", 2))
        if self.has_solarize:
            groups.append(("solarize", 1))
        return groups

    def encoded_groups(self) -> dict[str, slice]:
        """Group name -> the slice of encode()'s columns holding it (to mask or permute one group)."""
        slices, start = {}, 0
        for name, width in self.layout():
            slices[name] = slice(start, start + width)
            start += width
        return slices

    def column_names(self) -> list[str]:
        """Names of the encoded vector's columns, in order (for tables and plots)."""
        names = []
        for group, width in self.layout():
            if group == "crop":
                names += ["top", "left", "height", "width"]
            elif group == "order":
                names += [f"op{i + 1}" for i in range(4)]
            elif group == "hue" and width == 2:
                names += ["hue cos", "hue sin"]
            elif group == "blur":
                names += ["blur", "sigma"]
            else:
                names.append(group)
        return names

    def param_mask(self, groups: Sequence[str]) -> tuple[bool, ...]:
        """P booleans: True on the columns of the named groups (the predictor sees only those).

        >>> AugmentationConfig().param_mask(["flip"])[:6]
        (False, False, False, False, True, False)
        """
        slices = self.encoded_groups()
        unknown = [name for name in groups if name not in slices]
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; this config has {list(slices)}")
        keep = [False] * self.encoded_dim
        for name in groups:
            for i in range(self.encoded_dim)[slices[name]]:
                keep[i] = True
        return tuple(keep)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
# The uniform numbers behind one view's parameters, in the order they are drawn. With the seed, this
# order fixes every result trained on a CPU: a change to it (a new draw anywhere) means retraining them.
DRAWS = (("area", 10), ("log_ratio", 10), ("top", 1), ("left", 1), ("flip", 1), ("jitter", 1), ("order", 4),
         ("brightness", 1), ("contrast", 1), ("saturation", 1), ("hue", 1), ("grayscale", 1), ("blur", 1),
         ("sigma", 1), ("solarize", 1))


def draw_uniforms(rows: int, generator=None, device=None, together: bool = False,
                  draws=DRAWS) -> dict[str, torch.Tensor]:
    """U[0, 1) numbers for `rows` images: name -> (rows,) tensor, or (rows, width) for width > 1.

    together=False: one torch.rand per name, in the order of `draws` (the CPU path: the stream the
    shipped results were trained with). together=True: one torch.rand (rows, 36) split into the
    names, the same distribution in one kernel instead of 15 (the GPU path, where every launch costs).
    """
    widths = [width for _, width in draws]
    if together:
        columns = torch.rand(rows, sum(widths), generator=generator, device=device).split(widths, dim=1)
    else:
        columns = [torch.rand(rows, width, generator=generator, device=device) for width in widths]
    return {name: column[:, 0] if width == 1 else column for (name, width), column in zip(draws, columns)}


def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """U[0, 1) numbers -> U[low, high)."""
    return low + (high - low) * u


def crop_box(u: dict[str, torch.Tensor], image_size: tuple[int, int], scale, ratio) -> torch.Tensor:
    """RandomResizedCrop.get_params for n images at once -> (N, 4) top, left, height, width fractions.

    u holds the uniforms "area", "log_ratio" (N, 10) and "top", "left" (N,) (see draw_uniforms).
    As torchvision: up to 10 tries of (area, log-uniform aspect ratio) rounded to whole pixels,
    kept if the box fits; images where no try fits get the central crop clamped to `ratio`.
    """
    height, width = image_size
    area = height * width * _between(u["area"], scale[0], scale[1])
    log_ratio = _between(u["log_ratio"], math.log(ratio[0]), math.log(ratio[1]))
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


def sample_crop(n: int, image_size: tuple[int, int], scale, ratio, generator=None, device=None) -> torch.Tensor:
    """crop_box of n images with fresh uniforms -> (N, 4) top, left, height, width fractions."""
    u = draw_uniforms(n, generator, device, draws=DRAWS[:4])  # area, log_ratio, top, left
    return crop_box(u, image_size, scale, ratio)


def params_from_uniforms(config: AugmentationConfig, u: dict[str, torch.Tensor], image_size: tuple[int, int],
                         blur_p, solarize_p) -> AugmentationParams:
    """Turn uniforms (draw_uniforms) into the parameters of the config's distribution.

    blur_p, solarize_p: this view's probabilities, floats or (N,) tensors (a row's view decides).
    A Bernoulli(p) draw is u < p; a uniform in [low, high) is low + (high - low) * u.
    """
    c = config
    crop = crop_box(u, image_size, c.crop_scale, c.crop_ratio)
    flip = u["flip"] < c.flip_p

    jitter = u["jitter"] < c.jitter_p
    order = torch.argsort(u["order"], dim=1)  # a permutation per image
    factors = {name: _between(u[name], max(0.0, 1 - s), 1 + s)
               for name, s in (("brightness", c.brightness), ("contrast", c.contrast), ("saturation", c.saturation))}
    hue = _between(u["hue"], -c.hue, c.hue)
    # Without jitter the parameters say what was done: nothing (identity factors, order 0 1 2 3).
    order = torch.where(jitter[:, None], order, torch.arange(4, device=order.device))
    factors = {k: torch.where(jitter, v, torch.ones_like(v)) for k, v in factors.items()}
    hue = torch.where(jitter, hue, torch.zeros_like(hue))

    grayscale = u["grayscale"] < c.gray_p
    blur = u["blur"] < blur_p
    sigma = torch.where(blur, _between(u["sigma"], c.blur_sigma[0], c.blur_sigma[1]), torch.zeros_like(u["sigma"]))
    solarize = u["solarize"] < solarize_p
    return AugmentationParams(crop=crop, flip=flip, jitter=jitter, order=order, hue=hue, grayscale=grayscale,
                              blur=blur, sigma=sigma, solarize=solarize, **factors)


def _check_sampling(n: int, generator, device) -> Optional[torch.device]:
    """Raise ValueError for a bad batch size or a generator on another device; return the device."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of images, got {n}")
    if generator is not None:
        device = generator.device if device is None else torch.device(device)
        if device.type != generator.device.type:
            raise ValueError(f"the generator is on {generator.device} but the batch on {device}; "
                             f"create it with torch.Generator(device={str(device)!r})")
    return device


def sample(config: AugmentationConfig, n: int, image_size=None, generator=None, device=None,
           view: int = 0) -> AugmentationParams:
    """Draw per-image augmentation parameters for a batch (see AugmentationConfig.sample)."""
    if view not in (0, 1):
        raise ValueError(f"view must be 0 or 1, got {view!r}")
    device = _check_sampling(n, generator, device)
    u = draw_uniforms(n, generator, device)
    return params_from_uniforms(config, u, image_size or (config.size, config.size),
                                config.view_value("blur_p", view), config.view_value("solarize_p", view))


def sample_views_together(config: AugmentationConfig, n: int, image_size=None, generator=None,
                          device=None) -> AugmentationParams:
    """Both views' parameters of n images from one draw: 2n rows, view 0 settings first (the GPU path).

    The same distribution as sample_pair, other numbers: use it where launches cost, not where a
    CPU result must be reproduced (sample_pair's stream is the one the shipped results used).
    """
    device = _check_sampling(n, generator, device)
    u = draw_uniforms(2 * n, generator, device, together=True)
    second = torch.arange(2 * n, device=device) >= n  # the rows of view 1

    def per_view(name):
        p0, p1 = config.view_value(name, 0), config.view_value(name, 1)
        return p0 if p0 == p1 else torch.where(second, p1, p0)

    return params_from_uniforms(config, u, image_size or (config.size, config.size),
                                per_view("blur_p"), per_view("solarize_p"))


def _compute_all(images: torch.Tensor) -> bool:
    """Whether _where computes every image (GPU) rather than the selected subset (CPU)."""
    return images.is_cuda


def _where(mask: torch.Tensor, op, images: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """images[i] <- op(images[i], args[i]) for the images where mask[i], others unchanged.

    On CUDA every image is computed and the result selected with torch.where: the GPU has work to
    spare, and a data-dependent subset would force a host synchronisation. On CPU only the selected
    subset is computed and written back in place (apply owns the tensor it passes here).
    """
    if _compute_all(images):
        return torch.where(mask.view(-1, 1, 1, 1), op(images, *args), images)
    index = mask.nonzero().squeeze(1)
    if index.numel() > 0:  # index_select: the same rows as images[index], several times faster on a CPU
        images[index] = op(images.index_select(0, index), *(a.index_select(0, index) for a in args))
    return images


# --------------------------------------------------------------------------------------------
# Apply: the whole pipeline for a batch
# --------------------------------------------------------------------------------------------
def apply(images: torch.Tensor, params: AugmentationParams, config: Optional[AugmentationConfig] = None,
          normalize: bool = True) -> torch.Tensor:
    """Augment a batch with given parameters: a pure function (same inputs, same pixels).

    images: (N, 3, H, W) uint8 (0-255) or float (0-1), on any device; params: N rows, same device.
    Returns (N, 3, S, S) float32, S = config.size: normalised with config.mean/std if `normalize`,
    else in [0, 1].
    """
    config = config or AugmentationConfig()
    check_images(images)
    check_params(images, params)
    p = params
    # uint8 -> float in the (N, H, 3, W) memory layout that resized_crop multiplies in: its (N, H, 3W)
    # view of the images is then free, and the copy is made of bytes, not floats
    x = to_float(images.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3)
    x = resized_crop(x, p.crop, p.flip, config.size, config.interpolation).clamp_(0, 1)

    # Colour jitter: at step s each image runs its own op order[:, s] (a per-image random order).
    if _compute_all(x):
        x = jitter_every_image(x, p.jitter, p.order, torch.stack([p.brightness, p.contrast, p.saturation], 1), p.hue)
    else:
        for step in range(4):
            for op_index, op in enumerate(JITTER_FUNCTIONS):
                selected = p.jitter & (p.order[:, step] == op_index)
                factor = getattr(p, JITTER_OPS[op_index])
                x = _where(selected, op, x, factor)

    x = _where(p.grayscale, grayscale, x)
    if config.has_blur:
        sigma = torch.where(p.blur, p.sigma, torch.ones_like(p.sigma))  # sigma 0 never reaches the kernel
        x = _where(p.blur, lambda im, s: gaussian_blur(im, s, config.kernel_size), x, sigma)
    if config.has_solarize:
        x = _where(p.solarize, lambda im: solarize(im, config.solarize_threshold), x)
    return config.normalize(x) if normalize else x


# --------------------------------------------------------------------------------------------
# Encode: parameters -> the predictor's input vector
# --------------------------------------------------------------------------------------------
def raw_vector(params: AugmentationParams, config: AugmentationConfig) -> torch.Tensor:
    """(N, P) float: the parameters in the official order, before standardisation."""
    p = params
    columns = [p.crop.float(), p.flip.float()[:, None], p.jitter.float()[:, None], p.order.float(),
               p.brightness[:, None], p.contrast[:, None], p.saturation[:, None]]
    if config.hue_encoding == "cyclic":  # the shift is an angle: +0.5 and -0.5 turns are the same hue
        angle = 2 * math.pi * p.hue
        columns.append(torch.stack([torch.cos(angle), torch.sin(angle)], dim=1))
    else:
        columns.append(p.hue[:, None])
    columns.append(p.grayscale.float()[:, None])
    if config.has_blur:
        columns += [p.blur.float()[:, None], p.sigma[:, None]]
    if config.has_solarize:
        columns.append(p.solarize.float()[:, None])
    return torch.cat([c.float() for c in columns], dim=1)


def _config_key(config: AugmentationConfig) -> tuple:
    return tuple((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))


@functools.lru_cache(maxsize=64)
def _encoding_stats(key: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    config = AugmentationConfig(**dict(key))
    generator = torch.Generator().manual_seed(0)
    n = 1 << 15  # per view; the std of a mean over 2^16 draws is ~0.4% of a column's std
    vectors = [raw_vector(p, config) for p in config.sample_pair(n, generator=generator)]
    vectors = torch.cat(vectors)
    mean, std = vectors.mean(dim=0), vectors.std(dim=0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant column stays 0 after centring
    return mean, std


@functools.lru_cache(maxsize=64)
def channel_stats(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) normalisation mean and std on `device`, made once per device (no copy per step)."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


@functools.lru_cache(maxsize=64)
def centre_box(fraction: float, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(4,) crop box (top, left, height, width; fractions) of the central square of `fraction` of the
    shorter side, made once per (fraction, size, device): x_o needs no host-to-device copy per step."""
    side = fraction * min(height, width)
    return torch.tensor([(1 - side / height) / 2, (1 - side / width) / 2, side / height, side / width], device=device)


@functools.lru_cache(maxsize=64)
def _device_encoding_stats(key: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = _encoding_stats(key)
    return mean.to(device), std.to(device)


def encoding_stats(config: AugmentationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (P,) of the raw vector, measured on 2 x 32768 draws of the config (both views)."""
    return _encoding_stats(_config_key(config))


def encode(params: AugmentationParams, config: AugmentationConfig) -> torch.Tensor:
    """The predictor's input t: (N, P) float32, each column standardised (mean 0, std 1 over draws).

    Which columns a model's predictor actually reads is the model's business (ModelConfig.param_mask,
    built with config.param_mask(groups)).
    """
    mean, std = _device_encoding_stats(_config_key(config), params.device)  # made once per (config, device)
    return (raw_vector(params, config) - mean) / std
