"""Evaluation: every metric on a constructed case whose answer is known, then a tiny run end to end."""

import json
import math

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from equimod_edu import equivariance, probes, report, views
from equimod_edu.augment import AugmentationConfig, apply
from equimod_edu.data import ImageDataset, make_synthetic
from equimod_edu.models import EquiModModel, ModelConfig
from equimod_edu.train import TrainConfig, Trainer

AUG = AugmentationConfig.synthetic(size=16)
SIZE = (16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)


def tiny_model(equimod=True, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="convnet", equimod=equimod, param_dim=AUG.encoded_dim, z_dim=16, proj_hidden=32,
                      y_dim=16, param_embed_dim=8, **overrides)
    return EquiModModel(cfg).eval()


def clusters(n, n_classes, dim, noise, seed=0):
    """Features = class centre + noise: (n, dim) float and (n,) long labels."""
    g = gen(seed)
    labels = torch.arange(n) % n_classes
    centres = 3 * torch.randn(n_classes, dim, generator=g)
    return centres[labels] + noise * torch.randn(n, dim, generator=g), labels


# ---------------------------------------------------------------- 1. features
def test_extract_features_shapes_batching_and_no_module():
    model, x = tiny_model(), images(10)
    f = probes.extract_features(model, x, AUG, batch_size=4)
    assert f["h"].shape == (10, model.feature_dim) and f["z"].shape == (10, 16) and f["y"].shape == (10, 16)
    assert torch.allclose(f["h"], probes.extract_features(model, x, AUG, batch_size=10)["h"], atol=1e-5)
    assert probes.extract_features(tiny_model(equimod=False), x, AUG)["y"] is None


# ---------------------------------------------------------------- 2. probes and linear evaluation
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


def test_centre_crop_box_is_resize_36_then_centre_crop_32():
    x = images(4, size=32).float() / 255
    bilinear = AugmentationConfig.cifar10(interpolation="bilinear")
    ours = apply(x, views.centre_crop_params(4, 32 / 36), bilinear, normalize=False)
    theirs = TF.center_crop(TF.resize(x, [36, 36], antialias=False), [32, 32])
    assert (ours - theirs).abs().max() < 1e-5


