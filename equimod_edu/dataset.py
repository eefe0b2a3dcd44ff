"""The dataset container: images as one uint8 tensor, labels as named columns.

    ds = ImageDataset(images, {"label": labels}, {"label": ["cat", "dog"]}, target="label")
    ds.subset(slice(0, 100)).to("cuda")          # every loader of data.py returns one of these
    shuffled_subset(ds, 1000, seed=0)            # a seeded random sample of at most 1000 images

Also the small shared helpers about a dataset's rows: ``as_images`` (a dataset, a batch or
one image -> a batch), ``mix_seed`` (the seed of one epoch's order or one step's draws).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from .functional import check_images

__all__ = ["ImageDataset", "Images", "as_images", "shuffled_subset", "mix_seed"]


@dataclass(repr=False)
class ImageDataset:
    """Images and their label columns, all as tensors.

    ``images`` is ``(N, 3, H, W) uint8``. ``labels`` maps a column name to ``(N,) int64`` (a class
    index) or ``(N,) float32`` (a continuous factor, e.g. the object's position in the synthetic
    set). ``classes`` maps each class-valued column to its class names (index i names class i).
    ``target`` is the primary (semantic) label column, the one a linear probe reports by default.
    For example:

        >>> from equimod_edu.data import synthetic
        >>> ds = synthetic("test")
        >>> ds.images.shape, ds.labels["shape"][:3], ds.classes["shape"][0]
        (torch.Size([4000, 3, 32, 32]), tensor([5, 6, 0]), 'circle')
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


#: What readers of images accept: an ImageDataset or a batch (N, 3, H, W) uint8.
Images = Union["ImageDataset", torch.Tensor]


def as_images(data: Images) -> torch.Tensor:
    """(N, 3, H, W) images of an ImageDataset, a batch (returned as is) or one (3, H, W) image."""
    images = data.images if isinstance(data, ImageDataset) else data
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images[None]
    check_images(images)
    return images


def shuffled_subset(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    """At most n images of ds, in a seeded random order (so the first rows are a random sample)."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return ds.subset(order)


def mix_seed(*parts: int) -> int:
    """One seed from several integers (run seed, epoch, step, image...): ((a * P + b) * P + c)...

    P = 1,000,003 (a prime), so (seed, epoch) and (seed, step) pairs of a run never collide for
    fewer than a million epochs or steps; the result is taken modulo 2^63 (torch's seed range).
    """
    seed = 0
    for i, part in enumerate(parts):
        seed = seed * 1_000_003 + int(part) if i else int(part)
    return seed % (1 << 63)
