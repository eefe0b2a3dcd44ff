"""data.py: the cached synthetic splits, CIFAR-10 and image-folder loaders, load_dataset.

Fast (small n, files written into tmp dirs); nothing is downloaded.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equimod_edu import data
from equimod_edu.data import cifar10, image_folder, load_dataset, synthetic


# ------------------------------------------------------------------------------------------
# synthetic splits: cache, data directory
# ------------------------------------------------------------------------------------------
def test_synthetic_cache_round_trip(tmp_path):
    ds = synthetic("train", root=tmp_path, n_train=48, seed=5)
    files = list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 1 and "train" in files[0].name
    loaded = synthetic("train", root=tmp_path, n_train=48, seed=5)
    assert torch.equal(loaded.images, ds.images)
    assert all(torch.equal(loaded.labels[k], ds.labels[k]) for k in ds.labels)
    assert loaded.classes == ds.classes and loaded.target == ds.target
    # a second call really reads the file: tamper with it and see the change ...
    d = torch.load(files[0], weights_only=True)
    d["images"] = torch.zeros_like(d["images"])
    torch.save(d, files[0])
    assert synthetic("train", root=tmp_path, n_train=48, seed=5).images.max() == 0
    # ... and rebuild=True regenerates and overwrites it
    rebuilt = synthetic("train", root=tmp_path, n_train=48, seed=5, rebuild=True)
    assert torch.equal(rebuilt.images, ds.images)
    assert torch.equal(torch.load(files[0], weights_only=True)["images"], ds.images)
    assert not list((tmp_path / "cache").glob("*.tmp*"))  # no temporary left behind


def test_synthetic_default_root_is_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    synthetic("test", n_test=8)
    assert len(list((tmp_path / "cache").glob("synthetic_test_*.pt"))) == 1


def test_data_dir_location_and_env_override(tmp_path):
    if not os.environ.get("EQUIMOD_DATA"):
        assert data.DATA_DIR == Path(data.__file__).resolve().parent.parent / "data"
    code = "from equimod_edu import data; print(data.DATA_DIR)"
    env = dict(os.environ, EQUIMOD_DATA=str(tmp_path), PYTHONPATH=str(Path(data.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == tmp_path


def test_synthetic_train_and_test_differ(tmp_path):
    train = synthetic("train", root=tmp_path, n_train=32, n_test=32)
    test = synthetic("test", root=tmp_path, n_train=32, n_test=32)
    assert not torch.equal(train.images, test.images)
    assert not torch.equal(train.labels["x"], test.labels["x"])
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2


# ------------------------------------------------------------------------------------------
# CIFAR-10 on pickle files written here in the real python format
# ------------------------------------------------------------------------------------------
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar(root: Path, per_batch: int = 4):
    """data_batch_1..5, test_batch, batches.meta as CIFAR's dicts; returns the arrays written."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {"train": ([], []), "test": ([], [])}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": y, "data": x,
                         "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}, f)
        split = "test" if name == "test_batch" else "train"
        written[split][0].append(x)
        written[split][1].extend(y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return {k: (np.concatenate(x), y) for k, (x, y) in written.items()}


@pytest.mark.parametrize("split, n", [("train", 20), ("test", 4)])
def test_cifar10_reads_pickles(tmp_path, split, n):
    written = _write_cifar(tmp_path)
    ds = cifar10(split, root=tmp_path, check_integrity=False)
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
    x, y = written[split]
    # CIFAR rows are 1024 red, 1024 green, then 1024 blue values, each image row-major
    assert torch.equal(ds.images, torch.from_numpy(x).reshape(n, 3, 32, 32))
    assert ds.labels["label"].tolist() == y and ds.labels["label"].dtype == torch.int64
    assert ds.classes["label"] == CIFAR_CLASSES and ds.target == "label"
    assert torch.equal(load_dataset("cifar10", split, tmp_path, check_integrity=False).images, ds.images)


def test_cifar10_pixel_layout(tmp_path):
    """Pixel (row 1, col 2) of channel c sits at c * 1024 + 1 * 32 + 2 in the flat row."""
    _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "test_batch", "rb") as f:
        row = pickle.load(f)["data"][0]
    img = cifar10("test", root=tmp_path, check_integrity=False).images[0]
    assert [int(img[c, 1, 2]) for c in range(3)] == [int(row[c * 1024 + 34]) for c in range(3)]


