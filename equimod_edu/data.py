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
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from .dataset import ImageDataset
from .files import TEMP_PREFIX, atomic_write, os_error_reason
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
    a hash of ``spec``, the generator knobs; ``rebuild=True`` regenerates and overwrites it. It is
    only a cache: when it cannot be read it is rebuilt, when it cannot be written (a read-only
    folder, a full disk) a warning says why and the built data is returned all the same.

    Returns an ``ImageDataset`` with target "shape" and labels shape, colour, x, y, scale,
    rotation, hue.
    """
    _check_split(split)
    n = n_train if split == "train" else n_test
    if n <= 0 or size <= 0:
        raise ValueError(f"n_{split} and size must be positive, got {n} and {size}")
    key = hashlib.sha1(repr(sorted(asdict(spec).items())).encode()).hexdigest()[:8]
    path = Path(root or DATA_DIR) / "cache" / f"synthetic_{split}_n{n}_s{size}_seed{seed}_{key}.pt"
    if path.is_file() and not rebuild:  # (is_file: a FIFO or a device there is replaced, never read)
        try:
            d = torch.load(path, weights_only=True)
            return ImageDataset(d["images"], d["labels"], d["classes"], d["target"])
        except PermissionError:  # another user's cache, not readable by this one
            warnings.warn(f"the dataset cache {path} cannot be read (permission denied); rebuilding the data "
                          f"(a few seconds)", stacklevel=2)
        except Exception:  # a damaged cache (a kill while copying, a full disk): it is only a cache
            warnings.warn(f"the dataset cache {path} is damaged; rebuilding it (a few seconds)", stacklevel=2)
    ds = make_synthetic(n, size, _split_seed(seed, split), spec)
    saved = {"images": ds.images, "labels": ds.labels, "classes": ds.classes, "target": ds.target}
    _remove_stale_temporary_files(path.parent)
    try:
        atomic_write(path, lambda f: torch.save(saved, f))  # a reader never sees half a file
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        warnings.warn(f"could not write the dataset cache {path}: {os_error_reason(error, path)}; going on "
                      f"without it (the data is rebuilt next time; set EQUIMOD_DATA to a writable folder to "
                      f"cache it)", stacklevel=2)
    return ds


def _remove_stale_temporary_files(folder: Path, older_than_s: float = 3600.0) -> None:
    """Delete the temporary files of cache writes that a kill interrupted (not touched for an hour).

    A recent one may belong to another process writing the same cache right now: it is left alone.
    """
    for tmp in folder.glob(f"{TEMP_PREFIX}synthetic_*"):
        try:
            if time.time() - tmp.lstat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:  # gone meanwhile, or not ours to delete
            pass


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

    The python version of the dataset, in ``root/cifar-10-batches-py/`` (data_batch_1..5,
    test_batch, batches.meta). By default the md5 of *every* one of those files is checked against
    the official archive (torchvision's checksums) before reading.

    ``split`` is "train" or "test"; ``root`` is the folder holding ``cifar-10-batches-py/``
    (default ``DATA_DIR / "cifar10"``). ``download=True`` fetches and extracts the archive
    (~163 MB) if the files are missing or damaged. ``check_integrity=False`` skips the checksums:
    for files you made yourself, e.g. a tiny copy in a test. Either way the pickle files are read
    by an unpickler that builds only what a CIFAR batch holds (dicts, lists, strings, numpy
    arrays): a file holding anything else is refused, never run.

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
    if download and not _cifar10_intact(folder):
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    if (check_integrity or download) and not _cifar10_intact(folder):
        raise ValueError(
            f"the CIFAR-10 files in {folder} failed the md5 check against the official archive: they are "
            f"damaged or not the official files. Delete that folder and download it again (in Python: "
            f"equimod_edu.data.cifar10('train', download=True)); files you made yourself can be read without "
            f"checksums from Python with cifar10(..., check_integrity=False) (arrays and lists only, never code)."
        )
    images, labels, classes = _cifar10_read_pickles(folder, split)
    return ImageDataset(images, {"label": labels}, {"label": classes}, target="label")


def _cifar10_intact(folder: Path) -> bool:
    """Whether every file of the python version has the md5 of the official archive (torchvision's list)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    files = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    return all(check_integrity(str(folder / name), md5) for name, md5 in files)


def _cifar_globals() -> dict:
    """What a CIFAR batch may name: numpy's array and scalar rebuilders (numpy 1 and 2 spellings), bytes."""
    import codecs

    import numpy as np
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; any other class or function is refused."""

    def find_class(self, module: str, name: str):
        allowed = _cifar_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"holds {module}.{name}")
        return allowed


def _read_cifar_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    """The dict pickled in a CIFAR file (with `keys`), unpickled without running code; ValueError naming it."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        if str(error).startswith("holds "):
            raise ValueError(f"{path} {error}, which a CIFAR-10 file never holds: it was not read (it could run "
                             f"code). Delete it and download CIFAR-10 again") from None
        raise ValueError(f"{path} is not a readable CIFAR-10 file ({error}): delete it and download CIFAR-10 "
                         f"again") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise ValueError(f"{path} is not a readable CIFAR-10 file (truncated or damaged: {type(error).__name__}): "
                         f"delete it and download CIFAR-10 again") from None
    if not isinstance(entry, dict) or any(key not in entry for key in keys):
        raise ValueError(f"{path} is not a CIFAR-10 file (no {' and '.join(keys)} entries): delete it and "
                         f"download CIFAR-10 again")
    return entry


def _cifar10_read_pickles(folder: Path, split: str):
    """Images and labels of a split, read from the CIFAR python format's pickle files.

    Each batch is a pickled dict with ``data`` ``(n, 3072) uint8`` (rows: 1024 red, 1024 green,
    1024 blue values, row-major) and ``labels`` (list of int).
    """
    data, labels = [], []
    for name in _CIFAR_FILES[split]:
        entry = _read_cifar_pickle(folder / name, ("data", "labels"))
        data.append(torch.as_tensor(entry["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    classes = list(_read_cifar_pickle(folder / "batches.meta", ("label_names",))["label_names"])
    return torch.cat(data), torch.tensor(labels, dtype=torch.int64), classes


# --------------------------------------------------------------------------------------------
# Any ImageFolder-style directory
# --------------------------------------------------------------------------------------------
def open_rgb(path):
    """The image file as a loaded RGB PIL image (grayscale and RGBA are converted).

    A file that cannot be decoded (truncated, not an image, or larger than PIL's safety limit
    against decompression bombs) raises ValueError naming it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ValueError(f"cannot read the image {path}: {' '.join(str(error).split())}; delete or replace that "
                         f"file, or if you trust it, raise PIL.Image.MAX_IMAGE_PIXELS from Python") from None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"cannot read the image {path}: {' '.join(str(error).split())}; "
                         f"delete or replace that file") from None


def check_no_link_loops(root) -> None:
    """ValueError naming the link if a symbolic link under `root` leads back to a folder above it.

    ImageFolder follows links to folders; one that loops (``ln -s .. a/up``) would add every image
    again at each level, until the path grows too long. Links to folders elsewhere are fine.
    """
    above = {str(root): {os.path.realpath(root)}}  # each folder walked -> the real folders on its path
    for folder, subfolders, _ in os.walk(root, followlinks=True):
        for name in subfolders:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if real in above[folder]:
                raise ValueError(f"{path} is a symbolic link to a folder above it ({real}): the images would be "
                                 f"read again and again through it. Remove the link (rm {path})")
            above[path] = above[folder] | {real}


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
    check_no_link_loops(root)
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
            f"images in {root} differ in size ({sorted(shapes)[:3]}...), and images held in memory must share "
            f"one. From Python pass size=S to resize them (image_folder(path, size=S), load_dataset('folder:PATH', "
            f"split, size=S)) and give the datasets to Trainer(cfg, dataset=...) or evaluate_run(run, dataset="
            f"(train, test)). No command-line flag sets it: resize the image files to one size, or train with "
            f"--stream (the default for folders: each image is cropped to the augmentation's size)")
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
