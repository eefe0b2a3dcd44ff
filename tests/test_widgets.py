"""widgets.py, headless: controls set from code change the parameters, the view and the numbers; LiveCurves.

Tiny untrained models (ConvNet, 32 x 32 synthetic images; the images and models fixtures are in conftest.py)
in eval mode; matplotlib's Agg backend.
"""

import html
import math
import re
import time

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from equimod_edu import recipes, widgets  # noqa: E402
from equimod_edu.augment import AugmentationConfig, AugmentationParams, apply  # noqa: E402
from equimod_edu.equivariance import Panel, fit_posthoc_predictor  # noqa: E402
from equimod_edu.recipes import sample_views  # noqa: E402

AUG = AugmentationConfig.synthetic()
CIFAR = AugmentationConfig.cifar10()   # hue +-0.1: a hue slider (+-0.5) can leave the training range


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture
def explorer(models, images):
    return widgets.DisplacementExplorer(models, images, AUG, gallery_size=6, reference_views=32)


def as_float(image):
    return image.float() / 255


# ---------------------------------------------------------------- controls and their training ranges
def test_controls_follow_the_config():
    controls = widgets.augmentation_controls(AUG, n_images=5)
    assert controls["image"].max == 4 and "sigma" not in controls and "solarize" not in controls
    assert controls["crop_scale"].min == pytest.approx(AUG.crop_scale[0]) and controls["crop_scale"].value == 1
    assert (controls["brightness"].min, controls["brightness"].max) == pytest.approx((0.6, 1.4))
    assert (controls["hue"].min, controls["hue"].max) == (-0.5, 0.5) and len(controls["order"].options) == 24
    byol = widgets.augmentation_controls(AugmentationConfig.byol_cifar10())
    assert byol["sigma"].max == pytest.approx(2.0) and byol["sigma"].value == 0 and byol["solarize"].value is False


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
    assert "h+0.30" in text and recipes.describe_params(explorer.params()).replace(",", "") in text.replace(",", "")
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


