"""Tests for equimod_edu.data: the synthetic set, CIFAR-10 and image-folder loaders, ImageDataset.

Fast (small n, files written into tmp dirs); nothing is downloaded.
"""

import colorsys
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equimod_edu import data
from equimod_edu import synthetic as synthetic_module
from equimod_edu.data import (
    COLOUR_NAMES,
    SHAPE_NAMES,
    ImageDataset,
    SyntheticSpec,
    cifar10,
    image_folder,
    load_dataset,
    make_synthetic,
    synthetic,
)

FLOAT_COLUMNS = ("x", "y", "scale", "rotation", "hue", "saturation", "value")


@pytest.fixture(scope="module")
def small():
    return make_synthetic(240, seed=0)


# ------------------------------------------------------------------------------------------
# synthetic: labels, balance, determinism, cache
# ------------------------------------------------------------------------------------------
def test_synthetic_images_and_label_columns(small):
    assert small.images.shape == (240, 3, 32, 32) and small.images.dtype == torch.uint8
    assert small.target == "shape"
    assert small.classes["shape"] == SHAPE_NAMES and small.classes["colour"] == COLOUR_NAMES
    assert len(set(SHAPE_NAMES)) >= 6 and len(set(COLOUR_NAMES)) == 12
    for k in ("shape", "colour"):
        assert small.labels[k].dtype == torch.int64 and small.labels[k].shape == (240,)
    for k in FLOAT_COLUMNS:
        assert small.labels[k].dtype == torch.float32 and small.labels[k].shape == (240,)


def test_synthetic_label_ranges(small):
    spec, lab = SyntheticSpec(), small.labels
    for key, (lo, hi) in [("x", spec.position), ("y", spec.position), ("scale", spec.scale),
                          ("rotation", spec.rotation), ("saturation", spec.obj_sat), ("value", spec.obj_val)]:
        assert lo <= lab[key].min() and lab[key].max() <= hi, key
    # the hue lies within hue_jitter degrees of its class centre (on the circle)
    centre = lab["colour"] * 360.0 / spec.n_hues
    diff = (lab["hue"] - centre + 180) % 360 - 180
    assert diff.abs().max() <= spec.hue_jitter + 1e-4
    assert 0 <= lab["hue"].min() and lab["hue"].max() < 360


def test_synthetic_classes_balanced(small):
    assert torch.bincount(small.labels["shape"], minlength=8).tolist() == [30] * 8
    assert torch.bincount(small.labels["colour"], minlength=12).tolist() == [20] * 12
    # shape and colour are drawn independently: not the same permutation
    assert not torch.equal(small.labels["shape"], small.labels["colour"] % 8)


def test_synthetic_deterministic(small):
    again = make_synthetic(240, seed=0)
    assert torch.equal(again.images, small.images)
    assert all(torch.equal(again.labels[k], small.labels[k]) for k in small.labels)
    other = make_synthetic(240, seed=1)
    assert not torch.equal(other.images, small.images)
    assert not torch.equal(other.labels["x"], small.labels["x"])


def test_synthetic_many_chunks():
    ds = make_synthetic(synthetic_module._CHUNK + 5, seed=2)  # crosses a render-chunk boundary
    assert ds.images.shape == (synthetic_module._CHUNK + 5, 3, 32, 32)
    assert ds.images[-5:].float().std() > 0  # the last chunk is drawn, not left empty


def test_synthetic_other_size_and_spec():
    ds = make_synthetic(16, size=48, seed=0, spec=SyntheticSpec(n_shapes=6, n_hues=10))
    assert ds.images.shape == (16, 3, 48, 48)
    assert ds.classes["shape"] == SHAPE_NAMES[:6] and len(ds.classes["colour"]) == 10
    assert int(ds.labels["shape"].max()) < 6 and int(ds.labels["colour"].max()) < 10


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
# synthetic: the labels are what the image shows
# ------------------------------------------------------------------------------------------
def _plain(n, **kw):
    """Objects fixed in place and size, on a black, untextured background."""
    spec = SyntheticSpec(position=(0.5, 0.5), scale=(0.35, 0.35), rotation=(0.0, 0.0), outline=0.0,
                         bg_sat=(0.0, 0.0), bg_val=(0.0, 0.0), texture=0.0, **kw)
    return make_synthetic(n, seed=0, spec=spec)


def test_shape_label_is_the_drawn_silhouette():
    ds = _plain(64)
    masks = (ds.images.float().amax(1) > 0).flatten(1).float()  # (N, H*W) object pixels
    shapes = ds.labels["shape"]
    # same shape -> same silhouette (whatever the colour); different shapes -> different ones
    dist = torch.cdist(masks, masks)
    same = shapes[:, None] == shapes[None, :]
    assert dist[same].max() == 0
    assert dist[~same].min() >= 3
    # 1-nearest-neighbour on silhouettes recovers the shape label exactly
    dist.fill_diagonal_(float("inf"))
    assert torch.equal(shapes[dist.argmin(1)], shapes)


def test_colour_label_is_the_drawn_hue():
    ds = _plain(48)
    for img, hue in zip(ds.images, ds.labels["hue"]):
        i = img.sum(0).argmax()  # a fully covered object pixel (the background is black)
        r, g, b = img.flatten(1)[:, i].float().div(255).tolist()
        h = colorsys.rgb_to_hsv(r, g, b)[0] * 360
        assert abs((h - float(hue) + 180) % 360 - 180) < 3  # 8-bit rounding only


