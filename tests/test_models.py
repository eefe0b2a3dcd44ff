"""Tests of equimod_edu.models: backbones, heads, switches of EquiModModel, BYOL target."""

import copy

import pytest
import torch
from torch import nn

from equimod_edu.losses import equimod_loss
from equimod_edu.models import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    ConvNet,
    EquiModModel,
    EquivarianceProjectionHead,
    EquivariantPredictor,
    ModelConfig,
    ParameterEncoder,
    SimCLRProjectionHead,
    build_backbone,
    byol_momentum,
)

N, P, S = 4, 5, 8  # batch, parameter dim, image size: tiny, this runs on a shared CPU


def small_cfg(**overrides) -> ModelConfig:
    """A ConvNet model with narrow heads, fast on CPU."""
    kw = dict(backbone="convnet", param_dim=P, z_dim=16, proj_hidden=32, y_dim=16,
              param_embed_dim=8, predictor_hidden=16, byol_hidden=32)
    kw.update(overrides)
    return ModelConfig(**kw)


def batch(seed: int = 0, n: int = N):
    g = torch.Generator().manual_seed(seed)
    x_o, x_1, x_2 = (torch.randn(n, 3, S, S, generator=g) for _ in range(3))
    t_1, t_2 = (torch.randn(n, P, generator=g) for _ in range(2))
    return x_o, x_1, x_2, t_1, t_2


def linear_layers(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------------------- backbones


def test_convnet_widths_strides_and_output():
    net = ConvNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 256)
    module, dim = build_backbone("convnet")
    assert isinstance(module, ConvNet) and dim == 256


def test_resnet18_has_cifar_stem_and_zero_init_residuals():
    net, dim = build_backbone("resnet18")
    assert dim == 512
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    blocks = [m for m in net.modules() if m.__class__.__name__ == "BasicBlock"]
    assert len(blocks) == 8 and all(torch.all(b.bn2.weight == 0) for b in blocks)
    assert net(torch.randn(2, 3, S, S)).shape == (2, 512)


def test_resnet50_has_imagenet_stem_and_zero_init_residuals():
    net, dim = build_backbone("resnet50")
    assert dim == 2048
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, nn.MaxPool2d) and isinstance(net.fc, nn.Identity)
    blocks = [m for m in net.modules() if m.__class__.__name__ == "Bottleneck"]
    assert len(blocks) == 16 and all(torch.all(b.bn3.weight == 0) for b in blocks)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("vgg16")


# ---------------------------------------------------------------------------- heads


def layer_kinds(head: nn.Module) -> list[str]:
    return [type(m).__name__ for m in head.layers]


def test_simclr_and_equivariance_projectors_match_the_official_heads():
    for cls in (SimCLRProjectionHead, EquivarianceProjectionHead):
        head = cls(256, hidden_dim=32, output_dim=16)
        assert layer_kinds(head) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear",
                                                                              "BatchNorm1d"]
        lin = linear_layers(head)
        assert [(m.in_features, m.out_features) for m in lin] == [(256, 32), (32, 32), (32, 16)]
        assert all(m.bias is None for m in lin)          # followed by BN: no bias
        assert head.layers[-1].affine is False           # final BN without affine
        assert head(torch.randn(3, 256)).shape == (3, 16)


def test_byol_projector_and_predictor_shapes():
    for cls in (BYOLProjectionHead, BYOLPredictionHead):
        head = cls(16, hidden_dim=32, output_dim=8)
        assert layer_kinds(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
        assert head.layers[-1].bias is not None          # last Linear keeps its bias
        assert head(torch.randn(3, 16)).shape == (3, 8)
    default = BYOLProjectionHead(512)
    assert [m.out_features for m in linear_layers(default)] == [4096, 256]


def test_parameter_encoder_is_bn_of_linear():
    enc = ParameterEncoder(15, 128)
    assert layer_kinds(enc) == ["Linear", "BatchNorm1d"]
    assert enc.layers[1].affine is True
    assert enc(torch.randn(3, 15)).shape == (3, 128)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_predictor_depth_sets_the_number_of_linear_layers(depth):
    u = EquivariantPredictor(y_dim=16, embed_dim=8, depth=depth, hidden_dim=12)
    lin = linear_layers(u)
    assert len(lin) == depth + 1
    assert lin[0].in_features == 24 and lin[-1].out_features == 16
    assert all(m.out_features == 12 for m in lin[:-1])
    assert isinstance(u.layers[-1], nn.BatchNorm1d) and u.layers[-1].affine is False
    # and through the model config
    model = EquiModModel(small_cfg(predictor_depth=depth))
    assert len(linear_layers(model.predictor)) == depth + 1


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, field", [
    (dict(backbone="vgg"), "backbone"),
    (dict(base="moco"), "base"),
    (dict(z_dim=-1), "z_dim"),
    (dict(y_dim=0), "y_dim"),
    (dict(proj_hidden=-5), "proj_hidden"),
    (dict(param_dim=0), "param_dim"),
    (dict(predictor_depth=-1), "predictor_depth"),
    (dict(param_mask=(True, False, True)), "param_mask"),
    (dict(param_mask=(2, 0, 1, 1, 1)), "param_mask"),
    (dict(ema_base=1.5), "ema_base"),
    (dict(equimod="yes"), "equimod"),
])
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        small_cfg(**overrides)