def test_linear_eval_sgd_runs_one_epoch_on_tiny_data_with_a_frozen_backbone():
    data = ImageDataset(images(24), {"label": torch.arange(24) % 4}, {"label": list("abcd")}, "label")
    model = tiny_model(equimod=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = probes.linear_eval_sgd(model, data, data, AUG, epochs=1, batch_size=8)
    assert 0 <= result["top1"] <= 1 and math.isfinite(result["train_loss"]) and "top5" not in result
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN stats


def test_linear_eval_augmentation_is_crop_and_flip_only():
    lin = views.linear_eval_augmentation(AugmentationConfig.byol_cifar10())
    assert lin.crop_scale == (0.08, 1.0) and lin.flip_p == 0.5
    assert lin.jitter_p == lin.gray_p == 0 and not lin.has_blur and not lin.has_solarize


# ---------------------------------------------------------------- 3. kNN
def test_knn_on_perfectly_clustered_features_is_one():
    feats, labels = clusters(150, 3, 32, noise=0.01)
    assert probes.knn_accuracy(feats[:90], labels[:90], feats[90:], labels[90:], k=200, batch_size=16) == 1.0


def test_knn_on_random_labels_is_near_chance():
    g = gen(4)
    feats, labels = torch.randn(2000, 16, generator=g), torch.randint(0, 4, (2000,), generator=g)
    assert abs(probes.knn_accuracy(feats[:1000], labels[:1000], feats[1000:], labels[1000:], k=20) - 0.25) < 0.06


# ---------------------------------------------------------------- 4. retrieval and gain
def test_chance_of_ranking_closed_forms_and_monte_carlo():
    one = equivariance.chance_of_ranking(10, 1)
    assert one["hit@1"] == pytest.approx(0.1) and one["hit@5"] == pytest.approx(0.5)
    assert one["mrr"] == pytest.approx(sum(1 / r for r in range(1, 11)) / 10)
    assert equivariance.chance_of_ranking(4, 4)["mrr"] == pytest.approx(1.0)
    g, trials = gen(5), 20000
    order = torch.rand(trials, 12, generator=g).argsort(dim=1)      # positives are items 0, 1, 2
    rank = (order < 3).float().argmax(dim=1) + 1
    three = equivariance.chance_of_ranking(12, 3)
    assert abs(three["mrr"] - (1 / rank).mean()) < 0.01
    assert abs(three["hit@1"] - (rank == 1).float().mean()) < 0.01


def test_retrieval_of_a_perfect_predictor_is_perfect():
    b, k = 12, 6
    y = torch.randn(b * k, 32, generator=gen(6))
    image = torch.arange(b).repeat_interleave(k)
    out = equivariance.retrieval_metrics(y, y, image, torch.randn(b * k, 3, generator=gen(7)), batch_size=20)
    for section in out.values():
        assert section["mrr"] == 1 and section["hit@1"] == 1 and section["hit@5"] == 1
    assert out["retrieval"]["chance_hit@1"] == pytest.approx(1 / (b * k))
    assert out["retrieval_within_image"]["chance_hit@1"] == pytest.approx(1 / k)
    assert out["retrieval_within_image"]["gallery"] == k


def test_retrieval_counts_identical_views_as_correct_and_ties_against_the_query():
    b, k = 8, 4
    image = torch.arange(b).repeat_interleave(k)
    keys = (torch.arange(b * k) % 2).float()[:, None]  # views 0, 2 and 1, 3 of each image are identical
    y = torch.randn(b * k, 16, generator=gen(8))
    y = y.view(b, 2, 2, 16)[:, :1].expand(b, 2, 2, 16).reshape(b * k, 16)  # so their embeddings are too
    within = equivariance.retrieval_metrics(y, y, image, keys)["retrieval_within_image"]
    assert within["hit@1"] == 1 and within["chance_hit@1"] == pytest.approx(0.5)
    collapsed = equivariance.retrieval_metrics(torch.ones(b * k, 16), torch.ones(b * k, 16), image)
    assert collapsed["retrieval"]["hit@5"] == 0  # everything tied: the worst rank, not the best


def test_random_predictions_retrieve_at_chance():
    b, k = 50, 8
    image = torch.arange(b).repeat_interleave(k)
    out = equivariance.retrieval_metrics(torch.randn(b * k, 32, generator=gen(9)), torch.randn(b * k, 32, generator=gen(10)),
                               image)["retrieval_within_image"]
    assert abs(out["hit@1"] - out["chance_hit@1"]) < 0.06 and abs(out["mrr"] - out["chance_mrr"]) < 0.06


def test_prediction_quality_of_perfect_and_invariant_predictors():
    g = gen(11)
    y, y_o = torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g)
    perfect, invariant = equivariance.prediction_quality(y, y, y_o), equivariance.prediction_quality(y, y_o, y_o)
    assert perfect["relative_gain"] == pytest.approx(1, abs=1e-5)
    assert perfect["gain"] == pytest.approx(1 - perfect["cos_invariant"], abs=1e-5)
    assert invariant["gain"] == 0 and invariant["relative_gain"] == 0
    assert math.isnan(equivariance.prediction_quality(y, y_o, y)["relative_gain"])  # views that do not move


def test_identity_predictor_has_zero_gain_and_retrieves_at_chance_within_an_image():
    model, x, k = tiny_model(), images(6), 4
    aug = AUG.replace(jitter_p=1.0)  # continuous factors in every view: no two views are identical
    out = equivariance.equivariance_metrics(model, x, aug, predictor=lambda y_o, t: y_o, gallery_size=k)
    assert out["gain"] == 0 and out["relative_gain"] == 0
    assert out["retrieval_within_image"]["hit@1"] == pytest.approx(1 / k)  # invariance cannot tell views apart
    assert list(out["per_augmentation"]) == views.one_at_a_time_groups(aug)
    assert all(v["gain"] == 0 for v in out["per_augmentation"].values())
    assert out["n_images"] == 6 and out["views"] == k


