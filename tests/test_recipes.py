"""recipes.py: control values -> parameters, and the recipes built on them.

What training drew (ranges and warnings), one augmentation at a time, sweeps, and the fixed recipes (the centre
crop, the linear evaluation's augmentation).
"""

import math

import pytest
import torch
from helpers import gen, random_images
from torchvision.transforms.v2 import functional as TF

from equimod_edu import recipes, widgets
from equimod_edu.augment import AugmentationConfig, AugmentationParams, apply

AUG = AugmentationConfig.synthetic()
CIFAR = AugmentationConfig.cifar10()   # hue +-0.1: a hue slider (+-0.5) can leave the training range
SIZE = (16, 16)                        # the image size the draws are made for


# ---------------------------------------------------------------- controls -> parameters
def test_slider_crop_box_keeps_area_and_ratio_and_fits_inside():
    top, left, h, w = recipes.slider_crop_box(0.36, 1.0, 0.0, 0.0)
    assert (top, left) == (0.0, 0.0) and h == pytest.approx(0.6) and w == pytest.approx(0.6)
    top, left, h, w = recipes.slider_crop_box(0.5, 4 / 3, 1.0, 1.0)  # top/left past the edge: moved back
    assert h * w == pytest.approx(0.5) and w / h == pytest.approx(4 / 3)
    assert top == pytest.approx(1 - h) and left == pytest.approx(1 - w)
    top, left, h, w = recipes.slider_crop_box(1.0, 4 / 3)  # too wide: the width is cut to the image
    assert w == 1.0 and h == pytest.approx(math.sqrt(3 / 4)) and (top, left) == (0.0, 0.0)
    _, _, h, w = recipes.slider_crop_box(0.5, 1.0, image_aspect=2.0)  # a 2:1 image: square in pixels
    assert h * w == pytest.approx(0.5) and (w * 2) / h == pytest.approx(1.0)
    with pytest.raises(ValueError):
        recipes.slider_crop_box(0.0)


def test_identity_controls_give_identity_params():
    params = recipes.params_from_values({}, AUG)
    identity = AugmentationParams.identity(1)
    for name in ("crop", "flip", "jitter", "order", "brightness", "hue", "grayscale", "blur", "solarize"):
        assert torch.equal(getattr(params, name), getattr(identity, name)), name
    with pytest.raises(ValueError, match="unknown controls"):
        recipes.params_from_values({"rotation": 3}, AUG)


def test_jitter_turns_on_only_when_a_factor_moves_and_then_takes_the_order():
    p = recipes.params_from_values({"order": (3, 2, 1, 0)}, AUG)
    assert not p.jitter[0] and p.order[0].tolist() == [0, 1, 2, 3]
    p = recipes.params_from_values({"order": (3, 2, 1, 0), "contrast": 1.2}, AUG)
    assert p.jitter[0] and p.order[0].tolist() == [3, 2, 1, 0] and p.contrast[0] == pytest.approx(1.2)
    aug = AugmentationConfig.byol_cifar10()
    p = recipes.params_from_values({"sigma": 1.5, "solarize": True}, aug)
    assert p.blur[0] and p.sigma[0] == pytest.approx(1.5) and p.solarize[0]
    p = recipes.params_from_values({"sigma": 1.5, "solarize": True}, AUG)  # this config neither blurs nor solarizes
    assert not p.blur[0] and not p.solarize[0]


# ---------------------------------------------------------------- what training drew: ranges and warnings
def test_training_range_is_what_the_config_samples():
    tr = recipes.training_range
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
    assert tr(CIFAR, "flip").contains(True)
    assert not tr(plain, "flip").contains(True) and tr(plain, "flip").contains(False)
    assert tr(byol, "sigma").contains(0.0) and not tr(byol, "sigma").contains(0.05)   # off (identity) or 0.1-2
    for name in ("image", "order", "rotation"):
        with pytest.raises(ValueError, match="no training range"):
            tr(CIFAR, name)


