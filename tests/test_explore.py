"""Explorers and figures, headless: controls set from code change the parameters, the view and the numbers.

Tiny untrained models (ConvNet, 32 x 32 synthetic images) in eval mode; matplotlib's Agg backend.
"""

import html
import math
import re
import sys
import types

import matplotlib

import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from equimod_edu import equivariance, figures, notebook, views, widgets  # noqa: E402
from equimod_edu.augment import AugmentationConfig, AugmentationParams, apply  # noqa: E402
from equimod_edu.data import ImageDataset, make_synthetic  # noqa: E402
from equimod_edu.equivariance import fit_posthoc_predictor  # noqa: E402
from equimod_edu.views import sample_views  # noqa: E402
from equimod_edu.models import EquiModModel, ModelConfig  # noqa: E402
from equimod_edu.train import TrainConfig, Trainer  # noqa: E402

AUG = AugmentationConfig.synthetic()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def images():
    return make_synthetic(8, size=32).images


def tiny_model(equimod=True, seed=0, aug=AUG):
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="convnet", equimod=equimod, proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8,
                      param_dim=aug.encoded_dim)
    return EquiModModel(cfg).eval()


@pytest.fixture(scope="module")
def models(images):
    """{"SimCLR": (baseline, post-hoc predictor), "EquiMod": (model, None)}, as the notebooks pass them."""
    simclr = tiny_model(equimod=False, seed=1)
    posthoc = fit_posthoc_predictor(simclr, images, AUG, epochs=1, pairs=1, embed_dim=8, batch_size=8)
    return {"SimCLR": (simclr, posthoc), "EquiMod": (tiny_model(), None)}


@pytest.fixture
def explorer(models, images):
    return widgets.DisplacementExplorer(models, images, AUG, gallery_size=6, reference_views=32)


def as_float(image):
    return image.float() / 255


# ---------------------------------------------------------------- controls -> parameters
def test_crop_box_keeps_area_and_ratio_and_fits_inside():
    top, left, h, w = views.crop_box(0.36, 1.0, 0.0, 0.0)
    assert (top, left) == (0.0, 0.0) and h == pytest.approx(0.6) and w == pytest.approx(0.6)
    top, left, h, w = views.crop_box(0.5, 4 / 3, 1.0, 1.0)           # top/left past the edge: moved back
    assert h * w == pytest.approx(0.5) and w / h == pytest.approx(4 / 3)
    assert top == pytest.approx(1 - h) and left == pytest.approx(1 - w)
    top, left, h, w = views.crop_box(1.0, 4 / 3)                       # too wide: the width is cut to the image
    assert w == 1.0 and h == pytest.approx(math.sqrt(3 / 4)) and (top, left) == (0.0, 0.0)
    _, _, h, w = views.crop_box(0.5, 1.0, image_aspect=2.0)            # a 2:1 image: square in pixels
    assert h * w == pytest.approx(0.5) and (w * 2) / h == pytest.approx(1.0)
    with pytest.raises(ValueError):
        views.crop_box(0.0)


def test_controls_follow_the_config():
    controls = widgets.augmentation_controls(AUG, n_images=5)
    assert controls["image"].max == 4 and "sigma" not in controls and "solarize" not in controls
    assert controls["crop_scale"].min == pytest.approx(AUG.crop_scale[0]) and controls["crop_scale"].value == 1
    assert (controls["brightness"].min, controls["brightness"].max) == pytest.approx((0.6, 1.4))
    assert (controls["hue"].min, controls["hue"].max) == (-0.5, 0.5) and len(controls["order"].options) == 24
    byol = widgets.augmentation_controls(AugmentationConfig.byol_cifar10())
    assert byol["sigma"].max == pytest.approx(2.0) and byol["sigma"].value == 0 and byol["solarize"].value is False


def test_identity_controls_give_identity_params():
    params = views.params_from_values({}, AUG)
    identity = AugmentationParams.identity(1)
    for name in ("crop", "flip", "jitter", "order", "brightness", "hue", "grayscale", "blur", "solarize"):
        assert torch.equal(getattr(params, name), getattr(identity, name)), name
    with pytest.raises(ValueError, match="unknown controls"):
        views.params_from_values({"rotation": 3}, AUG)


