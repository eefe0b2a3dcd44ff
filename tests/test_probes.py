"""probes.py, each probe on a constructed case whose answer is known.

Frozen features, linear / ridge / label probes, kNN, the SGD linear evaluation and the augmentation probes.
"""

import math

import pytest
import torch
from helpers import gen, random_images, tiny_model
from torch import nn

from equimod_edu import probes, recipes
from equimod_edu.augment import AugmentationConfig
from equimod_edu.dataset import ImageDataset

AUG = AugmentationConfig.synthetic(size=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def clusters(n, n_classes, dim, noise, seed=0):
    """Features = class centre + noise: (n, dim) float and (n,) long labels."""
    g = gen(seed)
    labels = torch.arange(n) % n_classes
    centres = 3 * torch.randn(n_classes, dim, generator=g)
    return centres[labels] + noise * torch.randn(n, dim, generator=g), labels


# ---------------------------------------------------------------- features
def test_extract_features_shapes_batching_and_no_module():
    model, x = tiny_model(), random_images(10)
    f = probes.extract_features(model, x, AUG, batch_size=4)
    assert f["h"].shape == (10, model.feature_dim) and f["z"].shape == (10, 16) and f["y"].shape == (10, 16)
    assert torch.allclose(f["h"], probes.extract_features(model, x, AUG, batch_size=10)["h"], atol=1e-5)
    assert probes.extract_features(tiny_model(equimod=False), x, AUG)["y"] is None


# ---------------------------------------------------------------- probes and linear evaluation
def test_linear_probe_recovers_planted_classes():
    feats, labels = clusters(400, 4, 16, noise=0.3)
    result = probes.linear_probe(feats[:200], labels[:200], feats[200:], labels[200:])
    assert result["top1"] > 0.98 and "top5" not in result  # top-5 only with more than 5 classes
    feats, labels = clusters(400, 10, 16, noise=0.3)
    result = probes.linear_probe(feats[:200], labels[:200], feats[200:], labels[200:])
    assert result["top1"] > 0.98 and result["top5"] >= result["top1"]


def test_linear_probe_on_a_random_embedding_is_at_chance():
    g = gen(1)
    feats, labels = torch.randn(2400, 32, generator=g), torch.randint(0, 4, (2400,), generator=g)
    result = probes.linear_probe(feats[:400], labels[:400], feats[400:], labels[400:])
    assert abs(result["top1"] - 0.25) < 0.05


def test_ridge_probe_recovers_a_planted_factor_and_not_noise():
    g = gen(2)
    factor = torch.rand(600, generator=g)
    feats = torch.cat([factor[:, None] + 0.02 * torch.randn(600, 1, generator=g),
                       torch.randn(600, 15, generator=g)], dim=1)
    assert probes.ridge_probe(feats[:400], factor[:400], feats[400:], factor[400:]) > 0.95
    noise = torch.randn(600, 16, generator=g)
    assert abs(probes.ridge_probe(noise[:400], factor[:400], noise[400:], factor[400:])) < 0.1


def test_label_probes_pick_the_metric_by_column_kind():
    g = gen(3)
    feats, shape = clusters(300, 3, 8, noise=0.3)
    x, hue = torch.rand(300, generator=g), 360 * torch.rand(300, generator=g)
    angle = torch.deg2rad(hue)
    feats = torch.cat([feats, x[:, None], angle.cos()[:, None], angle.sin()[:, None]], dim=1)
    labels = {"shape": shape, "x": x, "hue": hue}
    out = probes.label_probes(feats[:200], {k: v[:200] for k, v in labels.items()}, feats[200:],
                          {k: v[200:] for k, v in labels.items()})
    assert out["shape"]["metric"] == "accuracy" and out["shape"]["value"] > 0.98
    assert out["shape"]["chance"] == pytest.approx(1 / 3)
    assert out["x"]["metric"] == "r2" and out["x"]["value"] > 0.98
    assert out["hue"]["value"] > 0.98  # an angle: regressed as (cos, sin), so 359 and 1 degrees are close


def test_linear_eval_sgd_runs_one_epoch_on_tiny_data_with_a_frozen_backbone():
    data = ImageDataset(random_images(24), {"label": torch.arange(24) % 4}, {"label": list("abcd")}, "label")
    model = tiny_model(equimod=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = probes.linear_eval_sgd(model, data, data, AUG, epochs=1, batch_size=8)
    assert 0 <= result["top1"] <= 1 and math.isfinite(result["train_loss"]) and "top5" not in result
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN stats


# ---------------------------------------------------------------- kNN
def test_knn_on_perfectly_clustered_features_is_one():
    feats, labels = clusters(150, 3, 32, noise=0.01)
    assert probes.knn_accuracy(feats[:90], labels[:90], feats[90:], labels[90:], k=200, batch_size=16) == 1.0


def test_knn_on_random_labels_is_near_chance():
    g = gen(4)
    feats, labels = torch.randn(2000, 16, generator=g), torch.randint(0, 4, (2000,), generator=g)
    assert abs(probes.knn_accuracy(feats[:1000], labels[:1000], feats[1000:], labels[1000:], k=20) - 0.25) < 0.06


# ---------------------------------------------------------------- augmentation parameters in h
class MeanColour(nn.Module):
    """A stand-in backbone: log of each raw colour channel's mean (blind to flips, reads brightness)."""

    def __init__(self, aug):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.register_buffer("mean", torch.tensor(aug.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(aug.std).view(1, 3, 1, 1))

    def features(self, x):
        return (x * self.std + self.mean).mean(dim=(2, 3)).clamp_min(1e-3).log()


def test_augmentation_probes_read_a_planted_parameter_and_not_an_invisible_one():
    aug = AugmentationConfig.synthetic(size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=1.0,
                                       contrast=0.0, saturation=0.0, hue=0.0, gray_p=0.0)
    x = torch.randint(50, 180, (600, 3, 16, 16), generator=gen(15), dtype=torch.uint8)  # no clipping at 1.4x
    out = probes.augmentation_probes(MeanColour(aug), x[:400], x[400:], aug)
    assert set(out) == set(recipes.parameter_targets(aug.sample(2), aug))
    assert out["brightness"]["metric"] == "r2" and out["brightness"]["value"] > 0.9
    assert out["flip"]["metric"] == "accuracy" and abs(out["flip"]["value"] - out["flip"]["chance"]) < 0.15
    assert out["crop_top"] is None and out["hue"] is None and out["grayscale"] is None  # constant here
