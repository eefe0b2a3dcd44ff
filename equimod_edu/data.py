"""Datasets as uint8 tensors: the shipped synthetic set, CIFAR-10, and any image folder.

Every loader returns an :class:`ImageDataset`: all images in one ``(N, 3, H, W) uint8`` tensor
plus one or several label columns. Small sets live whole on the training device; augmentation
(``augment.py``) then runs there in batches.

The shipped default, :func:`synthetic`, is a procedurally generated colour dataset built to make
invariance and EquiMod's effect *measurable*: every image holds one object whose **shape** (8
classes, the target) and **colour** (12 hues, 30 degrees apart) are separate labels, on a near-grey
textured background, with the continuous factors **x**, **y**, **scale** and **rotation** recorded
as float columns. The synthetic augmentation preset (``AugmentationConfig.synthetic``: hue jitter
+-0.5 turn, grayscale) destroys the colour label, random crops move and rescale the object. An
invariant representation must therefore throw colour away; an equivariant one may keep it, and a
linear probe on ``colour`` shows which happened, against the same model trained without colour
augmentation.

Default sizes: 32x32 images, 16,000 train and 4,000 test, the two splits drawn from different
seeds (2*seed and 2*seed+1). Building both splits takes a few seconds on one CPU core; the result
is cached under ``data/cache/`` (see :data:`DATA_DIR`) and loads in well under a second.

Design rules (the measurements behind them are in docs/research_log.md):

- no per-image shortcut may survive the augmentations except the semantic factor. Instance
  discrimination (SimCLR) solves its task with whatever identifies an image; the first shipped
  design had backgrounds of two random saturated colours, which survive crops and a small hue
  jitter, and shape learning halved. The background is now near-grey (saturation 0-0.1), so only
  the object carries colour;
- each label is plainly visible (a network trained with the labels reaches ~99 % on both): hue
  classes 30 degrees apart with +-6 degrees of jitter inside a class, object saturation 0.45-0.9
  and value 0.6-1.0, a mid-sized object (radius 20-32 % of the side, centre in the middle 36 %,
  rotated by -30 to 30 degrees) with a thin dark outline;
- a random-init network may be near ceiling on a label (it is, on colour): the comparisons that
  teach are between trained models, random init is a reference.

The rotation label is not linearly decodable (R^2 ~ 0): circles and rings look the same at every
rotation.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DATA_DIR",
    "ImageDataset",
    "SyntheticSpec",
    "SHAPE_NAMES",
    "COLOUR_NAMES",
    "make_synthetic",
    "synthetic",
    "cifar10",
    "image_folder",
    "load_dataset",
]

#: Where datasets and the cache live: the repository's ``data/`` folder (located relative to this
#: file), or the folder named by the environment variable ``EQUIMOD_DATA``. Read at import time.
DATA_DIR = Path(os.environ.get("EQUIMOD_DATA") or Path(__file__).resolve().parent.parent / "data")


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------
@dataclass(repr=False)
class ImageDataset:
    """Images and their label columns, all as tensors.

    Attributes:
        images: ``(N, 3, H, W) uint8``.
        labels: column name -> ``(N,) int64`` (a class index) or ``(N,) float32`` (a continuous
            factor, e.g. the object's position in the synthetic set).
        classes: column name -> class names, for the class-valued columns (index i names class i).
        target: the primary (semantic) label column, the one a linear probe reports by default.

    Example:
        >>> ds = synthetic("test")
        >>> ds.images.shape, ds.labels["shape"][:3], ds.classes["shape"][0]
    """

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    classes: dict[str, list[str]]
    target: str = "label"

    def __post_init__(self) -> None:
        _validate(self)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        cols = ", ".join(f"{k}:{str(v.dtype).replace('torch.', '')}" for k, v in self.labels.items())
        return f"ImageDataset(images=({n}, {c}, {h}, {w}) uint8, labels=[{cols}], target={self.target!r})"

    @property
    def targets(self) -> torch.Tensor:
        """The target column, ``(N,) int64``."""
        return self.labels[self.target]

    def to(self, device: torch.device | str) -> "ImageDataset":
        """A copy with images and labels on ``device`` (e.g. to keep a small set on the GPU)."""
        labels = {k: v.to(device) for k, v in self.labels.items()}
        return ImageDataset(self.images.to(device), labels, self.classes, self.target)

    def subset(self, index: torch.Tensor | Sequence[int] | slice) -> "ImageDataset":
        """The images and labels at ``index`` (a slice, a list of ints, an index or bool tensor)."""
        if not isinstance(index, (slice, torch.Tensor)):
            index = torch.as_tensor(index, dtype=torch.long)
        if isinstance(index, torch.Tensor):
            index = index.to(self.images.device)
        labels = {k: v[index] for k, v in self.labels.items()}
        return ImageDataset(self.images[index], labels, self.classes, self.target)


def _validate(ds: ImageDataset) -> None:
    """Raise ValueError, naming the bad field, unless ``ds`` is well formed."""
    x = ds.images
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (values 0-255), got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(x.shape)}")
    if not isinstance(ds.labels, dict) or not ds.labels:
        raise ValueError("labels must be a non-empty dict of column name -> (N,) tensor")
    n = x.shape[0]
    for name, y in ds.labels.items():
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"labels[{name!r}] must be a torch.Tensor, got {type(y).__name__}")
        if y.dtype not in (torch.int64, torch.float32):
            raise ValueError(f"labels[{name!r}] must be int64 (class) or float32 (factor), got {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"labels[{name!r}] has shape {tuple(y.shape)}, expected ({n},): one per image")
    if ds.target not in ds.labels:
        raise ValueError(f"target {ds.target!r} is not a label column; columns are {list(ds.labels)}")
    if ds.labels[ds.target].dtype != torch.int64:
        raise ValueError(f"target column {ds.target!r} must be a class column (int64)")
    for name, names in ds.classes.items():
        if name not in ds.labels:
            raise ValueError(f"classes[{name!r}] names a column that is not in labels {list(ds.labels)}")
        y = ds.labels[name]
        if y.dtype != torch.int64:
            raise ValueError(f"classes[{name!r}] is given but labels[{name!r}] is not int64")
        if n and (int(y.min()) < 0 or int(y.max()) >= len(names)):
            raise ValueError(
                f"labels[{name!r}] must lie in [0, {len(names)}) (len(classes[{name!r}])), "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )


# --------------------------------------------------------------------------------------------
# Synthetic shapes: geometry (signed distances on a coordinate grid)
# --------------------------------------------------------------------------------------------
SHAPE_NAMES = ["circle", "square", "triangle", "star", "cross", "ring", "heart", "moon"]
COLOUR_NAMES = [
    "red", "orange", "yellow", "lime", "green", "mint",
    "cyan", "azure", "blue", "violet", "magenta", "pink",
]  # hue classes k * 30 degrees (HSV hue), k = 0..11


def _regular_polygon(k: int, radius: float, phase: float) -> torch.Tensor:
    """``(k, 2)`` vertices of a regular k-gon on the circle of ``radius``."""
    t = phase + 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([t.cos(), t.sin()], 1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> torch.Tensor:
    """``(2*points, 2)`` vertices of a star, alternating outer and inner radius, tip up."""
    t = -math.pi / 2 + math.pi * torch.arange(2 * points) / points
    r = torch.tensor([outer, inner]).repeat(points)
    return torch.stack([r * t.cos(), r * t.sin()], 1)


def _cross(half: float = 0.9, arm: float = 0.3) -> torch.Tensor:
    """``(12, 2)`` vertices of a plus sign with arms of half-width ``arm``."""
    a, h = arm, half
    return torch.tensor([[a, -h], [a, -a], [h, -a], [h, a], [a, a], [a, h],
                         [-a, h], [-a, a], [-h, a], [-h, -a], [-a, -a], [-a, -h]])


def _heart(n: int = 40) -> torch.Tensor:
    """``(n, 2)`` vertices on the classic parametric heart, tip down, fitted in the unit disc."""
    t = 2 * math.pi * torch.arange(n) / n
    x = 16 * t.sin() ** 3
    y = -(13 * t.cos() - 5 * (2 * t).cos() - 2 * (3 * t).cos() - (4 * t).cos())  # y points down
    v = torch.stack([x, y], 1)
    v = v - (v.max(0).values + v.min(0).values) / 2
    return v / v.norm(dim=1).max() * 0.95


_POLYGONS = {
    "square": _regular_polygon(4, 0.95, math.pi / 4),
    "triangle": _regular_polygon(3, 1.0, -math.pi / 2),
    "star": _star(),
    "cross": _cross(),
    "heart": _heart(),
}


def polygon_sdf(p: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Signed distance from points to a closed polygon (negative inside).

    Distance to the nearest edge, with the sign from the even-odd (crossing number) rule.

    Args:
        p: ``(..., 2) float`` points.
        vertices: ``(V, 2) float`` polygon corners, in order.
    Returns:
        ``(...) float`` signed distances.
    """
    px, py = p[..., 0], p[..., 1]
    d2 = (px - vertices[0, 0]) ** 2 + (py - vertices[0, 1]) ** 2
    inside = torch.zeros_like(px, dtype=torch.bool)
    for (ax, ay), (bx, by) in zip(vertices.tolist(), vertices.roll(1, 0).tolist()):
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        h = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)  # nearest point on the edge
        d2 = torch.minimum(d2, (wx - h * ex) ** 2 + (wy - h * ey) ** 2)
        if ey != 0:  # does the horizontal ray from p to +x cross edge (a, b)?
            crosses = (py >= ay) != (py >= by)
            inside ^= crosses & (px < ax + wy * (ex / ey))
    return torch.where(inside, -1.0, 1.0) * d2.sqrt()


