"""augment_cuda.py, the GPU path, run on the CPU (and on a GPU where there is one).

The same pixels as apply, to the last bit; both views drawn together, with the distribution of sample_pair.
"""

import pytest
import torch
from helpers import gen, random_images

from equimod_edu import augment_cuda
from equimod_edu.augment import AugmentationConfig, apply

N = 48


def images_uint8(n=N, size=32, seed=0):
    return random_images(n, size, seed)


@pytest.mark.parametrize("preset", ["cifar10", "byol_cifar10", "synthetic"])
def test_gpu_style_selection_gives_the_same_pixels_bit_for_bit(preset):
    """The CUDA path, run here on the CPU, gives apply's pixels to the last bit.

    augment_cuda: every op on every image, the hue rotation once between blends of factor 1, torch.where;
    apply: each op on its selected subset. So does CudaAugment, normalised or not.
    """
    cfg = AugmentationConfig.preset(preset)
    fast = augment_cuda.CudaAugment(cfg, "cpu")
    x = images_uint8(256)  # enough images for all 24 jitter orders
    for view in (0, 1):
        p = cfg.sample(256, generator=gen(5 + view), view=view)
        subset = apply(x, p, cfg)
        assert torch.equal(subset, augment_cuda.apply_every_image(x, p, cfg)), (preset, view)
        assert torch.equal(subset, fast.apply(x, p)), (preset, view)
        assert torch.equal(apply(x, p, cfg, normalize=False), fast.apply(x, p, normalize=False)), (preset, view)
    y = images_uint8(8, size=40)
    assert torch.equal(fast.original(y), cfg.original(y)) and torch.equal(fast.normalize(y), cfg.normalize(y))
    assert torch.equal(fast.encode(p), cfg.encode(p))


def test_the_augmenter_of_a_device_is_the_config_on_a_cpu():
    cfg = AugmentationConfig.cifar10()
    assert augment_cuda.augmenter_for(cfg, "cpu") is cfg
    if torch.cuda.is_available():
        assert isinstance(augment_cuda.augmenter_for(cfg, "cuda"), augment_cuda.CudaAugment)


def test_on_the_gpu_path_both_views_are_drawn_together_and_made_in_one_pass(monkeypatch):
    """CudaAugment.views (the CUDA path) draws both views at once and applies them in one call of 2N images.

    The draw is sample_views_together; each view is exactly apply() of its own parameters; a
    process's share (rows) holds the same rows of the same draw.
    """
    cfg = AugmentationConfig.byol_cifar10()
    fast = augment_cuda.CudaAugment(cfg, "cpu")
    x = images_uint8()
    calls = []
    every_image = augment_cuda.apply_every_image
    monkeypatch.setattr(augment_cuda, "apply_every_image",
                        lambda *a, **k: calls.append(len(a[0])) or every_image(*a, **k))
    together = fast.views(x, gen(8))
    assert calls == [2 * N]
    share = fast.views(x, gen(8), rows=slice(8, 24))
    assert torch.equal(together.x_o, cfg.original(x))
    for params, view, local_params, local_view in ((together.params_1, together.x_1, share.params_1, share.x_1),
                                                   (together.params_2, together.x_2, share.params_2, share.x_2)):
        assert torch.equal(apply(x, params, cfg), view)
        assert torch.equal(local_params.crop, params.crop[8:24]) and torch.equal(local_view, view[8:24])
    assert not torch.equal(together.params_1.crop, together.params_2.crop)  # two independent views


def test_views_drawn_together_follow_the_distribution_of_sample_pair():
    """One draw for both views (the GPU path) and sample_pair (the CPU stream) give the same distribution.

    The per-view probabilities included (BYOL: blur 1.0 / 0.1, solarize 0 / 0.2).
    """
    cfg, n = AugmentationConfig.byol_cifar10(), 20000
    both = augment_cuda.sample_views_together(cfg, n, generator=gen(0))
    assert len(both) == 2 * n
    for ours, ref in zip((both[:n], both[n:]), cfg.sample_pair(n, generator=gen(1))):
        for name in ("flip", "jitter", "grayscale", "blur", "solarize"):
            assert abs(getattr(ours, name).float().mean() - getattr(ref, name).float().mean()) < 0.02, name
        for name in ("brightness", "contrast", "saturation", "hue", "sigma"):
            assert abs(getattr(ours, name).mean() - getattr(ref, name).mean()) < 0.02, name
        assert torch.allclose(ours.crop.mean(0), ref.crop.mean(0), atol=0.01)
        assert torch.equal(ours.order.sort(dim=1).values, torch.arange(4).expand(n, 4))  # permutations
    first, second = both[:n], both[n:]
    assert first.blur.all() and abs(second.blur.float().mean() - 0.1) < 0.01
    assert not first.solarize.any() and abs(second.solarize.float().mean() - 0.2) < 0.01
    assert torch.equal(first.sigma > 0, first.blur)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cfg = AugmentationConfig.byol_cifar10()
    x = images_uint8()
    p = cfg.sample(N, generator=gen(), view=1)
    cpu = apply(x, p, cfg)
    gpu = apply(x.cuda(), p.to("cuda"), cfg)
    assert (cpu - gpu.cpu()).abs().max() < 1e-4
    fast = augment_cuda.augmenter_for(cfg, "cuda")  # the path the trainer takes on a GPU
    assert (cpu - fast.apply(x.cuda(), p.to("cuda")).cpu()).abs().max() < 1e-4
    assert torch.allclose(fast.encode(p.to("cuda")).cpu(), cfg.encode(p), atol=1e-6)
    g = torch.Generator(device="cuda").manual_seed(0)
    assert cfg.sample(8, generator=g).device.type == "cuda"
