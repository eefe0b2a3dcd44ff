"""The augmentation engine: distributions, torchvision equivalence of the pipeline, determinism, encoding, errors."""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from equimod_edu import augment
from equimod_edu.augment import AugmentationConfig, AugmentationParams, apply

N = 48
COLOUR_TOL = 1 / 255  # mean absolute error allowed for the colour ops (they agree far closer)


def images_uint8(n=N, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def images_float(n=N, size=32, seed=0):
    return images_uint8(n, size, seed).float() / 255


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- parameter distributions
def test_probabilities_match_the_config():
    cfg = AugmentationConfig.cifar10()
    p = cfg.sample(20000, generator=gen())
    assert abs(p.flip.float().mean() - 0.5) < 0.02
    assert abs(p.jitter.float().mean() - 0.8) < 0.02
    assert abs(p.grayscale.float().mean() - 0.2) < 0.02
    assert not p.blur.any() and not p.solarize.any()


def test_crop_boxes_respect_scale_ratio_and_image():
    cfg = AugmentationConfig.cifar10()
    p = cfg.sample(20000, image_size=(32, 32), generator=gen())
    top, left, h, w = p.crop.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 1 + 1e-6).all() and (left + w <= 1 + 1e-6).all()
    # whole pixels, as torchvision's get_params
    assert torch.allclose(p.crop * 32, (p.crop * 32).round(), atol=1e-4)
    area = h * w
    # rounding to whole pixels moves the area a little beyond the drawn scale
    assert area.min() > 0.2 * 0.75 and area.max() <= 1.0 + 1e-6
    # the same distribution as torchvision's sampler (rejection makes large boxes rarer)
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    boxes = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.2, 1.0], [3 / 4, 4 / 3])
                          for _ in range(4000)], dtype=torch.float32) / 32
    assert abs(area.mean() - (boxes[:, 2] * boxes[:, 3]).mean()) < 0.015
    assert abs(h.mean() - boxes[:, 2].mean()) < 0.015 and abs(top.mean() - boxes[:, 0].mean()) < 0.015
    ratio = w / h
    assert ratio.min() > 0.75 * 0.8 and ratio.max() < (4 / 3) * 1.25


def test_jitter_factors_in_range_and_identity_when_off():
    cfg = AugmentationConfig.cifar10()
    p = cfg.sample(5000, generator=gen())
    on = p.jitter
    for name in ("brightness", "contrast", "saturation"):
        v = getattr(p, name)
        assert v[on].min() >= 0.6 and v[on].max() <= 1.4
        assert (v[~on] == 1).all()
    assert p.hue[on].abs().max() <= 0.1 and (p.hue[~on] == 0).all()
    assert (p.order[~on] == torch.arange(4)).all()


def test_jitter_order_is_a_permutation_that_varies_per_image():
    p = AugmentationConfig.cifar10(jitter_p=1.0).sample(512, generator=gen())
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()
    distinct = {tuple(row) for row in p.order.tolist()}
    assert len(distinct) == 24  # all 4! orders appear within one batch
    first_op = torch.bincount(p.order[:, 0], minlength=4).float() / 512
    assert (first_op - 0.25).abs().max() < 0.07


def test_byol_views_are_asymmetric():
    cfg = AugmentationConfig.byol_cifar10()
    p0 = cfg.sample(10000, generator=gen(), view=0)
    p1 = cfg.sample(10000, generator=gen(), view=1)
    assert p0.blur.float().mean() == 1.0 and abs(p1.blur.float().mean() - 0.1) < 0.02
    assert p0.solarize.float().mean() == 0.0 and abs(p1.solarize.float().mean() - 0.2) < 0.02
    assert p0.sigma.min() >= 0.1 and p0.sigma.max() <= 2.0


# ---------------------------------------------------------------- torchvision equivalence
def test_identity_params_return_the_image_exactly():
    x = images_uint8()
    out = apply(x, AugmentationParams.identity(N), AugmentationConfig.cifar10(), normalize=False)
    assert (out - x.float() / 255).abs().max() < 1e-6