def test_perfect_predictor_through_view_embeddings():
    model, x, k = tiny_model(), images(6), 4
    params = views.sample_views(AUG, 6, k, SIZE, gen(12))
    emb = equivariance.embed_views(x, AUG, params, k, lambda v: model.embed(v)[2])
    assert emb.y.shape == (6 * k, 16) and emb.t.shape == (6 * k, AUG.encoded_dim) and emb.y_o_rows.shape == emb.y.shape
    out = equivariance.equivariance_scores(emb, lambda y_o, t: emb.y)
    assert out["retrieval"]["mrr"] == 1 and out["retrieval"]["hit@1"] == 1
    assert out["retrieval_within_image"]["hit@1"] == 1
    assert out["relative_gain"] == pytest.approx(1, abs=1e-5)


def test_one_augmentation_at_a_time_leaves_the_rest_at_identity():
    hue = views.sample_one_augmentation(AUG, "hue", 64, SIZE, gen(13))
    assert hue.jitter.all() and (hue.hue != 0).all() and (hue.brightness == 1).all()
    assert (hue.crop == torch.tensor([0.0, 0.0, 1.0, 1.0])).all() and not hue.flip.any() and not hue.grayscale.any()
    assert (hue.order == torch.arange(4)).all()
    flip = views.sample_one_augmentation(AUG, "flip", 64, SIZE, gen(13))
    assert 0 < flip.flip.sum() < 64 and not flip.jitter.any()
    assert views.one_at_a_time_groups(AUG.replace(gray_p=0.0, hue=0.0)) == ["crop", "flip", "brightness", "contrast",
                                                                          "saturation"]


def test_baseline_without_module_needs_a_predictor():
    with pytest.raises(ValueError, match="fit_posthoc_predictor"):
        equivariance.equivariance_metrics(tiny_model(equimod=False), images(4), AUG)


# ---------------------------------------------------------------- 5. sensitivity
def test_sensitivity_of_a_hue_only_predictor():
    groups = AUG.encoded_groups()
    g, q = gen(14), 400
    t, y_o = torch.randn(q, AUG.encoded_dim, generator=g), torch.randn(q, 8, generator=g)
    w = torch.randn(groups["hue"].stop - groups["hue"].start, 8, generator=g)

    def hue_only(y_o, t):
        return y_o + 2 * t[:, groups["hue"]] @ w

    emb = equivariance.ViewEmbeddings(y_o=y_o, y=hue_only(y_o, t), t=t, image=torch.arange(q))
    drops = equivariance.sensitivity_from_embeddings(emb, hue_only, groups)
    assert drops["hue"] > 0.1
    assert all(abs(v) < 1e-6 for name, v in drops.items() if name != "hue")


def test_predictor_sensitivity_follows_the_param_mask():
    mask = AUG.param_mask(["crop"])
    model = tiny_model(param_mask=mask)
    drops = equivariance.predictor_sensitivity(model, images(8), AUG, views=2)
    assert list(drops) == list(AUG.encoded_groups())
    assert drops["crop"] != 0 and all(v == 0 for name, v in drops.items() if name != "crop")


# ---------------------------------------------------------------- 6. augmentation parameters in h
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
    assert set(out) == set(views.parameter_targets(aug.sample(2), aug))
    assert out["brightness"]["metric"] == "r2" and out["brightness"]["value"] > 0.9
    assert out["flip"]["metric"] == "accuracy" and abs(out["flip"]["value"] - out["flip"]["chance"]) < 0.15
    assert out["crop_top"] is None and out["hue"] is None and out["grayscale"] is None  # constant here