def shape_sdf(name: str, p: torch.Tensor) -> torch.Tensor:
    """Signed distance ``(...)`` to the unit-size shape ``name`` at points ``p`` ``(..., 2)``.

    Shapes are centred at 0 and fit in the unit disc, so (after dividing the coordinates by the
    object's radius) every shape covers a similar extent.
    """
    r = p.norm(dim=-1)
    if name == "circle":
        return r - 0.85
    if name == "ring":
        return (r - 0.7).abs() - 0.24
    if name == "moon":  # a disc minus a shifted disc
        bite = (p - torch.tensor([0.42, -0.25], device=p.device)).norm(dim=-1) - 0.68
        return torch.maximum(r - 0.9, -bite)
    return polygon_sdf(p, _POLYGONS[name].to(p.device))


# --------------------------------------------------------------------------------------------
# Synthetic shapes: colour and texture
# --------------------------------------------------------------------------------------------
def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV to RGB. ``h`` in turns ([0, 1) = 0-360 degrees), ``s``, ``v`` in [0, 1]; ``(...)`` each.

    Returns ``(..., 3) float`` in [0, 1]. Uses f(n) = v - v s max(0, min(k, 4 - k, 1)),
    k = (n + 6 h) mod 6, for n = 5, 3, 1 (R, G, B).
    """
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device)
    k = (n + 6 * h[..., None]) % 6
    return v[..., None] - v[..., None] * s[..., None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


@dataclass(frozen=True)
class SyntheticSpec:
    """The knobs of the synthetic generator (defaults: the shipped dataset).

    Ranges are (low, high) of uniform draws. Hues are in degrees, position and scale in fractions
    of the image side, rotation in degrees.
    """

    n_shapes: int = 8               # first n of SHAPE_NAMES
    n_hues: int = 12                # hue classes, 360 / n_hues degrees apart
    hue_jitter: float = 6.0         # +- degrees around the class hue
    obj_sat: tuple = (0.45, 0.9)
    obj_val: tuple = (0.6, 1.0)
    scale: tuple = (0.2, 0.32)      # object radius / image side
    position: tuple = (0.32, 0.68)  # object centre x, y / image side
    rotation: tuple = (-30.0, 30.0)  # degrees; within +-36 no shape but circle/ring repeats itself
    outline: float = 0.5            # dark outline width in pixels (0: none)
    bg_sat: tuple = (0.0, 0.1)      # near-grey: a coloured background is a per-image shortcut
    bg_val: tuple = (0.3, 0.95)
    bg_blobs: int = 3               # smoothness of the two-colour background blend (grid cells)
    texture: float = 0.03           # std of the fine per-pixel noise texture
    version: int = 2                # bump when the generator changes (invalidates caches)

    def __post_init__(self) -> None:
        if not 1 <= self.n_shapes <= len(SHAPE_NAMES):
            raise ValueError(f"n_shapes must be in 1..{len(SHAPE_NAMES)}, got {self.n_shapes}")
        if self.n_hues < 1:
            raise ValueError(f"n_hues must be >= 1, got {self.n_hues}")
        if self.n_hues > 1 and not 0 <= self.hue_jitter < 180 / self.n_hues:
            raise ValueError(f"hue_jitter must be in [0, {180 / self.n_hues:g}) degrees (half the gap "
                             f"between hue classes) so the image fixes the colour; got {self.hue_jitter}")
        for name in ("obj_sat", "obj_val", "scale", "position", "rotation", "bg_sat", "bg_val"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be a (low, high) range with low <= high, got {(lo, hi)}")


def _background(n: int, size: int, spec: SyntheticSpec, g: torch.Generator) -> torch.Tensor:
    """``(n, 3, size, size) float`` textured backgrounds: two random colours blended by smooth
    noise, plus fine noise. Background hues cover the whole circle, like the objects'."""
    cols = [hsv_to_rgb(torch.rand(n, generator=g), _uniform(n, *spec.bg_sat, g), _uniform(n, *spec.bg_val, g))
            for _ in range(2)]
    blend = torch.randn(n, 1, spec.bg_blobs, spec.bg_blobs, generator=g)
    blend = torch.sigmoid(3 * F.interpolate(blend, size=(size, size), mode="bicubic", align_corners=False))
    bg = cols[0][:, :, None, None] * blend + cols[1][:, :, None, None] * (1 - blend)
    return bg + spec.texture * torch.randn(n, 3, size, size, generator=g)