def test_jitter_turns_on_only_when_a_factor_moves_and_then_takes_the_order():
    p = views.params_from_values({"order": (3, 2, 1, 0)}, AUG)
    assert not p.jitter[0] and p.order[0].tolist() == [0, 1, 2, 3]
    p = views.params_from_values({"order": (3, 2, 1, 0), "contrast": 1.2}, AUG)
    assert p.jitter[0] and p.order[0].tolist() == [3, 2, 1, 0] and p.contrast[0] == pytest.approx(1.2)
    aug = AugmentationConfig.byol_cifar10()
    p = views.params_from_values({"sigma": 1.5, "solarize": True}, aug)
    assert p.blur[0] and p.sigma[0] == pytest.approx(1.5) and p.solarize[0]
    p = views.params_from_values({"sigma": 1.5, "solarize": True}, AUG)  # this config neither blurs nor solarizes
    assert not p.blur[0] and not p.solarize[0]


# ---------------------------------------------------------------- what training drew: marks and warnings
CIFAR = AugmentationConfig.cifar10()   # hue +-0.1: a hue slider (+-0.5) can leave the training range


def test_training_range_is_what_the_config_samples():
    tr = views.training_range
    assert (tr(CIFAR, "crop_scale").low, tr(CIFAR, "crop_scale").high) == CIFAR.crop_scale
    assert tr(CIFAR, "crop_scale").text == "trained: 0.20–1.00" and tr(CIFAR, "crop_ratio").text == "trained: 0.75–1.33"
    assert tr(CIFAR, "brightness").text == "trained: 0.60–1.40" and tr(CIFAR, "crop_top").text == "trained: anywhere"
    assert tr(CIFAR, "hue").text == "trained: ±0.10" and tr(AUG, "hue").text == "trained: all hues"
    assert tr(CIFAR, "flip").text == "trained: p 0.50" and tr(CIFAR, "grayscale").text == "trained: p 0.20"
    byol = AugmentationConfig.byol_cifar10()
    assert tr(byol, "saturation").text == "trained: 0.80–1.20" and tr(byol, "sigma").text == "trained: 0.10–2.00"
    assert tr(byol, "solarize").text == "trained: p 0.00 / 0.20 (view 1 / 2)"
    plain = CIFAR.replace(jitter_p=0.0, flip_p=0.0)        # never jittered, never flipped
    assert tr(plain, "contrast").text == "trained: 1.00 only" and tr(plain, "hue").text == "trained: 0 only"
    assert tr(plain, "flip").text == "trained: off only" and tr(CIFAR, "sigma").text == "trained: 0 only"
    hue = tr(CIFAR, "hue")
    assert hue.contains(0.1) and hue.contains(-0.1) and hue.contains(0.0) and not hue.contains(0.19)
    assert tr(plain, "contrast").contains(1.0) and not tr(plain, "contrast").contains(1.2)
    assert tr(CIFAR, "flip").contains(True) and not tr(plain, "flip").contains(True) and tr(plain, "flip").contains(False)
    assert tr(byol, "sigma").contains(0.0) and not tr(byol, "sigma").contains(0.05)   # off (identity) or 0.1-2
    for name in ("image", "order", "rotation"):
        with pytest.raises(ValueError, match="no training range"):
            tr(CIFAR, name)


def test_outside_training_range_lists_the_values_training_never_drew():
    outside = views.outside_training_range
    assert outside({"hue": 0.19}, CIFAR) == ["hue +0.19 (trained ±0.10)"]
    assert outside({"hue": -0.3, "brightness": 1.2, "image": 3, "order": (3, 2, 1, 0)}, CIFAR) == \
        ["hue -0.30 (trained ±0.10)"]
    assert outside({"hue": 0.19, "flip": True}, AUG) == []            # the synthetic config draws the whole circle
    assert outside({"flip": True, "contrast": 1.3}, CIFAR.replace(flip_p=0.0, contrast=0.2)) == \
        ["flip on (trained off only)", "contrast 1.30 (trained 0.80–1.20)"]
    assert outside({name: w.value for name, w in widgets.augmentation_controls(CIFAR).items()}, CIFAR) == []


