"""equivariance.py, each function on a constructed case whose answer is known.

Retrieval and gain, view embeddings, sensitivity and the post-hoc predictor.
"""

import math

import pytest
import torch
from helpers import gen, random_images, tiny_model

from equimod_edu import equivariance, probes, recipes
from equimod_edu.augment import AugmentationConfig

AUG = AugmentationConfig.synthetic(size=16)
SIZE = (16, 16)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------- retrieval and gain
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
    out = equivariance.retrieval_metrics(torch.randn(b * k, 32, generator=gen(9)),
                                         torch.randn(b * k, 32, generator=gen(10)), image)["retrieval_within_image"]
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
    model, x, k = tiny_model(), random_images(6), 4
    aug = AUG.replace(jitter_p=1.0)  # continuous factors in every view: no two views are identical
    out = equivariance.equivariance_metrics(model, x, aug, predictor=lambda y_o, t: y_o, gallery_size=k)
    assert out["gain"] == 0 and out["relative_gain"] == 0
    assert out["retrieval_within_image"]["hit@1"] == pytest.approx(1 / k)  # invariance cannot tell views apart
    assert list(out["per_augmentation"]) == recipes.one_at_a_time_groups(aug)
    assert all(v["gain"] == 0 for v in out["per_augmentation"].values())
    assert out["n_images"] == 6 and out["views"] == k


def test_perfect_predictor_through_view_embeddings():
    model, x, k = tiny_model(), random_images(6), 4
    params = recipes.sample_views(AUG, 6, k, SIZE, gen(12))
    emb = equivariance.embed_views(x, AUG, params, k, lambda v: model.embed(v)[2])
    assert emb.y.shape == (6 * k, 16) and emb.t.shape == (6 * k, AUG.encoded_dim) and emb.y_o_rows.shape == emb.y.shape
    out = equivariance.equivariance_scores(emb, lambda y_o, t: emb.y)
    assert out["retrieval"]["mrr"] == 1 and out["retrieval"]["hit@1"] == 1
    assert out["retrieval_within_image"]["hit@1"] == 1
    assert out["relative_gain"] == pytest.approx(1, abs=1e-5)


def test_baseline_without_module_needs_a_predictor():
    with pytest.raises(ValueError, match="fit_posthoc_predictor"):
        equivariance.equivariance_metrics(tiny_model(equimod=False), random_images(4), AUG)


# ---------------------------------------------------------------- sensitivity
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
    drops = equivariance.predictor_sensitivity(model, random_images(8), AUG, views=2)
    assert list(drops) == list(AUG.encoded_groups())
    assert drops["crop"] != 0 and all(v == 0 for name, v in drops.items() if name != "crop")


# ---------------------------------------------------------------- post-hoc predictor
def test_posthoc_predictor_fits_a_baseline_and_is_scored_like_the_module():
    base, x = tiny_model(equimod=False), random_images(32)
    predictor = equivariance.fit_posthoc_predictor(base, x, AUG, epochs=15, pairs=1, batch_size=16, embed_dim=8)
    assert predictor.space == "h" and not predictor.training and len(predictor.history) == 15
    assert predictor.history[-1] < predictor.history[0]
    h = probes.extract_features(base, x, AUG)["h"]
    assert torch.allclose(predictor.embed(base, AUG.original(x)).mean(0), torch.zeros(h.shape[1]), atol=1e-4)
    out = equivariance.equivariance_metrics(base, random_images(6, seed=1), AUG, predictor, gallery_size=4,
                                            per_augmentation=False)
    assert {"gain", "relative_gain", "retrieval", "retrieval_within_image"} <= set(out)