def test_set_refuses_an_order_that_is_not_a_jitter_order_in_one_line(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    for bad in (5, "3012", (0, 1, 2), (0, 1, 2, 3.5), None):
        with pytest.raises(ValueError, match=r"^order must be one of the 24 orders of \(0, 1, 2, 3\), a tuple such as"):
            explorer.set(order=bad)
    assert explorer.set(order=np.array([3, 0, 1, 2]), hue=0.2)["params"].order[0].tolist() == [3, 0, 1, 2]
    assert explorer.controls["order"].value == (3, 0, 1, 2) and type(explorer.controls["order"].value[0]) is int


def test_set_checks_every_value_before_moving_any_control_and_takes_numpy_scalars(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    before, n = explorer.values(), len(explorer.timings)
    for bad in (dict(hue=0.3, flip="yes"), dict(hue=0.3, brightness=np.float32("nan")), dict(hue=0.3, image=99)):
        with pytest.raises(ValueError):
            explorer.set(**bad)
        assert explorer.values() == before and len(explorer.timings) == n   # nothing moved, nothing drawn
    result = explorer.set(hue=np.float32(0.25), flip=np.bool_(True), brightness=np.float64(1.2), image=np.int64(3))
    assert result["params"].hue[0] == pytest.approx(0.25) and result["params"].flip[0]
    assert result["params"].brightness[0] == pytest.approx(1.2) and explorer.image_index == 3
    assert torch.equal(result["original"], images[3]) and explorer.controls["flip"].value is True
    assert explorer.values() == {**explorer.values(), "hue": 0.25, "flip": True, "image": 3}


def test_a_value_a_control_refuses_after_the_check_moves_no_control(images, monkeypatch):
    """All or nothing even past the check: a control that refuses its value puts back the ones already moved."""
    explorer = widgets.AugmentationExplorer(images, AUG)
    before, png = explorer.values(), explorer.png
    monkeypatch.setattr(widgets, "check_control_value", lambda control, name, value: value)  # no check, no conversion
    with pytest.raises(Exception, match="boolean"):          # traitlets' TraitError: a Checkbox takes no numpy bool
        explorer.set(hue=0.3, flip=np.bool_(True))
    assert explorer.values() == before and explorer.png == png


def test_the_image_index_must_be_a_whole_number_within_the_images(images):
    explorer = widgets.AugmentationExplorer(images, AUG)
    for bad in (2.7, 2.0, True, "2", np.float32(1)):
        with pytest.raises(ValueError, match=r"^image is an index: pass an integer from 0 to 7"):
            explorer.set(image=bad)
    for bad in (8, -1, np.int64(50)):
        with pytest.raises(ValueError, match=r"^image must be an index from 0 to 7 \(8 images\), got"):
            explorer.set(image=bad)
    assert explorer.image_index == 0
    with pytest.raises(ValueError, match=r"^image must be an index from 0 to 7 \(8 images\), got 50$"):
        widgets.AugmentationExplorer(images, AUG, image=50)
    assert widgets.AugmentationExplorer(images, AUG, image=np.int64(7)).image_index == 7


def test_an_explorer_refuses_no_images_at_construction(models, images):
    with pytest.raises(ValueError, match=r"^images holds no image: give at least one"):
        widgets.AugmentationExplorer(images[:0], AUG)
    with pytest.raises(ValueError, match=r"^images holds no image"):
        widgets.DisplacementExplorer(models, images[:0], AUG, reference_views=8)
    with pytest.raises(ValueError, match=r"^reference_images holds no image"):
        widgets.DisplacementExplorer(models, images, AUG, reference_images=images[:0], reference_views=8)
    with pytest.raises(ValueError, match=r"^image must be an index from 0 to 7"):   # refused before any fitting
        widgets.DisplacementExplorer(models, images, AUG, image=50, reference_views=8)


# ---------------------------------------------------------------- the displacement explorer
def direct(panel, x_o, x, t):
    """y_o, y, y_hat computed straight from the panel's model (and its post-hoc predictor)."""
    model, predictor = panel.model, panel.predictor
    with torch.no_grad():
        if predictor is None:
            y_o, y = model.embed(x_o).y, model.embed(x).y
            return y_o, y, model.predict(y_o, t)
        y_o, y = predictor.embed(model, x_o), predictor.embed(model, x)
        return y_o, y, predictor(y_o, t)


def test_displacement_numbers_match_a_direct_computation(explorer, models, images):
    result = explorer.set(image=2, hue=0.25, crop_scale=0.5, crop_left=0.3, flip=True)
    params = explorer.params()
    x_o, x, t = AUG.original(images[2:3]), apply(images[2:3], params, AUG), AUG.encode(params)
    assert torch.allclose(result["encoded"], t[0])
    for name, panel in models.items():
        r = result["models"][name]
        y_o, y, y_hat = direct(panel, x_o, x, t)
        assert torch.allclose(r["y"], y[0], atol=1e-5) and torch.allclose(r["y_hat"], y_hat[0], atol=1e-5)
        cos_pred, cos_inv = float(F.cosine_similarity(y, y_hat)), float(F.cosine_similarity(y, y_o))
        assert r["cos_pred"] == pytest.approx(cos_pred, abs=1e-5)
        assert r["cos_invariant"] == pytest.approx(cos_inv, abs=1e-5)
        assert r["gain"] == pytest.approx(cos_pred - cos_inv, abs=1e-5)
        # dir: the cosine between the two arrows, actual y - y_o and predicted y_hat - y_o, in the full space
        assert r["dir"] == pytest.approx(float(F.cosine_similarity(y - y_o, y_hat - y_o)), abs=1e-5)
        # the gallery: the true view and 6 other views of image 2, drawn with seed + 1 + image
        gallery_params = sample_views(AUG, 1, 6, (32, 32), torch.Generator().manual_seed(0 + 1 + 2))
        _, others, _ = direct(panel, x_o, apply(images[2:3].expand(6, -1, -1, -1), gallery_params, AUG), t)
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
    model = models["EquiMod"].model
    explorer = widgets.DisplacementExplorer({"invariant": Panel(model, lambda y_o, t: y_o, "y")}, images, AUG,
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
             for name, model in ((name, panel.model) for name, panel in models.items())]
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


def test_each_slider_move_records_its_latency_once_in_seconds(explorer):
    """One time per move, in seconds: together within the wall time of the moves.

    Not milliseconds, not counted twice. How fast a move is gets measured by benchmarks/explorer_latency.py, not
    asserted here.
    """
    explorer.timings.clear()
    tic = time.perf_counter()
    for value in (0.05, 0.1, 0.15):
        explorer.controls["hue"].value = value
    elapsed = time.perf_counter() - tic
    assert len(explorer.timings) == 3 and all(t > 0 for t in explorer.timings)
    assert sum(explorer.timings) <= elapsed


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
    simclr, posthoc = models["SimCLR"].model, models["SimCLR"].predictor
    equimod = models["EquiMod"].model
    equimod_posthoc = fit_posthoc_predictor(equimod, images, AUG, epochs=1, pairs=1, embed_dim=8, batch_size=8)
    return {"SimCLR + post-hoc (h)": Panel(simclr, posthoc), "EquiMod + post-hoc (h)": Panel(equimod, equimod_posthoc),
            "EquiMod's own module (y)": Panel(equimod)}


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
        widgets.DisplacementExplorer({"SimCLR": Panel(models["SimCLR"].model)}, images, AUG, reference_views=8)
    with pytest.raises(TypeError, match="give Panel"):
        widgets.DisplacementExplorer({"SimCLR": (models["EquiMod"].model, None)}, images, AUG, reference_views=8)