def _object_coverage(shape: torch.Tensor, cx, cy, radius, angle, size: int, outline: float):
    """Anti-aliased coverage of each object: ``fill`` and ``edge`` masks ``(n, size, size)`` in [0, 1].

    A pixel centre p maps to shape coordinates q = R(-angle) (p - centre) / radius; the signed
    distance d (in pixels) = sdf(q) * radius gives coverage clamp(0.5 - d, 0, 1).
    """
    n = shape.shape[0]
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    px = coords[None, None, :] - cx[:, None, None]  # (n, 1, size)
    py = coords[None, :, None] - cy[:, None, None]  # (n, size, 1)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    q = torch.stack([cos * px + sin * py, -sin * px + cos * py], -1) / radius[:, None, None, None]
    # Shapes lie inside the unit disc: only pixels near that disc need the exact distance.
    near = q.norm(dim=-1) < 1 + 2 / radius[:, None, None]
    img, pts = near.nonzero()[:, 0], q[near]  # (M,) image of each near pixel, (M, 2) its q
    d_near = torch.empty(len(pts))
    for k in shape.unique().tolist():
        sel = shape[img] == k
        d_near[sel] = shape_sdf(SHAPE_NAMES[k], pts[sel]) * radius[img[sel]]
    d = torch.full((n, size, size), 2.0 + outline)  # far pixels: outside, with a margin
    d[near] = d_near
    fill = (0.5 - d).clamp(0, 1)
    edge = (0.5 + outline - d).clamp(0, 1) if outline > 0 else fill
    return fill, edge