def test_config_normalises_param_mask_to_a_tuple_of_bools():
    assert small_cfg(param_mask=[1, 0, 1, 0, 0]).param_mask == (True, False, True, False, False)


def test_wrong_parameter_width_is_a_clear_error():
    model = EquiModModel(small_cfg())
    x_o, x_1, x_2, t_1, t_2 = batch()
    with pytest.raises(ValueError, match="param_dim"):
        model(x_o, x_1, x_2, t_1[:, :3], t_2[:, :3])


# ---------------------------------------------------------------------------- forward


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_forward_shapes(base):
    model = EquiModModel(small_cfg(base=base))
    out = model(*batch())
    z = 16
    assert out.h.shape == (3 * N, 256)
    assert out.z_1.shape == out.z_2.shape == (N, z)
    for name in ("y_o", "y_1", "y_2", "y_hat_1", "y_hat_2"):
        assert getattr(out, name).shape == (N, 16), name
    byol_fields = ("p_1", "p_2", "target_z_1", "target_z_2")
    if base == "byol":
        assert all(getattr(out, f).shape == (N, 16) for f in byol_fields)
    else:
        assert all(getattr(out, f) is None for f in byol_fields)


def count_backbone_images(model: EquiModModel, *inputs):
    """Batch sizes of the backbone's calls during one forward, and the forward's output."""
    seen = []
    handle = model.backbone.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        out = model(*inputs)
    finally:
        handle.remove()
    return seen, out


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_equimod_on_forwards_3n_images_in_one_backbone_call(base):
    model = EquiModModel(small_cfg(base=base))
    seen, _ = count_backbone_images(model, *batch())
    assert seen == [3 * N]  # one call: BatchNorm sees x_o, x_1 and x_2 together


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_equimod_off_forwards_2n_images_and_has_no_equivariance_module(base):
    model = EquiModModel(small_cfg(base=base, equimod=False))
    _, x_1, x_2, _, _ = batch()
    seen, out = count_backbone_images(model, None, x_1, x_2, None, None)
    assert seen == [2 * N]
    assert out.h.shape == (2 * N, 256)
    for name in ("y_o", "y_1", "y_2", "y_hat_1", "y_hat_2"):
        assert getattr(out, name) is None
    assert model.equi_projector is None and model.predictor is None
    assert model.param_encoder is None
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("equi_projector", "param_encoder", "predictor")) for n in names)
    assert model.embed(x_1)[2] is None
    with pytest.raises(ValueError, match="equimod"):
        model.predict(torch.randn(N, 16), torch.randn(N, P))


def test_equi_projector_off_means_y_is_h():
    model = EquiModModel(small_cfg(equi_projector=False))
    assert model.equi_projector is None and model.y_dim == 256
    out = model(*batch())
    assert torch.equal(out.y_o, out.h[:N])
    assert torch.equal(out.y_1, out.h[N:2 * N])
    assert torch.equal(out.y_2, out.h[2 * N:])
    assert out.y_hat_1.shape == (N, 256)
    assert linear_layers(model.predictor)[0].in_features == 256 + 8


def test_param_encoder_switch_changes_the_predictor_input():
    on = EquiModModel(small_cfg(param_encoder=True))
    off = EquiModModel(small_cfg(param_encoder=False))
    assert isinstance(on.param_encoder, ParameterEncoder)
    assert linear_layers(on.predictor)[0].in_features == 16 + 8       # y_dim + embed
    assert off.param_encoder is None
    assert not any(n.startswith("param_encoder") for n, _ in off.named_parameters())
    assert linear_layers(off.predictor)[0].in_features == 16 + P      # y_dim + raw t
    assert off(*batch()).y_hat_1.shape == (N, 16)


@pytest.mark.parametrize("param_encoder", [True, False])
def test_param_mask_hides_masked_entries_from_the_predictor(param_encoder):
    mask = (True, False, True, False, False)
    model = EquiModModel(small_cfg(param_mask=mask, param_encoder=param_encoder))
    y_o, t = torch.randn(N, 16), torch.randn(N, P)
    y_hat = model.predict(y_o, t)
    masked = t.clone()
    masked[:, [1, 3, 4]] = torch.randn(N, 3) * 10
    assert torch.allclose(model.predict(y_o, masked), y_hat, atol=1e-6)
    visible = t.clone()
    visible[:, 0] = torch.randn(N) * 10
    assert not torch.allclose(model.predict(y_o, visible), y_hat, atol=1e-3)
    # without a mask, the same change to entry 1 does change the prediction
    free = EquiModModel(small_cfg(param_encoder=param_encoder))
    assert not torch.allclose(free.predict(y_o, masked), free.predict(y_o, t), atol=1e-3)