def _torchvision_pipeline(image, p, cfg):
    """One image through torchvision's functional ops with the given parameters (reference)."""
    top, left, h, w = (p.crop[0] * image.shape[-1]).round().int().tolist()
    interp = TF.InterpolationMode.BICUBIC if cfg.interpolation == "bicubic" else TF.InterpolationMode.BILINEAR
    x = TF.resized_crop(image, top, left, h, w, [cfg.size, cfg.size], interpolation=interp, antialias=False)
    x = x.clamp(0, 1)
    if p.flip[0]:
        x = TF.hflip(x)
    if p.jitter[0]:
        ops = [lambda im: TF.adjust_brightness(im, float(p.brightness[0])),
               lambda im: TF.adjust_contrast(im, float(p.contrast[0])),
               lambda im: TF.adjust_saturation(im, float(p.saturation[0])),
               lambda im: TF.adjust_hue(im, float(p.hue[0]))]
        for op_index in p.order[0].tolist():
            x = ops[op_index](x)
    if p.grayscale[0]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur[0]:
        k = cfg.kernel_size
        x = TF.gaussian_blur(x, [k, k], [float(p.sigma[0])] * 2)
    if p.solarize[0]:
        x = TF.solarize(x, cfg.solarize_threshold)
    return x


@pytest.mark.parametrize("preset", ["cifar10", "byol_cifar10"])
def test_full_pipeline_matches_torchvision(preset):
    cfg = AugmentationConfig.preset(preset, jitter_p=1.0)
    x = images_float(32)
    for view in (0, 1):
        p = cfg.sample(32, generator=gen(4 + view), view=view)
        # with the whole image as the crop, every difference would come from the colour ops
        full = p.clone()
        full.crop[:] = torch.tensor([0.0, 0.0, 1.0, 1.0])
        for params, tol in ((full, COLOUR_TOL), (p, 0.02)):
            got = apply(x, params, cfg, normalize=False)
            want = torch.stack([_torchvision_pipeline(x[i], params[i], cfg) for i in range(32)])
            assert (got - want).abs().mean() < tol
        got = apply(x, full, cfg, normalize=False)
        want = torch.stack([_torchvision_pipeline(x[i], full[i], cfg) for i in range(32)])
        assert (got - want).abs().max() < 1e-4


def test_uint8_and_float_inputs_agree_and_normalisation():
    cfg = AugmentationConfig.cifar10()
    p = cfg.sample(N, generator=gen(6))
    a = apply(images_uint8(), p, cfg)
    b = apply(images_float(), p, cfg)
    assert a.dtype == torch.float32 and a.shape == (N, 3, 32, 32)
    assert torch.allclose(a, b, atol=1e-5)
    raw = apply(images_uint8(), p, cfg, normalize=False)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    assert torch.allclose(a, (raw - mean) / std, atol=1e-5)
    assert raw.min() >= 0 and raw.max() <= 1


def test_output_size_and_original_view():
    cfg = AugmentationConfig.cifar10(size=24)
    x = images_uint8(8, size=40)
    views = cfg.views(x, generator=gen(7))
    assert views.x_o.shape == views.x_1.shape == views.x_2.shape == (8, 3, 24, 24)
    assert len(views.params_1) == len(views.params_2) == 8


# ---------------------------------------------------------------- determinism
def test_same_seed_same_parameters_and_pixels():
    cfg = AugmentationConfig.byol_cifar10()
    x = images_uint8()
    a = cfg.views(x, generator=gen(11))
    b = cfg.views(x, generator=gen(11))
    c = cfg.views(x, generator=gen(12))
    assert torch.equal(a.x_1, b.x_1) and torch.equal(a.x_2, b.x_2)
    assert torch.equal(cfg.encode(a.params_1), cfg.encode(b.params_1))
    assert not torch.equal(a.x_1, c.x_1)
    assert torch.equal(apply(x, a.params_1, cfg), a.x_1)  # replaying the params replays the pixels


# ---------------------------------------------------------------- encoding
@pytest.mark.parametrize("preset,kw,dim", [
    ("cifar10", {}, 15), ("cifar10", {"hue_encoding": "cyclic"}, 16),
    ("imagenet", {}, 17), ("byol_cifar10", {}, 18), ("byol_imagenet", {"hue_encoding": "cyclic"}, 19),
])
def test_encoded_layout_and_length(preset, kw, dim):
    cfg = AugmentationConfig.preset(preset, **kw)
    assert cfg.encoded_dim == dim
    t = cfg.encode(cfg.sample(10, generator=gen()))
    assert t.shape == (10, dim) and t.dtype == torch.float32
    groups = cfg.encoded_groups()
    assert list(groups)[:3] == ["crop", "flip", "jitter"]
    assert sum(s.stop - s.start for s in groups.values()) == dim


