"""synthetic.py: the drawn images and their label columns.

Balance, determinism, the spec's checks, and that each label is what the image shows. Fast (small n); the
cached splits (data.synthetic) are tested in test_data.py.
"""

import colorsys
import math

import pytest
import torch

from equimod_edu import synthetic as synthetic_module
from equimod_edu.synthetic import COLOUR_NAMES, SHAPE_NAMES, SyntheticSpec, make_synthetic

FLOAT_COLUMNS = ("x", "y", "scale", "rotation", "hue", "saturation", "value")


@pytest.fixture(scope="module")
def small():
    return make_synthetic(240, seed=0)


# ------------------------------------------------------------------------------------------
# labels, balance, determinism
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


@pytest.mark.parametrize("kw, match", [
    (dict(n_shapes=0), "n_shapes"), (dict(n_shapes=9), "n_shapes"), (dict(n_hues=0), "n_hues"),
    (dict(hue_jitter=15.0), "hue_jitter"), (dict(scale=(0.3, 0.2)), "scale"),
])
def test_synthetic_spec_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSpec(**kw)


# ------------------------------------------------------------------------------------------
# the labels are what the image shows
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