# ---------------------------------------------------------------- 7. post-hoc predictor
def test_posthoc_predictor_fits_a_baseline_and_is_scored_like_the_module():
    base, x = tiny_model(equimod=False), images(32)
    predictor = equivariance.fit_posthoc_predictor(base, x, AUG, epochs=15, pairs=1, batch_size=16, embed_dim=8)
    assert predictor.space == "h" and not predictor.training and len(predictor.history) == 15
    assert predictor.history[-1] < predictor.history[0]
    h = probes.extract_features(base, x, AUG)["h"]
    assert torch.allclose(predictor.embed(base, AUG.original(x)).mean(0), torch.zeros(h.shape[1]), atol=1e-4)
    out = equivariance.equivariance_metrics(base, images(6, seed=1), AUG, predictor, gallery_size=4, per_augmentation=False)
    assert {"gain", "relative_gain", "retrieval", "retrieval_within_image"} <= set(out)


# ---------------------------------------------------------------- 8. end to end
TINY = report.EvalSizes(n_train=64, n_test=32, knn_k=20, equi_images=12, gallery_size=4, sensitivity_views=2,
                    posthoc_images=64, posthoc_pairs=1, posthoc_epochs=2, param_train=64, param_test=32)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    data = make_synthetic(96, size=16, seed=0)
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", augment_overrides={"size": 16}, backbone="convnet",
                      proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, batch_size=16, epochs=1,
                      warmup_epochs=0, train_subset=64, device="cpu", out_dir=str(out / "run"), progress=False)
    Trainer(cfg, dataset=data.subset(slice(0, 64))).run()
    return out, cfg, (data.subset(slice(0, 64)), data.subset(slice(64, 96)))


def test_evaluate_run_end_to_end_writes_the_report(tiny_run):
    out, _, data = tiny_run
    result = report.evaluate_run(out / "run", dataset=data, sizes=TINY)
    assert result["target"] == "shape" and list(result["labels"])[:2] == ["shape", "colour"]
    assert result["labels"]["x"]["metric"] == "r2" and set(result["knn"]) == {"shape", "colour"}
    for key in ("equivariance", "equivariance_posthoc"):
        assert {"gain", "relative_gain", "retrieval", "retrieval_within_image", "per_augmentation"} <= set(result[key])
    assert result["equivariance"]["space"] == "y" and result["equivariance_posthoc"]["space"] == "h"
    assert set(result["sensitivity"]) == set(AUG.encoded_groups()) == set(result["sensitivity_posthoc"])
    assert result["augmentation_probes"]["brightness"]["metric"] == "r2"
    assert result["meta"]["run_dir"] == str(out / "run") and result["meta"]["equimod"]

    paths = report.write_report(result, out / "eval")
    for name in ("report.json", "report.md", "sensitivity.png", "per_augmentation.png", "augmentation_probes.png"):
        assert (out / "eval" / name).stat().st_size > 0
    saved = json.loads((out / "eval" / "report.json").read_text())
    assert set(saved) >= {"labels", "knn", "equivariance", "equivariance_posthoc", "sensitivity",
                          "augmentation_probes", "meta"}
    assert "Equivariance" in paths["markdown"].read_text()


def test_evaluate_random_init_baseline_has_only_the_posthoc_predictor(tiny_run, tmp_path):
    _, cfg, data = tiny_run
    baseline = TrainConfig.from_dict({**cfg.to_dict(), "equimod": False})
    result = report.evaluate_random_init(baseline, dataset=data, sizes=TINY)
    assert result["equivariance"] is None and result["sensitivity"] is None
    assert result["equivariance_posthoc"]["retrieval"]["gallery"] == TINY.equi_images * TINY.gallery_size
    assert result["meta"]["random_init"] and not result["meta"]["equimod"]
    report.write_report(result, tmp_path)
    assert "random init" in (tmp_path / "report.md").read_text()