def test_object_position_and_scale_labels():
    ds = make_synthetic(32, seed=0, spec=SyntheticSpec(
        rotation=(0.0, 0.0), outline=0.0, bg_sat=(0.0, 0.0), bg_val=(0.0, 0.0), texture=0.0, n_shapes=1))
    for img, x, y, s in zip(ds.images, ds.labels["x"], ds.labels["y"], ds.labels["scale"]):
        m = img.amax(0) > 0  # circle pixels (black background, no outline)
        ys, xs = m.nonzero().float().add(0.5).unbind(1)
        assert abs(xs.mean() / 32 - x) < 0.02 and abs(ys.mean() / 32 - y) < 0.02
        coverage = img.amax(0).float() / img.amax()  # anti-aliased: edge pixels partly covered
        area = math.pi * (0.85 * float(s) * 32) ** 2  # circle of radius 0.85 * scale
        assert abs(coverage.sum().item() - area) / area < 0.03


def test_hsv_to_rgb_matches_colorsys():
    h, s, v = torch.rand(50), torch.rand(50), torch.rand(50)
    rgb = synthetic_module.hsv_to_rgb(h, s, v)
    ref = torch.tensor([colorsys.hsv_to_rgb(*t) for t in zip(h.tolist(), s.tolist(), v.tolist())])
    assert torch.allclose(rgb, ref, atol=1e-5)


def test_polygon_sdf_square():
    square = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    p = torch.tensor([[0.0, 0.0], [0.5, 0.0], [2.0, 0.0], [0.0, -3.0], [2.0, 2.0]])
    d = synthetic_module.polygon_sdf(p, square)
    assert torch.allclose(d, torch.tensor([-1.0, -0.5, 1.0, 2.0, math.sqrt(2)]), atol=1e-6)


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
# ImageDataset and load_dataset
# ------------------------------------------------------------------------------------------
def _ds(**kw):
    args = dict(images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
                labels={"label": torch.tensor([0, 1, 2, 1]), "x": torch.zeros(4)},
                classes={"label": ["a", "b", "c"]}, target="label")
    args.update(kw)
    return ImageDataset(**args)


def test_image_dataset_methods():
    ds = _ds()
    assert len(ds) == 4 and "(4, 3, 8, 8) uint8" in repr(ds)
    sub = ds.subset([1, 3])
    assert len(sub) == 2 and sub.labels["label"].tolist() == [1, 1] and sub.classes == ds.classes
    assert len(ds.subset(slice(0, 3))) == 3
    assert len(ds.subset(ds.labels["label"] == 1)) == 2
    assert ds.to("cpu").images.device.type == "cpu"
    assert torch.equal(ds.targets, ds.labels["label"])


@pytest.mark.parametrize("kw, match", [
    (dict(images=np.zeros((4, 3, 8, 8), np.uint8)), "torch.Tensor"),
    (dict(images=torch.zeros(4, 3, 8, 8)), "uint8"),
    (dict(images=torch.zeros(4, 8, 8, dtype=torch.uint8)), r"\(N, 3, H, W\)"),
    (dict(images=torch.zeros(4, 1, 8, 8, dtype=torch.uint8)), r"\(N, 3, H, W\)"),
    (dict(labels={}), "non-empty"),
    (dict(labels={"label": [0, 1, 2, 1]}), r"labels\['label'\] must be a torch.Tensor"),
    (dict(labels={"label": torch.tensor([0, 1, 2, 1], dtype=torch.int32)}), "int64"),
    (dict(labels={"label": torch.tensor([0, 1, 2])}), r"expected \(4,\)"),
    (dict(labels={"label": torch.zeros(4, 1, dtype=torch.int64)}), r"expected \(4,\)"),
    (dict(target="shape"), "target 'shape'"),
    (dict(target="x"), "class column"),
    (dict(classes={"colour": ["r"]}), r"classes\['colour'\]"),
    (dict(classes={"label": ["a", "b", "c"], "x": ["?"]}), r"labels\['x'\] is not int64"),
    (dict(classes={"label": ["a", "b"]}), r"\[0, 2\)"),
    (dict(labels={"label": torch.tensor([0, -1, 2, 1])}), r"\[0, 3\)"),
])
def test_image_dataset_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _ds(**kw)


@pytest.mark.parametrize("kw, match", [
    (dict(n_shapes=0), "n_shapes"), (dict(n_shapes=9), "n_shapes"), (dict(n_hues=0), "n_hues"),
    (dict(hue_jitter=15.0), "hue_jitter"), (dict(scale=(0.3, 0.2)), "scale"),
])
def test_synthetic_spec_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSpec(**kw)


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


# ---------------------------------------------------------------- shared helpers of dataset.py and files.py
def test_mix_seed_keeps_the_seeds_the_shipped_runs_were_trained_with():
    from equimod_edu.dataset import mix_seed

    assert mix_seed(3, 7) == 3 * 1_000_003 + 7  # (seed, epoch) and (seed, step + 1) of every shipped run
    assert mix_seed(0, 1, 2) == 1_000_003 + 2 and 0 <= mix_seed(2**62, 2**62, 5) < 2**63
    assert len({mix_seed(0, epoch) for epoch in range(1000)} | {mix_seed(1, 0)}) == 1001


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    from equimod_edu.files import atomic_write

    target = tmp_path / "deep" / "file.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_as_images_accepts_a_dataset_a_batch_or_one_image():
    from equimod_edu.dataset import as_images

    ds = make_synthetic(4, size=8, seed=0)
    assert as_images(ds) is ds.images and as_images(ds.images[0]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        as_images(torch.zeros(2, 8, 8, dtype=torch.uint8))
