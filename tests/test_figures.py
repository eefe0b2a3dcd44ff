"""figures.py, headless (matplotlib's Agg backend).

Sweeps and invariance curves of tiny untrained models (the images and models fixtures are in conftest.py).
"""

import matplotlib
import pytest

matplotlib.use("Agg")

from equimod_edu import equivariance, figures, recipes  # noqa: E402
from equimod_edu.augment import AugmentationConfig  # noqa: E402

AUG = AugmentationConfig.synthetic()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def lines(fig, label):
    (ax,) = [ax for ax in fig.axes if ax.get_label() == label]
    return ax.get_lines()


def test_sweep_figure_draws_actual_and_predicted_trajectories(models, images):
    model = models["EquiMod"].model
    fig = figures.sweep_figure(model, None, images[0], AUG, "hue", steps=5, cloud_views=8)
    assert len(lines(fig, "map")) == 2 and len(lines(fig, "cosine")) == 2
    assert sum(ax.get_label().startswith("view") for ax in fig.axes) == 5
    d = figures.sweep_data(model, None, images[0], AUG, "hue", steps=5, cloud_views=8)
    assert d["cos_invariant"][2] == pytest.approx(1, abs=1e-5) and d["y"].shape == (5, 16)
    assert d["gain"] == pytest.approx(d["cos_pred"] - d["cos_invariant"])
    simclr, posthoc = models["SimCLR"].model, models["SimCLR"].predictor
    fig = figures.sweep_figure(simclr, posthoc, images[1], AUG, "grayscale", cloud_views=8)
    assert len(lines(fig, "map")) == 2 and len(lines(fig, "cosine")) == 2
    assert sum(ax.get_label().startswith("view") for ax in fig.axes) == 2


def test_invariance_curves_have_one_line_per_augmentation_and_space(models, images):
    model = models["EquiMod"].model
    groups = ["crop", "hue", "grayscale"]
    fig = figures.invariance_curves(model, images[:3], AUG, groups=groups, steps=3)
    assert [ax.get_label() for ax in fig.axes] == ["h", "y"]
    assert all(len(ax.get_lines()) == 3 for ax in fig.axes)
    d = equivariance.invariance_distances(model, images[:3], AUG, groups=groups, steps=3)
    assert d["distance"]["y"]["hue"][1] == pytest.approx(0, abs=1e-5)        # the middle of the hue sweep
    assert d["distance"]["h"]["crop"][0] == pytest.approx(0, abs=1e-5)       # crop scale 1
    assert d["distance"]["y"]["grayscale"][1] > 1e-4
    baseline = models["SimCLR"].model
    fig = figures.invariance_curves(baseline, images[:3], AUG, steps=3)
    assert [ax.get_label() for ax in fig.axes] == ["h", "z"]
    assert all(len(ax.get_lines()) == len(recipes.one_at_a_time_groups(AUG)) for ax in fig.axes)
    with pytest.raises(ValueError, match="at least 2 images"):
        equivariance.invariance_distances(model, images[:1], AUG)


def test_frontier_draws_one_labelled_point_per_method_and_the_two_ends_of_invariance():
    def row(shape, colour):
        return {"shape_acc": {"mean": shape, "std": 0.02, "n": 3}, "colour_acc": {"mean": colour, "std": 0.01, "n": 3}}

    summary = {"simclr": row(0.62, 0.53), "simclr-no-colour": row(0.47, 1.0), "augself": row(0.85, 0.49),
               "equimod": row(0.83, 0.58), "supervised": {"shape_acc": None, "colour_acc": None}}
    fig = figures.frontier(summary)
    (ax,) = fig.axes
    labels = [text.get_text() for text in ax.texts]
    assert labels == ["simclr", "simclr-no-colour", "augself", "equimod"]   # no point without its metrics
    (ends,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert list(ends.get_xdata()) == [0.62, 0.47] and list(ends.get_ydata()) == [0.53, 1.0]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("what invariance throws away" in t for t in legend) and any(t.startswith("target") for t in legend)
    def shaded(ax):
        return [c for c in ax.collections if c.get_label().startswith("target")]

    (target,) = shaded(ax)          # the target: half the lost colour kept, shape within 0.02 of SimCLR's
    assert target.get_paths()[0].vertices[:, 1].min() == pytest.approx(0.53 + 0.5 * 0.47)
    assert target.get_paths()[0].vertices[:, 0].min() == pytest.approx(0.60)
    assert shaded(figures.frontier(summary, target=None).axes[0]) == []