def test_eval_mode_forward_agrees_with_embed_and_predict():
    model = EquiModModel(small_cfg()).eval()
    x_o, x_1, x_2, t_1, t_2 = batch()
    with torch.no_grad():
        out = model(x_o, x_1, x_2, t_1, t_2)
        h, z, y = model.embed(x_1)
        _, _, y_o = model.embed(x_o)
        assert torch.allclose(model.features(x_2), out.h[2 * N:], atol=1e-5)
        assert torch.allclose(h, out.h[N:2 * N], atol=1e-5)
        assert torch.allclose(z, out.z_1, atol=1e-5)
        assert torch.allclose(y, out.y_1, atol=1e-5)
        assert torch.allclose(model.predict(y_o, t_2), out.y_hat_2, atol=1e-5)


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_every_online_parameter_gets_a_gradient(base):
    model = EquiModModel(small_cfg(base=base, predictor_depth=1))
    loss = equimod_loss(model(*batch()), base)["loss"]
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_channels_last_model_gives_the_same_outputs():
    model = EquiModModel(small_cfg(base="byol")).eval()
    inputs = batch()
    with torch.no_grad():
        ref = model(*inputs)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x_o, x_1, x_2, t_1, t_2 = inputs
        to_cl = lambda x: x.contiguous(memory_format=torch.channels_last)  # noqa: E731
        out = cl(to_cl(x_o), to_cl(x_1), to_cl(x_2), t_1, t_2)
    for name, value in ref.as_dict().items():
        assert torch.allclose(getattr(out, name), value, atol=1e-4), name


# ---------------------------------------------------------------------------- BYOL target


def test_byol_target_is_a_frozen_copy_not_updated_by_gradients():
    model = EquiModModel(small_cfg(base="byol"))
    target = list(model.target_backbone.parameters()) + list(model.target_projector.parameters())
    assert target and all(not p.requires_grad for p in target)
    for online, copy_ in ((model.backbone, model.target_backbone),
                          (model.projector, model.target_projector)):
        for a, b in zip(online.parameters(), copy_.parameters()):
            assert torch.equal(a, b)                      # starts as a copy
    before = [p.clone() for p in target]
    out = model(*batch())
    assert not out.target_z_1.requires_grad and out.p_1.requires_grad
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.5)
    equimod_loss(out, "byol")["loss"].backward()
    assert all(p.grad is None for p in target)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(target, before))
    assert not all(torch.equal(a, b) for a, b in
                   zip(model.backbone.parameters(), model.target_backbone.parameters()))


def test_update_target_is_an_exponential_moving_average():
    model = EquiModModel(small_cfg(base="byol"))
    with torch.no_grad():
        for p in list(model.backbone.parameters()) + list(model.projector.parameters()):
            p.add_(torch.randn_like(p))
    online = [p.clone() for p in model.backbone.parameters()]
    target = [p.clone() for p in model.target_backbone.parameters()]
    model.update_target(0.9)
    for o, t, new in zip(online, target, model.target_backbone.parameters()):
        assert torch.allclose(new, 0.9 * t + 0.1 * o, atol=1e-6)
    frozen = [p.clone() for p in model.target_projector.parameters()]
    model.update_target(1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.target_projector.parameters()))
    model.update_target(0.0)
    assert all(torch.equal(a, b) for a, b in zip(model.projector.parameters(),
                                                 model.target_projector.parameters()))
    with pytest.raises(ValueError, match="momentum"):
        model.update_target(1.5)


def test_update_target_is_a_no_op_for_simclr():
    model = EquiModModel(small_cfg(base="simclr"))
    state = copy.deepcopy(model.state_dict())
    model.update_target(0.5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.target_backbone is None and model.byol_predictor is None


def test_byol_momentum_cosine_schedule():
    assert byol_momentum(0, 100) == pytest.approx(0.996)
    assert byol_momentum(50, 100) == pytest.approx(0.998)
    assert byol_momentum(100, 100) == pytest.approx(1.0)
    assert byol_momentum(10, 100, base=0.99) < byol_momentum(20, 100, base=0.99)
    with pytest.raises(ValueError, match="total_steps"):
        byol_momentum(0, 0)


@pytest.mark.parametrize("base", ["simclr", "byol"])
def test_bf16_autocast_training_step_runs_with_fp32_losses(base):
    model = EquiModModel(small_cfg(base=base)).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = equimod_loss(model(*batch()), base)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in parts.values())
    parts["loss"].backward()
    assert model.backbone.features[0].weight.grad is not None
