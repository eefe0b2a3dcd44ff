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

Each op runs only on the images that draw it (a subset). The draw order (`DRAWS`) is the stream
every shipped result was trained with. A GPU has its own path, the same pixels in fewer kernel
launches, in ``augment_cuda.py`` (the trainer picks it on CUDA devices).

The file reads in that order: parameters -> config -> sample -> apply -> encode. The pixel
operations are pure functions in ``functional.py``, each tested against its torchvision twin (its
docstring says how close, and why the crop's border differs).

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

from .functional import (
    JITTER_FUNCTIONS,
    centre_box,
    check_images,
    check_params,
    crop_box,
    gaussian_blur,
    grayscale,
    resized_crop,
    solarize,
    to_float,
)

# Colour-jitter operations, indexed as in torchvision's ColorJitter (the order tensor holds these).
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

PerView = Union[float, tuple[float, float]]  # a probability that may differ between the two views
PROBABILITY = "must be a probability in [0, 1] (or a pair of them, one per view)"
ABOVE_ZERO = math.nextafter(0.0, 1.0)  # the smallest float above 0: `x >= ABOVE_ZERO` reads `x > 0`


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

        Made on ``device`` without copying host data (x_o is built from them every step).
        """
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
        """SimCLR's ImageNet augmentations.

        Crop 0.08-1 to 224 (bicubic), jitter 0.8/0.8/0.8/0.2, gray 0.2, blur p 0.5 sigma 0.1-2;
        x_o is Resize(256) + CenterCrop(224), as the official runs (original_crop 224/256).
        """
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
        """BYOL ImageNet: SimCLR ImageNet with BYOL's jitter 0.4/0.4/0.2/0.1, blur (1.0 / 0.1), solarize (0 / 0.2)."""
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
    #: (field, low, high, why): each number of the field lies in [low, high]; a (min, max) pair is ordered
    RANGES = (
        ("crop_scale", ABOVE_ZERO, 1, "needs 0 < min <= max <= 1 (fractions of the image area)"),
        ("crop_ratio", ABOVE_ZERO, math.inf, "needs 0 < min <= max"),
        *((name, 0, 1, PROBABILITY) for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p")),
        *((name, 0, math.inf, "must be >= 0 (factor drawn in [max(0, 1 - s), 1 + s])")
          for name in ("brightness", "contrast", "saturation")),
        ("hue", 0, 0.5, "must lie in [0, 0.5] turns"),
        ("blur_sigma", ABOVE_ZERO, math.inf, "needs 0 < min <= max (pixels)"),
        ("original_crop", ABOVE_ZERO, 1, "must lie in (0, 1]: the central fraction of the shorter side that x_o keeps"),
        ("solarize_threshold", 0, 1, "must lie in [0, 1]"),
        ("std", ABOVE_ZERO, math.inf, "mean and std need 3 values each, std > 0"),
    )
    CHOICES = (("interpolation", ("bilinear", "bicubic", "nearest")), ("hue_encoding", ("raw", "cyclic")))
    PAIRS = ("crop_scale", "crop_ratio", "blur_sigma")  # (low, high): ordered
    #: field -> (the tuple lengths it may have, why) for the fields holding several numbers; others hold one
    SHAPES = {**dict.fromkeys(PAIRS, ((2,), "must be a pair of finite numbers (low, high)")),
              **dict.fromkeys(("mean", "std"), ((3,), "must be 3 finite numbers, one per channel")),
              **dict.fromkeys(("blur_p", "solarize_p"), ((1, 2), PROBABILITY))}

    def validate(self) -> None:
        """Raise ValueError naming the first field with an impossible value."""
        def bad(name, why):
            raise ValueError(f"AugmentationConfig.{name} = {getattr(self, name)!r}: {why}")

        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        for f in dataclasses.fields(self):  # shapes and finiteness first, so later checks can compare
            value = getattr(self, f.name)
            if f.name in self.SHAPES:
                lengths, why = self.SHAPES[f.name]
                values = value if isinstance(value, tuple) else (value,)
                if len(values) not in lengths or not all(map(number, values)):
                    bad(f.name, why)
            elif f.name in dict(self.CHOICES):
                if not isinstance(value, str):
                    bad(f.name, "must be a string")
            elif f.name != "blur_kernel" and not number(value):
                bad(f.name, "must be a finite number")
        if not (isinstance(self.size, int) and self.size > 0):
            bad("size", "must be a positive int (pixels)")
        for name, low, high, why in self.RANGES:
            values = getattr(self, name)
            values = values if isinstance(values, tuple) else (values,)
            ordered = name not in self.PAIRS or values[0] <= values[1]
            if not (ordered and all(low <= v <= high for v in values)):
                bad(name, why)
        for name, choices in self.CHOICES:
            if getattr(self, name) not in choices:
                bad(name, f"must be {', '.join(map(repr, choices[:-1]))} or {choices[-1]!r}")
        if self.blur_kernel is not None and not (isinstance(self.blur_kernel, int) and self.blur_kernel > 0
                                                 and self.blur_kernel % 2 == 1):
            bad("blur_kernel", "must be a positive odd int")
        if self.kernel_size > 2 * self.size - 1:
            bad("blur_kernel", f"must be at most 2 * size - 1 = {2 * self.size - 1} (the blur pads by reflection)")

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
        mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (self.mean, self.std))
        return (x - mean) / std

    def original(self, images: torch.Tensor) -> torch.Tensor:
        """x_o, EquiMod's anchor: a central square, resized and normalised.

        The square is ``original_crop`` of the shorter side, resized to ``size``
        (Resize(size / original_crop) + CenterCrop(size)). With the defaults (1.0) and images of
        ``size`` already, it is only normalised.
        """
        h, w = images.shape[-2:]
        if (h, w) == (self.size, self.size) and self.original_crop == 1.0:
            return self.normalize(images)
        params = AugmentationParams.identity(images.shape[0], images.device)
        params.crop[:] = torch.tensor(centre_box(self.original_crop, h, w), device=images.device)
        return apply(images, params, self)

    def sample_pair(self, n: int, image_size: Optional[tuple[int, int]] = None,
                    generator: Optional[torch.Generator] = None, device=None
                    ) -> tuple[AugmentationParams, AugmentationParams]:
        """Parameters of both views of n images: (view 0 settings, view 1 settings), drawn in that order."""
        return tuple(self.sample(n, image_size, generator, device, view=v) for v in (0, 1))

    def views(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
              rows: Optional[slice] = None, group_size: int = 0) -> Views:
        """x_o and two independently augmented views (view 0 and view 1 settings) with their params.

        images (N, 3, H, W). Parameters are drawn for all N images; `rows` then keeps a share of
        them (one process's share of a global batch: every process draws the same parameters).
        The parameters come from sample_pair's stream (a GPU's augment_cuda draws both at once).
        group_size > 0: each view's parameters are shared within contiguous groups of that many
        images of the N (``share_within_groups``, before `rows`); 0: every image its own draw.
        """
        check_images(images)
        p1, p2 = self.sample_pair(images.shape[0], tuple(images.shape[-2:]), generator, images.device)
        if group_size:
            p1, p2 = share_within_groups(p1, group_size), share_within_groups(p2, group_size)
        if rows is not None:
            images, p1, p2 = images[rows], p1[rows], p2[rows]
        return Views(self.original(images), apply(images, p1, self), apply(images, p2, self), p1, p2)

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


def draw_uniforms(rows: int, generator=None, device=None, draws=DRAWS) -> dict[str, torch.Tensor]:
    """U[0, 1) numbers for ``rows`` images: name -> ``(rows,)``, or ``(rows, width)`` for width > 1.

    One torch.rand per name in the order of ``draws`` (the stream the shipped results were trained with).
    """
    columns = [torch.rand(rows, width, generator=generator, device=device) for _, width in draws]
    return {name: column[:, 0] if width == 1 else column for (name, width), column in zip(draws, columns)}


def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """U[0, 1) numbers -> U[low, high)."""
    return low + (high - low) * u


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


def check_sampling(n: int, generator, device) -> Optional[torch.device]:
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
    device = check_sampling(n, generator, device)
    u = draw_uniforms(n, generator, device)
    return params_from_uniforms(config, u, image_size or (config.size, config.size),
                                config.view_value("blur_p", view), config.view_value("solarize_p", view))


def share_within_groups(params: AugmentationParams, group_size: int) -> AugmentationParams:
    """One augmentation per group: row i takes the values of the first row of its group.

    The N rows are cut into contiguous groups of ``group_size`` (rows 0..g-1, g..2g-1, ...); every
    row of a group gets its first row's parameters, the crop box (fractions of the image) included,
    so images of one size get the same pixels' box. CARE's views (care.py): one draw per group and
    per view. N must be a multiple of group_size; group_size 1 changes nothing.
    """
    n = len(params)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 or n % group_size:
        raise ValueError(f"group_size = {group_size!r}: must be a positive int dividing the {n} rows")
    first_of_group = torch.arange(n, device=params.device) // group_size * group_size
    return params[first_of_group]


def _where(mask: torch.Tensor, op, images: torch.Tensor, *args: torch.Tensor) -> None:
    """In place, on the subset only: images[i] <- op(images[i], args[i]) where mask[i] (apply owns images)."""
    index = mask.nonzero().squeeze(1)
    if index.numel() > 0:  # index_select: the same rows as images[index], several times faster on a CPU
        images[index] = op(images.index_select(0, index), *(a.index_select(0, index) for a in args))


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
    x = crop_and_flip(images, p, config)
    for step in range(4):  # colour jitter: at step s each image runs its own op order[:, s]
        for op_index, op in enumerate(JITTER_FUNCTIONS):
            _where(p.jitter & (p.order[:, step] == op_index), op, x, getattr(p, JITTER_OPS[op_index]))
    _where(p.grayscale, grayscale, x)
    if config.has_blur:
        sigma = torch.where(p.blur, p.sigma, torch.ones_like(p.sigma))  # sigma 0 never reaches the kernel
        _where(p.blur, lambda im, s: gaussian_blur(im, s, config.kernel_size), x, sigma)
    if config.has_solarize:
        _where(p.solarize, lambda im: solarize(im, config.solarize_threshold), x)
    return config.normalize(x) if normalize else x


def crop_and_flip(images: torch.Tensor, params: AugmentationParams, config: AugmentationConfig) -> torch.Tensor:
    """Apply's first step, crop then flip: ``(N, 3, H, W)`` uint8 or float -> ``(N, 3, S, S) float32`` in [0, 1]."""
    # uint8 -> float in the (N, H, 3, W) memory layout that resized_crop multiplies in: its (N, H, 3W)
    # view of the images is then free, and the copy is made of bytes, not floats
    x = to_float(images.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3)
    return resized_crop(x, params.crop, params.flip, config.size, config.interpolation).clamp_(0, 1)


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


def encoding_stats(config: AugmentationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (P,) of the raw vector, measured on 2 x 32768 draws of the config (both views)."""
    return _encoding_stats(_config_key(config))


def encode(params: AugmentationParams, config: AugmentationConfig) -> torch.Tensor:
    """The predictor's input t: (N, P) float32, each column standardised (mean 0, std 1 over draws).

    Which columns a model's predictor actually reads is the model's business (ModelConfig.param_mask,
    built with config.param_mask(groups)).
    """
    mean, std = encoding_stats(config)
    return (raw_vector(params, config) - mean.to(params.device)) / std.to(params.device)