def test_cifar10_default_checks_md5(tmp_path):
    _write_cifar(tmp_path)  # our files are not the official ones: torchvision's md5 check fails
    with pytest.raises(ValueError, match="md5 check.*download it again.*check_integrity=False") as error:
        cifar10("test", root=tmp_path)
    assert error.value.__cause__ is None  # one message, not torchvision's traceback under it


def test_cifar10_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        cifar10("train", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg
    assert "download=True" in msg
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        cifar10("test", root=tmp_path, check_integrity=False)


def test_cifar10_default_root_under_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar10" / "cifar-10-batches-py")):
        cifar10("train")


# ------------------------------------------------------------------------------------------
# image folders
# ------------------------------------------------------------------------------------------
def _write_pngs(root: Path, sizes):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for cls, (w, h) in zip(["cat", "dog", "emu"], sizes):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{i}.png")
            arrays[(cls, i)] = a
    return arrays


def test_image_folder_same_size(tmp_path):
    arrays = _write_pngs(tmp_path, [(10, 12)] * 3)
    ds = image_folder(tmp_path)
    assert ds.images.shape == (6, 3, 12, 10) and ds.images.dtype == torch.uint8
    assert ds.classes["label"] == ["cat", "dog", "emu"]
    assert ds.labels["label"].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(ds.images[2], torch.from_numpy(arrays[("dog", 0)]).permute(2, 0, 1))


def test_image_folder_resizes_and_converts(tmp_path):
    from PIL import Image

    _write_pngs(tmp_path, [(10, 12), (20, 8), (16, 16)])
    Image.fromarray(np.full((5, 7), 200, np.uint8), mode="L").save(tmp_path / "emu" / "gray.png")
    with pytest.raises(ValueError, match="size="):
        image_folder(tmp_path)
    ds = image_folder(tmp_path, size=8)
    assert ds.images.shape == (7, 3, 8, 8) and ds.images.dtype == torch.uint8
    gray = ds.images[ds.labels["label"] == 2][-1]
    assert (gray == 200).all()  # grayscale file -> 3 equal channels


def test_image_folder_through_load_dataset(tmp_path):
    _write_pngs(tmp_path / "train", [(8, 8)] * 3)
    assert len(load_dataset(f"folder:{tmp_path}", "train")) == 6  # picks PATH/train/
    with pytest.raises(ValueError, match="no test/"):  # never the training images as a test set
        load_dataset(f"folder:{tmp_path}", "test")
    _write_pngs(tmp_path / "val", [(8, 8)] * 1)
    assert len(load_dataset(f"folder:{tmp_path}", "test")) == 2  # ImageNet's layout: val/ is the test split


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        image_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="class sub-folders"):
        image_folder(tmp_path)  # exists but empty
    with pytest.raises(ValueError, match="size"):
        image_folder(tmp_path, size=0)


# ------------------------------------------------------------------------------------------
# load_dataset
# ------------------------------------------------------------------------------------------
def test_loader_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="split"):
        synthetic("val", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        cifar10("valid", root=tmp_path)
    with pytest.raises(ValueError, match="positive"):
        synthetic("train", root=tmp_path, n_train=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="folder:PATH"):
        load_dataset("folder:")


def test_load_dataset_synthetic(tmp_path):
    ds = load_dataset("synthetic", "test", tmp_path, n_test=8, seed=3)
    assert len(ds) == 8 and ds.target == "shape"
    assert torch.equal(ds.images, synthetic("test", tmp_path, n_test=8, seed=3).images)