def test_outside_training_range_lists_the_values_training_never_drew():
    outside = recipes.outside_training_range
    assert outside({"hue": 0.19}, CIFAR) == ["hue +0.19 (trained ±0.10)"]
    assert outside({"hue": -0.3, "brightness": 1.2, "image": 3, "order": (3, 2, 1, 0)}, CIFAR) == \
        ["hue -0.30 (trained ±0.10)"]
    assert outside({"hue": 0.19, "flip": True}, AUG) == []            # the synthetic config draws the whole circle
    assert outside({"flip": True, "contrast": 1.3}, CIFAR.replace(flip_p=0.0, contrast=0.2)) == \
        ["flip on (trained off only)", "contrast 1.30 (trained 0.80–1.20)"]
    assert outside({name: w.value for name, w in widgets.augmentation_controls(CIFAR).items()}, CIFAR) == []


# ---------------------------------------------------------------- one augmentation at a time, sweeps
def test_one_augmentation_at_a_time_leaves_the_rest_at_identity():
    hue = recipes.sample_one_augmentation(AUG, "hue", 64, SIZE, gen(13))
    assert hue.jitter.all() and (hue.hue != 0).all() and (hue.brightness == 1).all()
    assert (hue.crop == torch.tensor([0.0, 0.0, 1.0, 1.0])).all() and not hue.flip.any() and not hue.grayscale.any()
    assert (hue.order == torch.arange(4)).all()
    flip = recipes.sample_one_augmentation(AUG, "flip", 64, SIZE, gen(13))
    assert 0 < flip.flip.sum() < 64 and not flip.jitter.any()
    assert recipes.one_at_a_time_groups(AUG.replace(gray_p=0.0, hue=0.0)) == ["crop", "flip", "brightness", "contrast",
                                                                          "saturation"]


def test_sweep_params_go_from_identity_to_the_config_maximum():
    hue = recipes.sweep_params(AUG, "hue", steps=9)
    assert AUG.hue == 0.5  # the synthetic preset jitters the hue over the whole colour circle
    assert hue.values[0] == pytest.approx(-0.5) and hue.values[-1] == pytest.approx(0.5)
    assert hue.fraction.tolist() == pytest.approx([-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1])
    assert not hue.params.jitter[4] and hue.params.jitter[0] and hue.params.hue[-1] == pytest.approx(0.5)
    bright = recipes.sweep_params(AUG, "brightness", steps=5)
    assert bright.params.brightness.tolist() == pytest.approx([0.6, 0.8, 1.0, 1.2, 1.4])
    crop = recipes.sweep_params(AUG, "crop", steps=5)
    area = crop.params.crop[:, 2] * crop.params.crop[:, 3]
    assert area.tolist() == pytest.approx(torch.linspace(1, 0.2, 5).tolist(), abs=1e-5)
    assert torch.allclose(crop.params.crop[:, 0] * 2 + crop.params.crop[:, 2], torch.ones(5))  # centred
    gray = recipes.sweep_params(AUG, "grayscale", steps=9)
    assert gray.params.grayscale.tolist() == [False, True]
    blur = recipes.sweep_params(AugmentationConfig.byol_cifar10(), "blur", steps=3)
    assert blur.params.blur.tolist() == [False, True, True] and blur.params.sigma[-1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="nothing to sweep"):
        recipes.sweep_params(AUG, "blur")
    with pytest.raises(ValueError, match="unknown augmentation"):
        recipes.sweep_params(AUG, "rotation")


# ---------------------------------------------------------------- fixed recipes
def test_centre_crop_box_is_resize_36_then_centre_crop_32():
    x = random_images(4, size=32).float() / 255
    bilinear = AugmentationConfig.cifar10(interpolation="bilinear")
    ours = apply(x, recipes.centre_crop_params(4, 32 / 36), bilinear, normalize=False)
    theirs = TF.center_crop(TF.resize(x, [36, 36], antialias=False), [32, 32])
    assert (ours - theirs).abs().max() < 1e-5


def test_linear_eval_augmentation_is_crop_and_flip_only():
    lin = recipes.linear_eval_augmentation(AugmentationConfig.byol_cifar10())
    assert lin.crop_scale == (0.08, 1.0) and lin.flip_p == 0.5
    assert lin.jitter_p == lin.gray_p == 0 and not lin.has_blur and not lin.has_solarize