def test_every_control_shows_its_training_range_and_turns_red_outside_it(images):
    explorer = widgets.AugmentationExplorer(images, CIFAR)
    assert set(explorer.marks) == set(explorer.controls) - {"image"}
    assert all("equimod-trained" in mark._dom_classes for mark in explorer.marks.values())
    assert "trained: ±0.10" in explorer.marks["hue"].value and "trained: 0.60–1.40" in explorer.marks["contrast"].value
    assert "trained: all 24" in explorer.marks["order"].value
    in_range = explorer.marks["hue"].value
    assert explorer.result["outside"] == [] and "equimod-outside" not in explorer.readout.value
    explorer.set(hue=0.19)
    assert explorer.result["outside"] == ["hue +0.19 (trained ±0.10)"]
    assert explorer.marks["hue"].value != in_range and "!" in explorer.marks["hue"].value
    assert "!" not in explorer.marks["contrast"].value
    warning = re.search(r'<div class="equimod-outside"[^>]*>(.*?)</div>', explorer.readout.value).group(1)
    assert "outside the training range" in warning and "hue +0.19 (trained ±0.10)" in warning
    assert explorer.readout.value.index("equimod-params") < explorer.readout.value.index("equimod-outside")
    explorer.reset()
    assert explorer.marks["hue"].value == in_range and "equimod-outside" not in explorer.readout.value