_CHUNK = 1024  # images rendered at once: keeps every temporary small (large CPU tensors are slow)


@contextmanager
def _one_thread():
    """Run torch single-threaded inside the block. Rendering is hundreds of small element-wise
    ops: a second thread gains ~20 %, but on a busy machine (other processes on the cores) the
    threads' barriers stall and a 2-thread build was measured 50x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def make_synthetic(
    n: int, size: int = 32, seed: int = 0, spec: SyntheticSpec = SyntheticSpec()
) -> ImageDataset:
    """Generate ``n`` images of one coloured shape on a textured background (no cache).

    Args:
        n: number of images; shape and hue classes are balanced (each appears n / n_classes
            times, rounded, in a random order).
        size: image side in pixels.
        seed: all randomness comes from ``torch.Generator().manual_seed(seed)``.
        spec: the generator's knobs, :class:`SyntheticSpec`.
    Returns:
        :class:`ImageDataset`, target "shape", with images ``(n, 3, size, size) uint8`` and labels
        ``shape``, ``colour`` ``(n,) int64``; ``x``, ``y`` (object centre / image side, 0 = left,
        top), ``scale`` (radius / image side), ``rotation`` (degrees, clockwise on screen),
        ``hue`` (degrees), ``saturation``, ``value`` (HSV of the object), ``(n,) float32``.
    """
    g = torch.Generator().manual_seed(seed)
    f = _sample_factors(n, spec, g)
    with _one_thread():
        chunks = [_render({k: v[i:i + _CHUNK] for k, v in f.items()}, size, spec, g)
                  for i in range(0, n, _CHUNK)]
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, size, size, dtype=torch.uint8)
    classes = {"shape": SHAPE_NAMES[: spec.n_shapes], "colour": _colour_names(spec.n_hues)}
    return ImageDataset(images, f, classes, target="shape")


def _sample_factors(n: int, spec: SyntheticSpec, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The label columns of ``n`` images: balanced classes, uniform continuous factors."""
    shape = (torch.arange(n) % spec.n_shapes)[torch.randperm(n, generator=g)]
    colour = (torch.arange(n) % spec.n_hues)[torch.randperm(n, generator=g)]
    hue = (colour * 360.0 / spec.n_hues + _uniform(n, -spec.hue_jitter, spec.hue_jitter, g)) % 360
    return {
        "shape": shape, "colour": colour,
        "x": _uniform(n, *spec.position, g), "y": _uniform(n, *spec.position, g),
        "scale": _uniform(n, *spec.scale, g), "rotation": _uniform(n, *spec.rotation, g),
        "hue": hue, "saturation": _uniform(n, *spec.obj_sat, g), "value": _uniform(n, *spec.obj_val, g),
    }


