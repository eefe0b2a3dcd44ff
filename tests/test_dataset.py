"""dataset.py: ImageDataset's methods and validation, and the helpers mix_seed and as_images."""

import numpy as np
import pytest
import torch

from equimod_edu.dataset import ImageDataset
from equimod_edu.synthetic import make_synthetic


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


# ---------------------------------------------------------------- dataset.py's helpers
def test_mix_seed_keeps_the_seeds_the_shipped_runs_were_trained_with():
    from equimod_edu.dataset import mix_seed

    assert mix_seed(3, 7) == 3 * 1_000_003 + 7  # (seed, epoch) and (seed, step + 1) of every shipped run
    assert mix_seed(0, 1, 2) == 1_000_003 + 2 and 0 <= mix_seed(2**62, 2**62, 5) < 2**63
    assert len({mix_seed(0, epoch) for epoch in range(1000)} | {mix_seed(1, 0)}) == 1001


def test_as_images_accepts_a_dataset_a_batch_or_one_image():
    from equimod_edu.dataset import as_images

    ds = make_synthetic(4, size=8, seed=0)
    assert as_images(ds) is ds.images and as_images(ds.images[0]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        as_images(torch.zeros(2, 8, 8, dtype=torch.uint8))