# ---------------------------------------------------------------- the augmentation explorer
def test_augmentation_explorer_starts_at_identity(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    r = explorer.result
    assert torch.allclose(r["augmented"], as_float(images[0]), atol=1e-4)
    assert torch.allclose(r["encoded"], AUG.encode(AugmentationParams.identity(1))[0])
    assert len(r["names"]) == AUG.encoded_dim and explorer.png[:4] == b"\x89PNG"
    import ipywidgets
    assert isinstance(explorer.widget, ipywidgets.VBox) and explorer.output in explorer.widget.children


def test_hue_slider_sets_the_hue_changes_the_view_and_the_vector(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    before = explorer.result
    explorer.controls["hue"].value = 0.3
    after = explorer.result
    assert after["params"].hue[0] == pytest.approx(0.3) and after["params"].jitter[0]
    assert (after["augmented"] - before["augmented"]).abs().max() > 0.1
    expected = apply(images[:1], after["params"], AUG, normalize=False)[0]
    assert torch.allclose(after["augmented"], expected)
    hue = AUG.encoded_groups()["hue"]
    assert torch.allclose(after["encoded"], AUG.encode(after["params"])[0])
    assert not torch.allclose(after["encoded"][hue], before["encoded"][hue])


def test_the_readout_shows_the_parameters_and_t_as_text(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    view_line = re.search(r'<div class="equimod-params">(.*?)</div>', explorer.readout.value).group(1)
    assert view_line == "<b>view:</b> crop 1.00x1.00 @(0.00,0.00)"  # identity: no jitter, flip or gray
    explorer.controls["hue"].value = 0.3
    text = explorer.readout.value
    assert "h+0.30" in text and views.describe_params(explorer.params()).replace(",", "") in text.replace(",", "")
    shown = re.findall(r'data-name="([^"]+)">[^&]+&nbsp;([-+][0-9.]+)<', text)
    assert [name for name, _ in shown] == explorer.result["names"]
    assert [float(v) for _, v in shown] == pytest.approx(explorer.result["encoded"].tolist(), abs=0.006)
    classes = {name: control._dom_classes for name, control in explorer.controls.items()}
    assert all(f"equimod-control-{name}" in c for name, c in classes.items())
    assert "equimod-readout" in explorer.readout._dom_classes and "equimod-figure" in explorer.output._dom_classes


def test_crop_flip_gray_and_image_controls(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    explorer.controls["crop_scale"].value = 0.4
    top, left, h, w = explorer.params().crop[0].tolist()
    assert h * w == pytest.approx(0.4, abs=1e-3) and explorer.result["augmented"].shape == (3, 32, 32)
    explorer.controls["crop_ratio"].value = 4 / 3
    explorer.controls["crop_top"].value = 1.0
    top, left, h, w = explorer.params().crop[0].tolist()
    assert w / h == pytest.approx(4 / 3, abs=0.01) and top == pytest.approx(1 - h) and left == 0
    explorer.reset()
    explorer.controls["flip"].value = True
    assert explorer.params().flip[0]
    assert torch.allclose(explorer.result["augmented"], as_float(images[0]).flip(-1), atol=1e-4)
    explorer.controls["grayscale"].value = True
    view = explorer.result["augmented"]
    assert explorer.params().grayscale[0] and torch.allclose(view[0], view[1]) and torch.allclose(view[1], view[2])
    explorer.controls["image"].value = 3
    assert torch.equal(explorer.result["original"], images[3])


def test_set_moves_several_controls_with_one_update_and_rejects_unknown_names(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    n = len(explorer.timings)
    result = explorer.set(brightness=1.3, hue=-0.2, order=[3, 0, 1, 2])
    assert len(explorer.timings) == n + 1
    assert result["params"].brightness[0] == pytest.approx(1.3) and result["params"].order[0].tolist() == [3, 0, 1, 2]
    with pytest.raises(ValueError, match="unknown controls"):
        explorer.set(rotation=10)
    explorer.reset()
    assert torch.allclose(explorer.result["augmented"], as_float(images[0]), atol=1e-4)


# ---------------------------------------------------------------- the displacement explorer
def direct(model, predictor, x_o, x, t):
    """y_o, y, y_hat computed straight from the model (and the post-hoc predictor)."""
    with torch.no_grad():
        if predictor is None:
            y_o, y = model.embed(x_o)[2], model.embed(x)[2]
            return y_o, y, model.predict(y_o, t)
        y_o, y = predictor.embed(model, x_o), predictor.embed(model, x)
        return y_o, y, predictor(y_o, t)


def test_displacement_numbers_match_a_direct_computation(explorer, models, images):
    result = explorer.set(image=2, hue=0.25, crop_scale=0.5, crop_left=0.3, flip=True)
    params = explorer.params()
    x_o, x, t = AUG.original(images[2:3]), apply(images[2:3], params, AUG), AUG.encode(params)
    assert torch.allclose(result["encoded"], t[0])
    for name, (model, predictor) in models.items():
        r = result["models"][name]
        y_o, y, y_hat = direct(model, predictor, x_o, x, t)
        assert torch.allclose(r["y"], y[0], atol=1e-5) and torch.allclose(r["y_hat"], y_hat[0], atol=1e-5)
        cos_pred, cos_inv = float(F.cosine_similarity(y, y_hat)), float(F.cosine_similarity(y, y_o))
        assert r["cos_pred"] == pytest.approx(cos_pred, abs=1e-5)
        assert r["cos_invariant"] == pytest.approx(cos_inv, abs=1e-5)
        assert r["gain"] == pytest.approx(cos_pred - cos_inv, abs=1e-5)
        # dir: the cosine between the two arrows, actual y - y_o and predicted y_hat - y_o, in the full space
        assert r["dir"] == pytest.approx(float(F.cosine_similarity(y - y_o, y_hat - y_o)), abs=1e-5)
        # the gallery: the true view and 6 other views of image 2, drawn with seed + 1 + image
        gallery_params = sample_views(AUG, 1, 6, (32, 32), torch.Generator().manual_seed(0 + 1 + 2))
        _, others, _ = direct(model, predictor, x_o, apply(images[2:3].expand(6, -1, -1, -1), gallery_params, AUG), t)
        gallery = torch.cat([y, others])
        similarity = F.cosine_similarity(y_hat, gallery)
        assert r["gallery"] == 7 and r["rank"] == 1 + int((similarity[1:] >= similarity[0]).sum())
        assert 1 <= r["rank_invariant"] <= 7


def test_identity_means_no_displacement(explorer):
    result = explorer.reset()
    assert torch.allclose(result["augmented"], as_float(explorer.images[0]), atol=1e-4)
    for r in result["models"].values():
        assert torch.allclose(r["y"], r["y_o"], atol=1e-4) and r["cos_invariant"] == pytest.approx(1, abs=1e-5)
        # nothing moved: invariance is perfect, so a prediction can only tie (gain 0) or lose
        assert r["gain"] == pytest.approx(r["cos_pred"] - 1, abs=1e-5) and r["gain"] <= 1e-5
        assert r["rank_invariant"] == 1
        assert r["map"]["y"] == pytest.approx(r["map"]["y_o"], abs=1e-3)
        assert math.isnan(r["dir"])      # no actual arrow, so no direction to compare with


def test_the_invariant_predictor_has_zero_gain_for_any_augmentation(models, images):
    model = models["EquiMod"][0]
    explorer = widgets.DisplacementExplorer({"invariant": (model, lambda y_o, t: y_o, "y")}, images, AUG,
                                       gallery_size=4, reference_views=16)
    for values in ({}, {"hue": 0.4}, {"crop_scale": 0.3, "grayscale": True}):
        r = explorer.set(**values)["models"]["invariant"]
        assert r["gain"] == pytest.approx(0, abs=1e-6) and r["rank"] == r["rank_invariant"]
        assert math.isnan(r["dir"])      # y_hat = y_o: the predicted arrow has length 0


def test_a_slider_move_costs_one_forward_per_model_and_never_refits_the_map(explorer, models):
    maps = {name: m.map for name, m in explorer.models.items()}
    assert explorer.fit_count == len(models)
    explorer.controls["image"].value = 5          # a new image: its gallery is embedded once, then cached
    calls = []
    hooks = [model.backbone.register_forward_hook(lambda *args, name=name: calls.append(name))
             for name, (model, _) in models.items()]
    try:
        for value in (0.1, -0.2, 0.3):
            calls.clear()
            explorer.controls["hue"].value = value
            assert sorted(calls) == sorted(models), calls   # one backbone forward per model
        calls.clear()
        explorer.controls["image"].value = 2
        assert len(calls) > len(models)                       # image 2 not cached yet: its gallery
    finally:
        for hook in hooks:
            hook.remove()
    assert explorer.fit_count == len(models)
    assert all(explorer.models[name].map is maps[name] for name in maps)
    assert set(explorer.models["EquiMod"].cache) == {0, 2, 5}


def test_each_slider_move_records_its_latency(explorer):
    """The latency itself is measured by benchmarks/explorer_latency.py, not asserted here."""
    explorer.timings.clear()
    for value in (0.05, 0.1, 0.15):
        explorer.controls["hue"].value = value
    assert len(explorer.timings) == 3 and all(t > 0 for t in explorer.timings)


def test_the_figure_has_one_map_per_model(explorer):
    fig = explorer.figure()
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("SimCLR") for t in titles) == 1 and sum(t.startswith("EquiMod") for t in titles) == 1
    assert explorer.png[:4] == b"\x89PNG"


def test_the_readout_table_shows_each_models_numbers(explorer):
    explorer.set(hue=0.2)
    text = explorer.readout.value
    for name, r in explorer.result["models"].items():
        row = re.search(rf'<tr data-model="{re.escape(html.escape(name))}">(.*?)</tr>', text).group(1)
        assert f'class="cos-pred">{r["cos_pred"]:.3f}<' in row and f'class="gain">{r["gain"]:+.3f}<' in row
        assert f'class="cos-invariant">{r["cos_invariant"]:.3f}<' in row
        assert f'class="rank">{r["rank"]}/{r["gallery"]}<' in row and f'class="dir">{r["dir"]:+.2f}<' in row
        assert f'class="rank-invariant">{r["rank_invariant"]}/{r["gallery"]}<' in row
    assert "h+0.20" in text
    explorer.reset()     # identity: no arrow, so dir reads "–" in every row (and in every map's title)
    assert explorer.readout.value.count('class="dir">–<') == len(explorer.result["models"])
    assert all("dir –" in ax.get_title() for ax in explorer.figure().axes if "gain" in ax.get_title())


@pytest.fixture(scope="module")
def three_panels(models, images):
    """Notebook 5's panels: the same post-hoc recipe on both models (h), and EquiMod's own module (y)."""
    simclr, posthoc = models["SimCLR"]
    equimod = models["EquiMod"][0]
    equimod_posthoc = fit_posthoc_predictor(equimod, images, AUG, epochs=1, pairs=1, embed_dim=8, batch_size=8)
    return {"SimCLR + post-hoc (h)": (simclr, posthoc), "EquiMod + post-hoc (h)": (equimod, equimod_posthoc),
            "EquiMod's own module (y)": (equimod, None)}


def test_three_panels_say_which_space_each_one_is_in(three_panels, images):
    explorer = widgets.DisplacementExplorer(three_panels, images, CIFAR, gallery_size=4, reference_views=16)
    result = explorer.set(grayscale=True, hue=0.3)
    spaces = [r["space"] for r in result["models"].values()]
    assert spaces == ["h standardised, post-hoc predictor"] * 2 + ["y, the model's own module"]
    fig = explorer.figure()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().count("\n") >= 2]
    assert [t.splitlines()[0] for t in titles] == list(three_panels)
    assert [t.splitlines()[1] for t in titles] == [f"space: {s}" for s in spaces]
    words = " ".join(text.get_text() for text in fig.texts)
    assert "different spaces" in words and "outside the training range: hue +0.30 (trained ±0.10)" in words
    text = explorer.readout.value
    assert 'class="equimod-spaces"' in text and "hue +0.30 (trained ±0.10)" in text
    for name, r in result["models"].items():
        row = re.search(rf'<tr data-model="{re.escape(html.escape(name))}">(.*?)</tr>', text).group(1)
        assert f">{html.escape(r['space'])}</td>" in row
    same_space = widgets.DisplacementExplorer(dict(list(three_panels.items())[:2]), images, AUG, gallery_size=4,
                                              reference_views=16)
    assert "equimod-spaces" not in same_space.readout.value
    assert not [t for t in same_space.figure().texts if "different spaces" in t.get_text()]


def test_the_readout_escapes_model_names(explorer):
    """A model's name is shown as text, never as markup."""
    row = next(iter(explorer.result["models"].values()))
    text = explorer.readout_html({**explorer.result, "models": {'<b>"A&B"</b>': row}})
    assert '<b>"A&B"</b>' not in text and "&lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;" in text


def test_displacement_explorer_rejects_a_baseline_without_predictor(models, images):
    with pytest.raises(ValueError, match="no equivariance module"):
        widgets.DisplacementExplorer({"SimCLR": (models["SimCLR"][0], None)}, images, AUG, reference_views=8)


# ---------------------------------------------------------------- sweeps
def test_sweep_params_go_from_identity_to_the_config_maximum():
    hue = views.sweep_params(AUG, "hue", steps=9)
    assert AUG.hue == 0.5  # the synthetic preset jitters the hue over the whole colour circle
    assert hue.values[0] == pytest.approx(-0.5) and hue.values[-1] == pytest.approx(0.5)
    assert hue.fraction.tolist() == pytest.approx([-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1])
    assert not hue.params.jitter[4] and hue.params.jitter[0] and hue.params.hue[-1] == pytest.approx(0.5)
    bright = views.sweep_params(AUG, "brightness", steps=5)
    assert bright.params.brightness.tolist() == pytest.approx([0.6, 0.8, 1.0, 1.2, 1.4])
    crop = views.sweep_params(AUG, "crop", steps=5)
    area = crop.params.crop[:, 2] * crop.params.crop[:, 3]
    assert area.tolist() == pytest.approx(torch.linspace(1, 0.2, 5).tolist(), abs=1e-5)
    assert torch.allclose(crop.params.crop[:, 0] * 2 + crop.params.crop[:, 2], torch.ones(5))  # centred
    gray = views.sweep_params(AUG, "grayscale", steps=9)
    assert gray.params.grayscale.tolist() == [False, True]
    blur = views.sweep_params(AugmentationConfig.byol_cifar10(), "blur", steps=3)
    assert blur.params.blur.tolist() == [False, True, True] and blur.params.sigma[-1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="nothing to sweep"):
        views.sweep_params(AUG, "blur")
    with pytest.raises(ValueError, match="unknown augmentation"):
        views.sweep_params(AUG, "rotation")


def lines(fig, label):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == label]
    return ax.get_lines()


def test_sweep_figure_draws_actual_and_predicted_trajectories(models, images):
    model, _ = models["EquiMod"]
    fig = figures.sweep_figure(model, None, images[0], AUG, "hue", steps=5, cloud_views=8)
    assert len(lines(fig, "map")) == 2 and len(lines(fig, "cosine")) == 2
    assert sum(ax.get_label().startswith("view") for ax in fig.axes) == 5
    d = figures.sweep_data(model, None, images[0], AUG, "hue", steps=5, cloud_views=8)
    assert d["cos_invariant"][2] == pytest.approx(1, abs=1e-5) and d["y"].shape == (5, 16)
    assert d["gain"] == pytest.approx(d["cos_pred"] - d["cos_invariant"])
    simclr, posthoc = models["SimCLR"]
    fig = figures.sweep_figure(simclr, posthoc, images[1], AUG, "grayscale", cloud_views=8)
    assert len(lines(fig, "map")) == 2 and len(lines(fig, "cosine")) == 2
    assert sum(ax.get_label().startswith("view") for ax in fig.axes) == 2


def test_invariance_curves_have_one_line_per_augmentation_and_space(models, images):
    model, _ = models["EquiMod"]
    groups = ["crop", "hue", "grayscale"]
    fig = figures.invariance_curves(model, images[:3], AUG, groups=groups, steps=3)
    assert [ax.get_label() for ax in fig.axes] == ["h", "y"]
    assert all(len(ax.get_lines()) == 3 for ax in fig.axes)
    d = equivariance.invariance_distances(model, images[:3], AUG, groups=groups, steps=3)
    assert d["distance"]["y"]["hue"][1] == pytest.approx(0, abs=1e-5)        # the middle of the hue sweep
    assert d["distance"]["h"]["crop"][0] == pytest.approx(0, abs=1e-5)       # crop scale 1
    assert d["distance"]["y"]["grayscale"][1] > 1e-4
    baseline = models["SimCLR"][0]
    fig = figures.invariance_curves(baseline, images[:3], AUG, steps=3)
    assert [ax.get_label() for ax in fig.axes] == ["h", "z"]
    assert all(len(ax.get_lines()) == len(views.one_at_a_time_groups(AUG)) for ax in fig.axes)
    with pytest.raises(ValueError, match="at least 2 images"):
        equivariance.invariance_distances(model, images[:1], AUG)


# ---------------------------------------------------------------- live curves, Colab
def test_live_curves_record_every_log_line():
    curves = widgets.LiveCurves()
    curves(None, {"loss": 3.0, "inv": 2.0, "equi": 1.0, "gain": 0.1, "step": 10})
    curves(None, {"loss": 2.5, "inv": 1.8, "equi": 0.7, "gain": 0.2, "step": 20})
    curves(None, {"loss": 2.0, "inv": 2.0, "step": 30})                    # a baseline: no equi, no gain
    curves(None, {"step": 30, "stop_reason": "finished"})                   # on_train_end adds no point
    assert curves.steps == [10, 20, 30] and curves.history["loss"] == [3.0, 2.5, 2.0]
    assert curves.history["gain"][:2] == [0.1, 0.2] and math.isnan(curves.history["gain"][2])
    assert curves.redraws == 0                                             # headless: records only
    fig = curves.figure()
    assert [ax.get_label() for ax in fig.axes] == ["loss", "inv", "equi", "gain"]


def test_live_curves_draw_the_chance_lines_the_trainer_logs():
    curves = widgets.LiveCurves()
    curves(None, {"loss": 4.0, "inv": 4.0, "inv_top1": 0.2, "inv_chance": math.log(127), "step": 1})
    assert curves.chance["inv"] == pytest.approx(math.log(127)) and curves.chance["inv_top1"] == pytest.approx(1 / 127)
    panels = {ax.get_label(): ax for ax in curves.figure().axes}
    assert set(panels) == {"loss", "inv", "inv_top1"}
    chance_line = [line for line in panels["inv"].get_lines() if line.get_label() == "chance"]
    assert chance_line and chance_line[0].get_ydata()[0] == pytest.approx(math.log(127))
    assert not [line for line in panels["loss"].get_lines() if line.get_label() == "chance"]


def test_live_curves_as_a_trainer_callback(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (16, 3, 16, 16), generator=g, dtype=torch.uint8),
                        {"label": torch.arange(16) % 2}, {"label": ["a", "b"]}, "label")
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", augment_overrides={"size": 16}, backbone="convnet",
                      proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, batch_size=8, epochs=1, warmup_epochs=0,
                      lr=0.1, device="cpu", log_every=1, checkpoint_every=100, max_steps=2,
                      out_dir=str(tmp_path / "run"), progress=False)
    curves = widgets.LiveCurves()
    trainer = Trainer(cfg, callbacks={"on_log": [curves], "on_train_end": [curves]}, dataset=data)
    trainer.run()
    assert curves.steps == [1.0, 2.0]
    assert all(len(curves.history[k]) == 2 and all(map(math.isfinite, curves.history[k]))
               for k in ("loss", "inv", "equi", "gain", "inv_top1", "equi_top1"))
    assert set(curves.chance) == {"inv", "equi", "inv_top1", "equi_top1"}


def test_enable_colab_widgets_only_acts_in_colab(monkeypatch):
    assert notebook.enable_colab_widgets() is False
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert notebook.enable_colab_widgets() is True and calls == [1]