def _render(f: dict[str, torch.Tensor], size: int, spec: SyntheticSpec, g: torch.Generator) -> torch.Tensor:
    """``(n, 3, size, size) uint8`` images for the factors ``f`` (a chunk of the label columns)."""
    n = len(f["shape"])
    bg = _background(n, size, spec, g)
    fill, edge = _object_coverage(f["shape"], f["x"] * size, f["y"] * size, f["scale"] * size,
                                  torch.deg2rad(f["rotation"]), size, spec.outline)
    rgb = hsv_to_rgb(f["hue"] / 360, f["saturation"], f["value"])
    img = bg * (1 - edge[:, None]) + 0.08 * (edge - fill)[:, None]  # background, dark outline
    img = img + rgb[:, :, None, None] * fill[:, None]  # flat-coloured object, anti-aliased edge
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _colour_names(n_hues: int) -> list[str]:
    if n_hues == len(COLOUR_NAMES):
        return list(COLOUR_NAMES)
    return [f"hue{round(k * 360 / n_hues)}" for k in range(n_hues)]


# --------------------------------------------------------------------------------------------
# Synthetic shapes: the cached, shipped dataset
# --------------------------------------------------------------------------------------------
def _split_seed(seed: int, split: str) -> int:
    """Train and test are drawn from different seeds: 2 * seed and 2 * seed + 1."""
    return 2 * seed + {"train": 0, "test": 1}[split]


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def synthetic(
    split: str = "train",
    root: str | os.PathLike | None = None,
    n_train: int = 16_000,
    n_test: int = 4_000,
    size: int = 32,
    seed: int = 0,
    rebuild: bool = False,
    spec: SyntheticSpec = SyntheticSpec(),
) -> ImageDataset:
    """The shipped synthetic dataset (see the module docstring), built once then cached.

    Args:
        split: "train" (``n_train`` images, seed 2*seed) or "test" (``n_test``, seed 2*seed+1).
        root: data folder; the cache file goes to ``root/cache/``. Default :data:`DATA_DIR`.
        size: image side in pixels (32 by default).
        seed: dataset seed; same seed -> identical tensors.
        rebuild: regenerate and overwrite the cache file.
        spec: generator knobs (the cache file name includes a hash of them).
    Returns:
        :class:`ImageDataset`, target "shape"; labels shape, colour, x, y, scale, rotation, hue.
    """
    _check_split(split)
    n = n_train if split == "train" else n_test
    if n <= 0 or size <= 0:
        raise ValueError(f"n_{split} and size must be positive, got {n} and {size}")
    key = hashlib.sha1(repr(sorted(asdict(spec).items())).encode()).hexdigest()[:8]
    path = Path(root or DATA_DIR) / "cache" / f"synthetic_{split}_n{n}_s{size}_seed{seed}_{key}.pt"
    if path.exists() and not rebuild:
        d = torch.load(path, weights_only=True)
        return ImageDataset(d["images"], d["labels"], d["classes"], d["target"])
    ds = make_synthetic(n, size, _split_seed(seed, split), spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": ds.images, "labels": ds.labels, "classes": ds.classes, "target": ds.target}, tmp)
    os.replace(tmp, path)  # atomic: a reader never sees half a file
    return ds


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def cifar10(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = False,
    check_integrity: bool = True,
) -> ImageDataset:
    """CIFAR-10 (50,000 train / 10,000 test images, 32x32, 10 classes).

    Read through ``torchvision.datasets.CIFAR10``, which expects the python version of the
    dataset in ``root/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) and
    checks the md5 of *every* one of those files against the official archive before reading.

    Args:
        split: "train" or "test".
        root: folder holding ``cifar-10-batches-py/``; default ``DATA_DIR / "cifar10"``.
        download: fetch and extract the archive (~163 MB) if the files are missing.
        check_integrity: True (default) reads through torchvision with its md5 checks. False
            reads the same pickle files directly (same format, same code path as torchvision's
            reader, no checksums): for files you made yourself, e.g. a tiny copy in a test.
    Returns:
        :class:`ImageDataset` with images ``(N, 3, 32, 32) uint8``, labels ``{"label": (N,) int64}``
        and the class names from ``batches.meta``.
    """
    _check_split(split)
    root = Path(root) if root is not None else DATA_DIR / "cifar10"
    folder = root / "cifar-10-batches-py"
    needed = _CIFAR_FILES["train"] + _CIFAR_FILES["test"] + ["batches.meta"]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"CIFAR-10 files not found: {', '.join(missing)} missing from {folder}/.\n"
            f"Either download them: cifar10({split!r}, root={str(root)!r}, download=True) "
            f"(needs internet, ~163 MB), or put the python version of CIFAR-10 there yourself: "
            f"extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
            f"{root}/ so that {folder}/data_batch_1 exists."
        )
    if check_integrity or download:
        images, labels, classes = _cifar10_torchvision(root, split, download)
    else:
        images, labels, classes = _cifar10_read_pickles(folder, split)
    return ImageDataset(images, {"label": labels}, {"label": classes}, target="label")