def test_raw_vector_follows_the_official_order():
    cfg = AugmentationConfig.cifar10()
    p = AugmentationParams.identity(1)
    p.crop[0] = torch.tensor([0.25, 0.125, 0.5, 0.75])
    p.flip[0], p.jitter[0], p.grayscale[0] = True, True, True
    p.order[0] = torch.tensor([3, 1, 0, 2])
    p.brightness[0], p.contrast[0], p.saturation[0], p.hue[0] = 1.1, 0.9, 1.2, -0.05
    raw = augment.raw_vector(p, cfg)[0]
    want = [0.25, 0.125, 0.5, 0.75, 1, 1, 3, 1, 0, 2, 1.1, 0.9, 1.2, -0.05, 1]
    assert torch.allclose(raw, torch.tensor(want))


@pytest.mark.parametrize("preset", ["cifar10", "byol_imagenet"])
def test_encoding_is_standardised_over_fresh_draws(preset):
    cfg = AugmentationConfig.preset(preset)
    t = torch.cat([cfg.encode(cfg.sample(20000, generator=gen(99), view=v)) for v in (0, 1)])
    assert t.mean(0).abs().max() < 0.05
    varying = t.std(0) > 0  # a column that never varies in this preset (none here) would stay 0
    assert varying.all()
    assert (t.std(0) - 1).abs().max() < 0.05


def test_cyclic_hue_treats_half_turns_as_the_same_hue():
    cfg = AugmentationConfig.cifar10(hue=0.5, hue_encoding="cyclic")
    p = AugmentationParams.identity(2)
    p.hue[:] = torch.tensor([0.5, -0.5])
    t = cfg.encode(p)
    assert torch.allclose(t[0], t[1], atol=1e-5)
    raw = AugmentationConfig.cifar10(hue=0.5).encode(p)
    assert not torch.allclose(raw[0], raw[1])


def test_param_mask_marks_the_columns_of_the_named_groups():
    cfg = AugmentationConfig.cifar10()
    mask = cfg.param_mask(["crop", "hue"])
    groups = cfg.encoded_groups()
    assert len(mask) == cfg.encoded_dim
    assert [i for i, on in enumerate(mask) if on] == [*range(15)[groups["crop"]], *range(15)[groups["hue"]]]
    with pytest.raises(ValueError, match="unknown parameter groups"):
        cfg.param_mask(["blur"])


def test_column_names_follow_the_layout():
    cfg = AugmentationConfig.cifar10()
    names = cfg.column_names()
    assert len(names) == cfg.encoded_dim and names[:5] == ["top", "left", "height", "width", "flip"]
    cyclic = AugmentationConfig.imagenet(hue_encoding="cyclic").column_names()
    assert "hue cos" in cyclic and "sigma" in cyclic and len(cyclic) == 18


def test_where_picks_rows_from_either_params():
    a, b = AugmentationParams.identity(3), AugmentationConfig.cifar10().sample(3, generator=gen())
    mixed = a.where(torch.tensor([True, False, True]), b)
    assert torch.equal(mixed.crop[0], a.crop[0]) and torch.equal(mixed.crop[1], b.crop[1])
    assert torch.equal(mixed.order[2], a.order[2]) and mixed.flip[1] == b.flip[1]


def test_views_rows_keep_a_share_of_the_same_draws():
    cfg = AugmentationConfig.cifar10()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    whole = cfg.views(images, gen())
    share = cfg.views(images, gen(), rows=slice(4, 8))
    assert torch.equal(share.x_1, whole.x_1[4:]) and torch.equal(share.params_2.crop, whole.params_2.crop[4:])


