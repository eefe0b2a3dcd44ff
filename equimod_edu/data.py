"""Datasets as uint8 tensors: the shipped synthetic set, CIFAR-10, and any image folder.

Every loader returns an ``ImageDataset`` (``dataset.py``): all images in one
``(N, 3, H, W) uint8`` tensor plus one or several label columns. Small sets live whole on the
training device; augmentation (``augment.py``) then runs there in batches. The synthetic images
themselves are drawn by ``synthetic.py``; this module caches and loads them.

The shipped default, ``synthetic``, is a procedurally generated colour dataset built to make
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
is cached under ``data/cache/`` (see ``DATA_DIR``) and loads in well under a second.

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
import os
import pickle
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from .dataset import ImageDataset
from .files import atomic_write
from .synthetic import SyntheticSpec, make_synthetic

__all__ = ["DATA_DIR", "synthetic", "cifar10", "image_folder", "load_dataset"]

#: Where datasets and the cache live: the repository's ``data/`` folder (located relative to this
#: file), or the folder named by the environment variable ``EQUIMOD_DATA``. Read at import time.
DATA_DIR = Path(os.environ.get("EQUIMOD_DATA") or Path(__file__).resolve().parent.parent / "data")


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

    ``split`` "train" gives ``n_train`` images drawn with seed 2*seed, "test" gives ``n_test`` with
    seed 2*seed+1; the same ``seed`` gives identical tensors. ``size`` is the image side in pixels.
    The cache file goes to ``root/cache/`` (``root`` defaults to ``DATA_DIR``) and its name includes
    a hash of ``spec``, the generator knobs; ``rebuild=True`` regenerates and overwrites it.

    Returns an ``ImageDataset`` with target "shape" and labels shape, colour, x, y, scale,
    rotation, hue.
    """
    _check_split(split)
    n = n_train if split == "train" else n_test
    if n <= 0 or size <= 0:
        raise ValueError(f"n_{split} and size must be positive, got {n} and {size}")
    key = hashlib.sha1(repr(sorted(asdict(spec).items())).encode()).hexdigest()[:8]
    path = Path(root or DATA_DIR) / "cache" / f"synthetic_{split}_n{n}_s{size}_seed{seed}_{key}.pt"
    if path.exists() and not rebuild:
        try:
            d = torch.load(path, weights_only=True)
            return ImageDataset(d["images"], d["labels"], d["classes"], d["target"])
        except Exception:  # a damaged cache (a kill while copying, a full disk): it is only a cache
            warnings.warn(f"the dataset cache {path} is damaged; rebuilding it (a few seconds)", stacklevel=2)
    ds = make_synthetic(n, size, _split_seed(seed, split), spec)
    saved = {"images": ds.images, "labels": ds.labels, "classes": ds.classes, "target": ds.target}
    atomic_write(path, lambda f: torch.save(saved, f))  # a reader never sees half a file
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

    ``split`` is "train" or "test"; ``root`` is the folder holding ``cifar-10-batches-py/``
    (default ``DATA_DIR / "cifar10"``). ``download=True`` fetches and extracts the archive
    (~163 MB) if the files are missing. ``check_integrity=False`` reads the same pickle files
    directly (same format, same code path as torchvision's reader, no checksums): for files you
    made yourself, e.g. a tiny copy in a test.

    Returns an ``ImageDataset`` with images ``(N, 3, 32, 32) uint8``, labels
    ``{"label": (N,) int64}`` and the class names from ``batches.meta``.
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
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        raise ValueError(
            f"the CIFAR-10 files in {root / 'cifar-10-batches-py'} failed the md5 check against the official "
            f"archive: they are damaged or not the official files. Delete that folder and download it again "
            f"(in Python: equimod_edu.data.cifar10('train', download=True)); files you made yourself can be read "
            f"without checksums from Python with cifar10(..., check_integrity=False)."
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N,32,32,3) -> (N,3,32,32)
    return images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes)


def _cifar10_read_pickles(folder: Path, split: str):
    """Images and labels of a split, read from the CIFAR python format's pickle files.

    Each batch is a pickled dict with ``data`` ``(n, 3072) uint8`` (rows: 1024 red, 1024 green,
    1024 blue values, row-major) and ``labels`` (list of int).
    """
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
def open_rgb(path):
    """The image file as a loaded RGB PIL image (grayscale and RGBA are converted).

    A file that cannot be decoded (truncated, not an image) raises ValueError naming it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"cannot read the image {path}: {' '.join(str(error).split())}; "
                         f"delete or replace that file") from None


def read_image(path) -> torch.Tensor:
    """(3, H, W) uint8 RGB of an image file (see open_rgb)."""
    from torchvision.transforms.v2 import functional as TF

    return TF.pil_to_tensor(open_rgb(path))


def image_folder(root: str | os.PathLike, size: int | None = None) -> ImageDataset:
    """Every image under ``root/<class name>/`` (the ``torchvision.datasets.ImageFolder`` layout).

    ``root`` holds one sub-folder per class (sorted names -> class indices 0, 1, ...). With
    ``size`` given, each image is resized so its shorter side is ``size`` (antialiased bilinear)
    and centre-cropped to ``size x size``; this is required when the images differ in size.

    Returns an ``ImageDataset`` with images ``(N, 3, H, W) uint8`` (RGB; grayscale or RGBA files
    are converted), labels ``{"label": (N,) int64}`` and the folder names as classes.
    """
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
        x = read_image(path)
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
        splits = [name for name in ((split,) if split == "train" else (split, "val")) if (path / name).is_dir()]
        if splits:
            return image_folder(path / splits[0], **kw)
        if split != "train":  # never report numbers "on held-out images" measured on the training images
            raise ValueError(f"the folder dataset {path} has no {split}/ (or val/) sub-folder: held-out numbers "
                             f"need images the model was not trained on. Make {path}/train/ and {path}/{split}/ "
                             f"(each with one sub-folder per class), or pass a (train, test) pair of datasets")
        return image_folder(path, **kw)
    raise ValueError(f"unknown dataset {name!r}: expected 'synthetic', 'cifar10' or 'folder:PATH'")