def _cifar10_torchvision(root: Path, split: str, download: bool):
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise RuntimeError(
            f"CIFAR-10 files in {root / 'cifar-10-batches-py'} failed torchvision's md5 check ({err}). "
            f"Delete the folder and use download=True, or, for files you made yourself, pass "
            f"check_integrity=False to read them without checksums."
        ) from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N,32,32,3) -> (N,3,32,32)
    return images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


def _cifar10_read_pickles(folder: Path, split: str):
    """The CIFAR python format: each batch a pickled dict with ``data`` ``(n, 3072) uint8``
    (rows: 1024 red, 1024 green, 1024 blue values, row-major) and ``labels`` (list of int)."""
    data, labels = [], []
    for name in _CIFAR_FILES[split]:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(torch.as_tensor(entry["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    with open(folder / "batches.meta", "rb") as f:
        classes = list(pickle.load(f, encoding="latin1")["label_names"])
    return torch.cat(data), torch.tensor(labels, dtype=torch.int64), classes


# --------------------------------------------------------------------------------------------
# Any ImageFolder-style directory
# --------------------------------------------------------------------------------------------
def image_folder(root: str | os.PathLike, size: int | None = None) -> ImageDataset:
    """Every image under ``root/<class name>/`` (the ``torchvision.datasets.ImageFolder`` layout).

    Args:
        root: folder with one sub-folder per class (sorted names -> class indices 0, 1, ...).
        size: if given, resize each image so its shorter side is ``size`` (antialiased bilinear)
            and centre-crop it to ``size x size``. Required when the images differ in size.
    Returns:
        :class:`ImageDataset` with images ``(N, 3, H, W) uint8`` (RGB; grayscale or RGBA files
        are converted), labels ``{"label": (N,) int64}`` and the folder names as classes.
    """
    from PIL import Image
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.v2 import functional as TF

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if size is not None and size <= 0:
        raise ValueError(f"size must be a positive int or None, got {size}")
    try:
        folder = ImageFolder(str(root))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{root}: expected class sub-folders holding images ({err})") from err
    images = []
    for path, _ in folder.samples:
        with Image.open(path) as im:
            x = TF.pil_to_tensor(im.convert("RGB"))
        if size is not None:
            x = TF.center_crop(TF.resize(x, size, antialias=True), [size, size])
        images.append(x)
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images in {root} differ in size ({sorted(shapes)[:3]}...): pass size=... to resize them")
    labels = torch.tensor(folder.targets, dtype=torch.int64)
    classes = {"label": list(folder.classes)}
    return ImageDataset(torch.stack(images), {"label": labels}, classes, target="label")


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------
def load_dataset(
    name: str, split: str = "train", root: str | os.PathLike | None = None, **kw
) -> ImageDataset:
    """Load a dataset by name: "synthetic", "cifar10" or "folder:PATH".

    For "folder:PATH" the split picks ``PATH/<split>/`` when that sub-folder exists (the usual
    ``train/``, ``val/`` layout), else PATH itself. Extra keywords go to the loader.
    """
    if name == "synthetic":
        return synthetic(split, root, **kw)
    if name == "cifar10":
        return cifar10(split, root, **kw)
    if name.startswith("folder:"):
        path = Path(name[len("folder:"):])
        if not str(path) or str(path) == ".":
            raise ValueError("folder dataset needs a path: 'folder:PATH'")
        if (path / split).is_dir():
            path = path / split
        return image_folder(path, **kw)
    raise ValueError(f"unknown dataset {name!r}: expected 'synthetic', 'cifar10' or 'folder:PATH'")
