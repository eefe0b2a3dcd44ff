"""Recipes of augmentation parameters: every way the package builds an AugmentationParams by design.

`AugmentationConfig.sample` draws parameters at random, the way training does. The evaluations,
figures and explorers need parameters made on purpose, and they all come from here:

    sample_views(aug, n_images=8, views=16, image_size=(32, 32), generator=g)   # K views per image
    sample_one_augmentation(aug, "hue", n, (32, 32), g)     # only one augmentation acts
    centre_crop_params(n, 32 / 36)                          # CIFAR's test-time resize + centre crop
    sweep_params(aug, "brightness", steps=9)                # identity -> strongest, one augmentation
    params_from_values({"hue": 0.25, "flip": True}, aug)    # slider values -> one row
    describe_params(params, 0)                              # one row -> words
    training_range(aug, "hue").text                         # what training drew: "trained: all hues"
    outside_training_range({"hue": 0.3}, cifar_aug)         # ["hue +0.30 (trained ±0.10)"]
    parameter_targets(params, aug)                          # what a probe tries to read back

AUGMENTATION_TABLE holds one record per augmentation that can act alone (the per-augmentation
breakdown, the sweeps, the explorers' controls, the probes' targets): the fields it sets, its
controls, what training drew, its sweep. AUGMENTATIONS and ONE_AUGMENTATION_FIELDS are read from it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .augment import JITTER_OPS, AugmentationConfig, AugmentationParams


# ---- K views per image, one augmentation at a time --------------------------------------
def sample_views(aug: AugmentationConfig, n_images: int, views: int, image_size: tuple[int, int],
                 generator: torch.Generator, device=None) -> AugmentationParams:
    """Parameters of `views` augmented views of each image: n_images * views rows (row i*views + k).

    Drawn from the config's own distribution; even k use its view-1 settings and odd k its view-2
    settings (they differ only for BYOL's asymmetric blur and solarize).
    """
    n = n_images * views
    first, second = aug.sample_pair(n, image_size, generator, device)
    odd = torch.arange(n, device=first.device) % 2 == 1
    return second.where(odd, first)

# ---- the vocabulary: one record per augmentation that can act alone ----------------------------
@dataclass(frozen=True)
class Augmentation:
    """What the recipes know about one augmentation (a new one: its op, its parameters, one record here).

    fields: the AugmentationParams fields it sets; controls: its explorer controls (the names
    params_from_values takes), shown in display column `column` (0 geometry, 1 colour jitter, 2 the
    rest); identity: each control's "off" value; switch: on/off (a fair coin when it acts alone,
    two sweep steps, a checkbox) rather than a strength. Functions of the config `aug`:
    present(aug): False where the config has none of it (no control, probe target or sweep);
    used(aug): training applies it; trained(aug, control): what training drew, (low, high, span or
    None) or, for a switch, (p, span); slider(aug, control): (label, low, high, step) of a strength's
    slider; sweep(aug, steps): (values, fraction, label) from identity to the strongest, and
    sweep_values(value, image_aspect): the control values of one step; write(p, values,
    image_aspect): set row 0 of params p from control values; targets(p): {name: (N,)}, what a probe reads.
    """

    name: str
    fields: tuple[str, ...]
    controls: tuple[str, ...]
    column: int
    identity: dict
    switch: bool
    present: Callable
    used: Callable
    trained: Callable
    slider: Optional[Callable]
    sweep: Callable
    sweep_values: Callable
    write: Callable
    targets: Callable


def _always(aug: AugmentationConfig) -> bool:
    return True


def _two_sided(aug: AugmentationConfig, name: str, centre: float, steps: int, unit: str):
    """Sweep values centre - s .. centre + s (s = aug.<name>; factors stay >= 0), fraction -1 .. 1, a label."""
    strength = getattr(aug, name)
    if strength <= 0:
        raise ValueError(f"aug.{name} is 0: nothing to sweep")
    values = centre + strength * np.linspace(-1.0, 1.0, steps)  # the middle step is exactly identity
    if unit == "factor":
        values = np.maximum(values, 0.0)  # a factor cannot go below 0
    return values, (values - centre) / strength, f"{name} ({unit})"


def _write_jitter(name: str, identity: float) -> Callable:
    def write(p, values, image_aspect):
        value = float(values.get(name, identity))
        if value != identity:  # the jitter ran (params_from_values sets its order)
            p.jitter[0] = True
            getattr(p, name)[0] = value
    return write


def _jitter_factor(name: str) -> Augmentation:
    """brightness, contrast, saturation: a factor drawn in [max(0, 1 - s), 1 + s] when the jitter runs."""
    def trained(aug, _):
        s = getattr(aug, name) if aug.jitter_p > 0 else 0.0
        return (max(0.0, 1 - s), 1 + s, None) if s > 0 else (1.0, 1.0, "1.00 only")

    def slider(aug, _):  # the config's range, or [0.6, 1.4] where it leaves this factor at 0
        s = getattr(aug, name) or 0.4
        return name, max(0.0, 1 - s), 1 + s, 0.01

    return Augmentation(name, ("jitter", name), (name,), 1, {name: 1.0}, False, present=_always,
                        used=lambda aug: aug.jitter_p > 0 and getattr(aug, name) > 0, trained=trained, slider=slider,
                        sweep=lambda aug, steps: _two_sided(aug, name, 1.0, steps, "factor"),
                        sweep_values=lambda value, _: {name: value}, write=_write_jitter(name, 1.0),
                        targets=lambda p: {name: getattr(p, name)})


def _switch(name: str, column: int, probability: Callable, absent: Optional[str] = None) -> Augmentation:
    """An on/off augmentation (flip, grayscale, solarize), on with probability(aug) = (view 1's p, view 2's p).

    With an ``absent`` message (the sweep's error), a config that never applies it has none of it.
    """
    def trained(aug, _):
        p = probability(aug)
        return max(p), f"p {p[0]:.2f}" if p[0] == p[1] else f"p {p[0]:.2f} / {p[1]:.2f} (view 1 / 2)"

    def sweep(aug, steps):
        if absent and max(probability(aug)) == 0:
            raise ValueError(absent)
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), f"{name} (off, on)"

    def write(p, values, image_aspect):
        getattr(p, name)[0] = bool(values.get(name, False))

    return Augmentation(name, (name,), (name,), column, {name: 0.0}, True,
                        present=(lambda aug: max(probability(aug)) > 0) if absent else _always,
                        used=lambda aug: max(probability(aug)) > 0, trained=trained, slider=None, sweep=sweep,
                        sweep_values=lambda value, _: {name: bool(value)}, write=write,
                        targets=lambda p: {name: getattr(p, name)})


def _crop_trained(aug, control):
    return (*getattr(aug, control), None) if control in ("crop_scale", "crop_ratio") else (0.0, 1.0, "anywhere")


def _crop_slider(aug, control):
    if control == "crop_scale":
        return "crop scale", aug.crop_scale[0], 1.0, 0.01
    if control == "crop_ratio":
        return "aspect w/h", min(aug.crop_ratio[0], 1.0), max(aug.crop_ratio[1], 1.0), 0.01
    return control.replace("_", " "), 0.0, 1.0, 0.01  # crop top, crop left


def _crop_sweep(aug, steps):
    low = aug.crop_scale[0]
    if low >= 1:
        raise ValueError("crop_scale min is 1: nothing to sweep")
    values = np.linspace(1.0, low, steps)
    return values, (1 - values) / (1 - low), "crop scale (area fraction)"


def _crop_sweep_values(value, image_aspect):  # a centred square box
    _, _, h, w = slider_crop_box(value, 1.0, 0.0, 0.0, image_aspect)
    return {"crop_scale": value, "crop_top": (1 - h) / 2, "crop_left": (1 - w) / 2}


def _crop_write(p, values, image_aspect):
    box = slider_crop_box(values.get("crop_scale", 1.0), values.get("crop_ratio", 1.0), values.get("crop_top", 0.0),
                          values.get("crop_left", 0.0), image_aspect)
    p.crop[0] = torch.tensor(box)


def _hue_trained(aug, _):
    h = aug.hue if aug.jitter_p > 0 else 0.0
    return (-h, h, "all hues" if h >= 0.5 else f"±{h:.2f}") if h > 0 else (0.0, 0.0, "0 only")


def _blur_sweep(aug, steps):
    if not aug.has_blur:
        raise ValueError("this config never blurs (blur_p = 0): nothing to sweep")
    values = np.linspace(0.0, aug.blur_sigma[1], steps)
    return values, values / aug.blur_sigma[1], "blur sigma (pixels)"


def _blur_write(p, values, image_aspect):
    sigma = float(values.get("sigma", 0.0))
    if sigma > 0:
        p.blur[0], p.sigma[0] = True, sigma


_CROP_TARGETS = ("crop_top", "crop_left", "crop_height", "crop_width")

#: The augmentations that can act alone, in display order: name -> its record.
AUGMENTATION_TABLE = {a.name: a for a in (
    Augmentation("crop", ("crop",), ("crop_scale", "crop_ratio", "crop_top", "crop_left"), 0,
                 {"crop_scale": 1.0, "crop_ratio": 1.0, "crop_top": 0.0, "crop_left": 0.0}, False, present=_always,
                 used=_always, trained=_crop_trained, slider=_crop_slider, sweep=_crop_sweep,
                 sweep_values=_crop_sweep_values, write=_crop_write,
                 targets=lambda p: {name: p.crop[:, i] for i, name in enumerate(_CROP_TARGETS)}),
    _switch("flip", 0, lambda aug: (aug.flip_p, aug.flip_p)),
    *(_jitter_factor(name) for name in JITTER_OPS[:3]),
    Augmentation("hue", ("jitter", "hue"), ("hue",), 1, {"hue": 0.0}, False, present=_always,
                 used=lambda aug: aug.jitter_p > 0 and aug.hue > 0, trained=_hue_trained,
                 slider=lambda aug, _: ("hue (turns)", -0.5, 0.5, 0.01),  # the whole colour circle
                 sweep=lambda aug, steps: _two_sided(aug, "hue", 0.0, steps, "turns"),
                 sweep_values=lambda value, _: {"hue": value}, write=_write_jitter("hue", 0.0),
                 targets=lambda p: {"hue": p.hue}),
    _switch("grayscale", 2, lambda aug: (aug.gray_p, aug.gray_p)),
    Augmentation("blur", ("blur", "sigma"), ("sigma",), 2, {"sigma": 0.0}, False,
                 present=lambda aug: aug.has_blur, used=lambda aug: aug.has_blur,
                 trained=lambda aug, _: (*aug.blur_sigma, None) if aug.has_blur else (0.0, 0.0, "0 only"),
                 slider=lambda aug, _: ("blur sigma", 0.0, aug.blur_sigma[1], 0.05), sweep=_blur_sweep,
                 sweep_values=lambda value, _: {"sigma": value}, write=_blur_write,
                 targets=lambda p: {"sigma": p.sigma}),
    _switch("solarize", 2, lambda aug: tuple(aug.view_value("solarize_p", view) for view in (0, 1)),
            absent="this config never solarizes (solarize_p = 0): nothing to sweep"),
)}

#: The augmentations that can act alone, in display order.
AUGMENTATIONS = tuple(AUGMENTATION_TABLE)

#: The fields of AugmentationParams that each augmentation of the breakdown changes.
ONE_AUGMENTATION_FIELDS = {name: a.fields for name, a in AUGMENTATION_TABLE.items()}

#: Each explorer control's augmentation record (every control but "image" and "order").
CONTROL_OWNERS = {control: a for a in AUGMENTATION_TABLE.values() for control in a.controls}


def one_at_a_time_groups(aug: AugmentationConfig) -> list[str]:
    """The augmentations the config uses (the ones the per-augmentation breakdown varies alone)."""
    return [name for name, a in AUGMENTATION_TABLE.items() if a.used(aug)]

def sample_one_augmentation(aug: AugmentationConfig, group: str, n: int, image_size: tuple[int, int],
                            generator: torch.Generator, device=None) -> AugmentationParams:
    """``n`` parameter rows where only augmentation ``group`` acts; everything else is the identity.

    Starts from AugmentationParams.identity(n) and copies the group's fields from a sample of the
    config in which that augmentation always acts when it has a strength (colour jitter, blur:
    probability 1, one factor at a time, jitter order left at 0 1 2 3) and is a fair coin when it
    is on/off (flip, grayscale, solarize: probability 0.5, so the K views of an image come in two
    kinds). Crop boxes keep the config's scale and ratio.
    """
    if group not in ONE_AUGMENTATION_FIELDS:
        raise ValueError(f"unknown augmentation {group!r}; choose one of {list(ONE_AUGMENTATION_FIELDS)}")
    forced = aug.replace(jitter_p=1.0, blur_p=1.0, flip_p=0.5, gray_p=0.5, solarize_p=0.5)
    sampled = forced.sample(n, image_size, generator, device)
    params = AugmentationParams.identity(n, sampled.device)
    for name in ONE_AUGMENTATION_FIELDS[group]:
        setattr(params, name, getattr(sampled, name))
    return params

# ---- the linear evaluation's fixed recipes -----------------------------------------------
def linear_eval_augmentation(aug: AugmentationConfig) -> AugmentationConfig:
    """Train-time augmentation of the linear evaluation: RandomResizedCrop(scale 0.08-1) + flip only.

    Same output size, interpolation and normalisation as `aug`; no colour jitter, grayscale,
    blur or solarize (docs/design.md, linear evaluation).
    """
    return aug.replace(crop_scale=(0.08, 1.0), flip_p=0.5, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)

def centre_crop_params(n: int, fraction: float, device=None) -> AugmentationParams:
    """Parameters that resize then centre crop, as one box: the central `fraction` of the image.

    CIFAR's test transform "resize to 36, centre crop 32" keeps the central 32/36 = 8/9 of the
    image and resamples it to 32 x 32: exactly this box (the pixel centres map identically).
    """
    params = AugmentationParams.identity(n, device)
    margin = (1 - fraction) / 2
    params.crop[:] = torch.tensor([margin, margin, fraction, fraction], device=device)
    return params

# ---- slider values <-> parameters <-> words ------------------------------------------------
#: Every jitter order the "order" menu offers (all 24 permutations of B, C, S, H).
JITTER_ORDERS = tuple(itertools.permutations(range(4)))

#: Names of the controls, in display columns (geometry | colour jitter | the rest): the records'
#: controls, with the image index first and the jitter order after the colour ops.
CONTROL_COLUMNS = tuple((("image",) if column == 0 else ())
                        + tuple(c for a in AUGMENTATION_TABLE.values() if a.column == column for c in a.controls)
                        + (("order",) if column == 1 else ()) for column in range(3))

CONTROL_NAMES = tuple(name for column in CONTROL_COLUMNS for name in column)

def slider_crop_box(scale: float, ratio: float = 1.0, top: float = 0.0, left: float = 0.0,
             image_aspect: float = 1.0) -> tuple[float, float, float, float]:
    """(top, left, height, width), fractions of the image, of a crop set the RandomResizedCrop way.

    scale: area of the crop / area of the image; ratio: the crop's width / height in pixels;
    image_aspect: the image's width / height. Then height * width = scale and
    (width * W) / (height * H) = ratio give height = sqrt(scale * aspect / ratio) and
    width = sqrt(scale * ratio / aspect); a side longer than the image is cut to it (the area then
    shrinks), and (top, left) is moved back so that the box fits inside the image.
    """
    if not (0 < scale <= 1 and ratio > 0 and image_aspect > 0):
        raise ValueError(f"need 0 < scale <= 1 and ratio > 0, got scale={scale}, ratio={ratio}")
    height = min(1.0, math.sqrt(scale * image_aspect / ratio))
    width = min(1.0, math.sqrt(scale * ratio / image_aspect))
    top = min(max(float(top), 0.0), 1.0 - height)
    left = min(max(float(left), 0.0), 1.0 - width)
    return top, left, height, width

def params_from_values(values: dict, aug: AugmentationConfig, image_size: Optional[tuple[int, int]] = None
                       ) -> AugmentationParams:
    """The parameters (one row) that control values describe: a pure function, no widgets needed.

    values: name -> value (see augmentation_controls; missing names keep identity values, "image"
    is ignored); image_size: (H, W) of the input image (its aspect enters the crop box).
    Starts from AugmentationParams.identity(1): jitter is on only when a factor differs from
    identity (then the order is the "order" value), blur only when sigma > 0 (and the config
    blurs), solarize only when the config solarizes.
    """
    unknown = set(values) - set(CONTROL_NAMES)
    if unknown:
        raise ValueError(f"unknown controls {sorted(unknown)}; the explorers have {list(CONTROL_NAMES)}")
    height, width = image_size or (aug.size, aug.size)
    p = AugmentationParams.identity(1)
    for augmentation in AUGMENTATION_TABLE.values():
        if augmentation.present(aug):
            augmentation.write(p, values, width / height)
    if p.jitter[0]:  # a colour op left its identity: the jitter ran, in the "order" control's order
        p.order[0] = torch.tensor(tuple(values.get("order", (0, 1, 2, 3))))
    return p

# ---- what training drew: the range of each control -------------------------------------------
@dataclass(frozen=True)
class TrainingRange:
    """The values of one control that training drew (AugmentationConfig.sample), to mark on its slider.

    low, high: the range drawn; an on/off control has low 0 and high 1 when training switches it
    on at all (probability p > 0), else high 0. identity: the "augmentation off" value (crop scale
    1, factor 1, hue 0, off), always counted as trained: x_o itself, and every view the augmentation
    skips. span: the range in words, e.g. "0.60–1.40", "±0.10", "p 0.50".
    """

    name: str
    low: float
    high: float
    identity: float
    span: str
    p: Optional[float] = None   # on/off controls: how often training switches it on

    @property
    def text(self) -> str:
        """The mark next to the slider, e.g. "trained: 0.60–1.40"."""
        return f"trained: {self.span}"

    def contains(self, value) -> bool:
        """Whether this value was in the training distribution (1e-6 of slack for the slider's rounding)."""
        value = float(value)
        return value == self.identity or self.low - 1e-6 <= value <= self.high + 1e-6

def training_range(aug: AugmentationConfig, name: str) -> TrainingRange:
    """The range `aug` samples for the explorers' control `name` (see CONTROL_NAMES; not "image", "order").

    crop_scale: aug.crop_scale; crop_ratio: aug.crop_ratio; crop_top, crop_left: anywhere (0 .. 1);
    brightness, contrast, saturation: [max(0, 1 - s), 1 + s]; hue: [-h, +h] turns (h = 0.5, the
    whole colour circle: "all hues"); sigma: aug.blur_sigma; flip, grayscale, solarize: on with probability p.
    A colour factor whose jitter never happens (jitter_p or its strength 0) was trained at 1 only.
    """
    if name not in CONTROL_OWNERS:
        raise ValueError(f"no training range for {name!r}; the controls with one: "
                         f"{[n for n in CONTROL_NAMES if n not in ('image', 'order')]}")
    augmentation = CONTROL_OWNERS[name]
    if augmentation.switch:
        p, span = augmentation.trained(aug, name)
        return TrainingRange(name, 0.0, 1.0 if p > 0 else 0.0, 0.0, span if p > 0 else "off only", p)
    low, high, span = augmentation.trained(aug, name)
    return TrainingRange(name, low, high, augmentation.identity[name], span or f"{low:.2f}–{high:.2f}")

def outside_training_range(values: dict, aug: AugmentationConfig) -> list[str]:
    """The control values (name -> value, as params_from_values takes them) that training never drew.

    One string per such control, e.g. "hue +0.19 (trained ±0.10)" or "flip on (trained off only)";
    "image" and "order" are skipped (every order is drawn whenever jitter is). [] when all are in range.
    """
    out = []
    for name, value in values.items():
        if name in ("image", "order"):
            continue
        r = training_range(aug, name)
        if not r.contains(value):
            shown = ("on" if isinstance(value, (bool, np.bool_)) else f"{value:+.2f}" if name == "hue"
                     else f"{value:.2f}")
            out.append(f"{name} {shown} (trained {r.span})")
    return out

def describe_params(params: AugmentationParams, index: int = 0) -> str:
    """A short human-readable line for one image's parameters (e.g. for a figure title)."""
    p = params[index]
    top, left, h, w = p.crop[0].tolist()
    parts = [f"crop {h:.2f}x{w:.2f} @({top:.2f},{left:.2f})"]
    if p.flip[0]:
        parts.append("flip")
    if p.jitter[0]:
        names = "".join("BCSH"[i] for i in p.order[0].tolist())
        parts.append(f"jitter {names} b{p.brightness[0]:.2f} c{p.contrast[0]:.2f} "
                     f"s{p.saturation[0]:.2f} h{p.hue[0]:+.2f}")
    if p.grayscale[0]:
        parts.append("gray")
    if p.blur[0]:
        parts.append(f"blur {p.sigma[0]:.1f}")
    if p.solarize[0]:
        parts.append("solarize")
    return ", ".join(parts)

# ---- sweeps: one augmentation from identity to its strongest -------------------------------
@dataclass
class Sweep:
    """One augmentation at `steps` strengths, everything else identity.

    values (S,): the parameter (crop scale, factor, hue turns, sigma, or 0/1 for on/off);
    fraction (S,): the strength relative to the config's maximum, signed for two-sided ones
    (brightness 1 - b .. 1 + b is -1 .. 1; identity is 0); params: S rows; label: for an axis.
    """

    group: str
    values: np.ndarray
    fraction: np.ndarray
    params: AugmentationParams
    label: str

def sweep_params(aug: AugmentationConfig, group: str, steps: int = 9,
                 image_size: Optional[tuple[int, int]] = None) -> Sweep:
    """Parameters that vary one augmentation over the config's range (on/off ones: 2 steps).

    crop: a centred square box of area 1 .. crop_scale min; flip, grayscale, solarize: off, on;
    brightness, contrast, saturation: factor max(0, 1 - s) .. 1 + s; hue: -h .. h turns;
    blur: sigma 0 (off) .. blur_sigma max. Raises ValueError for a strength the config sets to 0.
    """
    if group not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {group!r}; choose one of {AUGMENTATIONS}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    height, width = image_size or (aug.size, aug.size)
    augmentation = AUGMENTATION_TABLE[group]
    values, fraction, label = augmentation.sweep(aug, 2 if augmentation.switch else steps)
    rows = [params_from_values(augmentation.sweep_values(value, width / height), aug, (height, width))
            for value in values]
    return Sweep(group, values, fraction, AugmentationParams.cat(rows), label)

# ---- what a probe reads back ---------------------------------------------------------------
def parameter_targets(params: AugmentationParams, aug: AugmentationConfig) -> dict[str, torch.Tensor]:
    """The augmentation parameters a probe tries to read: name -> ``(N,)`` float (regressed) or bool (classified).

    Crop box (fractions), flip, the four jitter factors (hue: shift in turns), grayscale, and blur
    sigma / solarize when the config uses them.
    """
    return {name: target for a in AUGMENTATION_TABLE.values() if a.present(aug)
            for name, target in a.targets(params).items()}