# ---------------------------------------------------------------- bad input
def test_bad_images_are_rejected_with_clear_errors():
    cfg = AugmentationConfig.cifar10()
    p = cfg.sample(4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        apply(torch.zeros(3, 32, 32), p, cfg)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        apply(torch.zeros(4, 1, 32, 32), p, cfg)
    with pytest.raises(ValueError, match="dtype"):
        apply(torch.zeros(4, 3, 32, 32, dtype=torch.int32), p, cfg)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply(torch.full((4, 3, 32, 32), 2.0), p, cfg)
    with pytest.raises(ValueError, match="torch.Tensor"):
        apply([[0]], p, cfg)


def test_params_from_another_batch_or_device_are_rejected():
    cfg = AugmentationConfig.cifar10()
    with pytest.raises(ValueError, match="batch of 8 images"):
        apply(images_uint8(4), cfg.sample(8), cfg)
    with pytest.raises(ValueError, match="params are on meta"):
        apply(images_uint8(4), cfg.sample(4).to("meta"), cfg)
    with pytest.raises(ValueError, match="generator is on"):
        cfg.sample(4, generator=torch.Generator(), device="meta")


def test_a_jitter_order_that_is_not_a_permutation_is_rejected():
    cfg = AugmentationConfig.cifar10()
    p = cfg.sample(4, generator=gen(0))
    p.order[2] = torch.tensor([0, 0, 1, 1])  # brightness twice, hue never
    with pytest.raises(ValueError, match="permutation"):
        apply(images_uint8(4), p, cfg)


@pytest.mark.parametrize("field,value,match", [
    ("crop_scale", (0.0, 1.0), "crop_scale"), ("crop_scale", (0.2, 1.5), "crop_scale"),
    ("crop_scale", (0.8, 0.2), "crop_scale"), ("crop_ratio", (-1, 2), "crop_ratio"),
    ("flip_p", 1.5, "flip_p"), ("blur_p", (0.5, 2.0), "blur_p"), ("hue", 0.7, "hue"),
    ("brightness", -0.1, "brightness"), ("size", 0, "size"), ("blur_kernel", 4, "blur_kernel"),
    ("interpolation", "lanczos", "interpolation"), ("hue_encoding", "angle", "hue_encoding"),
    ("std", (0.2, 0.2, 0.0), "std"),
])
def test_bad_config_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        AugmentationConfig.cifar10(**{field: value})
    with pytest.raises(ValueError, match=match):
        AugmentationConfig.cifar10().replace(**{field: value})


def test_unknown_preset_and_view():
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        AugmentationConfig.preset("cifar100")
    with pytest.raises(ValueError, match="view must be 0 or 1"):
        AugmentationConfig.cifar10().sample(4, view=2)


def test_kernel_size_follows_simclr():
    assert AugmentationConfig.cifar10().kernel_size == 3
    assert AugmentationConfig.imagenet().kernel_size == 23
    assert math.isclose(AugmentationConfig.imagenet().view_value("blur_p", 1), 0.5)


def test_the_cpu_draws_are_the_stream_the_shipped_results_were_trained_with():
    """sample_pair on a CPU generator: the values every shipped checkpoint and result was trained with.

    Recorded before the GPU path got its own joint draw. A change here invalidates data/pretrained
    and data/results: retrain them, or keep the CPU stream.
    """
    p1, p2 = AugmentationConfig.byol_cifar10().sample_pair(3, generator=gen(0))
    assert p1.crop.flatten().tolist() == [0.15625, 0.1875, 0.8125, 0.71875, 0.21875, 0.25, 0.6875, 0.6875,
                                          0.03125, 0.03125, 0.78125, 0.9375]
    assert p1.order.tolist() == [[0, 1, 2, 3], [1, 3, 2, 0], [3, 0, 2, 1]]
    assert p2.order.tolist() == [[1, 0, 3, 2], [0, 1, 2, 3], [0, 1, 3, 2]]
    assert torch.allclose(p1.brightness, torch.tensor([1.0, 0.932616, 0.934176]), atol=1e-6)
    assert torch.allclose(p2.hue, torch.tensor([0.064462, 0.0, -0.068651]), atol=1e-6)
    assert torch.allclose(p1.sigma, torch.tensor([0.635776, 0.810899, 0.145032]), atol=1e-6)
    assert p1.grayscale.tolist() == [False, False, True] and p2.flip.tolist() == [True, False, True]
