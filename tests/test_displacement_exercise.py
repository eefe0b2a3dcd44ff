"""The displacement-map exercise.

It accepts M read from the weights, rejects wrong maps with a hint, and refuses running any part of the model (a
layer, a copy, a new model loaded with its weights).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import teachers_solutions

from equimod_edu.displacement_exercise import check_displacement_map
from equimod_edu.models import EquiModModel, ModelConfig

solutions = teachers_solutions()


def _trained_like_model(depth=0):
    torch.manual_seed(0)
    model = EquiModModel(ModelConfig(backbone="convnet", param_dim=6, y_dim=8, param_embed_dim=5, z_dim=8,
                                     proj_hidden=16, predictor_depth=depth))
    for norm in model.modules():   # running statistics away from (0, 1), as after training
        if isinstance(norm, torch.nn.BatchNorm1d):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            if norm.weight is not None:
                norm.weight.data.uniform_(0.5, 2)
    return model.eval()


def test_the_displacement_map_of_the_solution_is_accepted_and_matches_the_library():
    from equimod_edu.equivariance import column_weights, displacement_map
    model = _trained_like_model()
    assert check_displacement_map(solutions.displacement_map, model, strict=True) is True
    expected = displacement_map(model.predict, 8, 6)
    assert torch.allclose(solutions.displacement_map(model), expected, atol=1e-5)
    weights = column_weights(model, list("abcdef"))
    assert list(weights) == list("abcdef") and weights["a"] == pytest.approx(float(expected[:, 0].norm()))
    with pytest.raises(ValueError, match="linear predictor"):
        column_weights(_trained_like_model(depth=1), list("abcdef"))


def test_wrong_displacement_maps_are_rejected_and_calling_the_model_is_refused(capsys):
    model = _trained_like_model()
    assert check_displacement_map(lambda m: solutions.displacement_map(m).T, model) is False
    assert "transposed" in capsys.readouterr().out
    no_norm = lambda m: m.predictor.layers[0].weight[:, 8:] @ m.param_encoder.layers[0].weight  # noqa: E731
    assert check_displacement_map(no_norm, model) is False
    assert "BatchNorm" in capsys.readouterr().out

    def through_the_model(m):
        eye = torch.eye(6)
        return (m.predict(torch.zeros(6, 8), eye) - m.predict(torch.zeros(6, 8), 0 * eye)).T

    assert check_displacement_map(through_the_model, model) is False
    assert "calls model.predict" in capsys.readouterr().out
    assert "predict" not in vars(model) and model.predict(torch.zeros(1, 8), torch.zeros(1, 6)).shape == (1, 8)
    assert check_displacement_map(lambda m: (_ for _ in ()).throw(NotImplementedError), model) is None


def _finite_differences(run_encoder, run_predictor):
    """M by finite differences: run the module on t = e_j and t = 0 (the shortcut the rule forbids)."""
    def displacement_map(m):
        eye = torch.eye(6)
        p = run_encoder(m)(torch.cat([eye, 0 * eye[:1]]))
        out = run_predictor(m)(torch.cat([torch.zeros(7, 8), p], dim=1))
        return (out[:6] - out[6:]).T
    return displacement_map


def _two_layers(module):
    return lambda x: module.layers[1](module.layers[0](x))


def _unbound(module):
    return lambda x: torch.nn.BatchNorm1d.forward(module.layers[1], torch.nn.Linear.forward(module.layers[0], x))


def _through_a_copy(m):
    return _finite_differences(lambda c: c.param_encoder, lambda c: c.predictor)(copy.deepcopy(m))


def _through_a_new_model(m):
    twin = EquiModModel(m.cfg)
    twin.load_state_dict(m.state_dict())
    eye = torch.eye(6)
    return (twin.eval().predict(torch.zeros(6, 8), eye) - twin.predict(torch.zeros(6, 8), 0 * eye)).T


def _hiding_the_refusal(m):
    try:
        return _finite_differences(lambda c: c.param_encoder.layers, lambda c: c.predictor.layers)(m)
    except BaseException:
        return solutions.displacement_map(m)


@pytest.mark.parametrize("answer, called", [
    (_finite_differences(lambda m: m.param_encoder.layers, lambda m: m.predictor.layers),
     "model.param_encoder.layers(...)"),
    (_finite_differences(lambda m: m.param_encoder, lambda m: m.predictor), "model.param_encoder(...)"),
    (_finite_differences(lambda m: _two_layers(m.param_encoder), lambda m: _two_layers(m.predictor)),
     "model.param_encoder.layers[0](...)"),
    (_finite_differences(lambda m: _unbound(m.param_encoder), lambda m: _unbound(m.predictor)), "Linear.forward"),
    (_through_a_copy, "model.param_encoder(...)"),
    (_through_a_new_model, "ProjectionHead.forward"),
    (_hiding_the_refusal, "model.param_encoder.layers(...)"),
], ids=["layers", "modules", "each-layer", "unbound-forward", "copy", "new-model", "caught"])
def test_running_any_part_of_the_model_is_refused_for_the_displacement_map(answer, called, capsys):
    model = _trained_like_model()
    assert check_displacement_map(answer, model) is False
    out = capsys.readouterr().out
    assert f"calls {called}" in out and "from the weights alone" in out
    # restored after the check: no shadow left on the model, the classes' own forward back
    assert not any("forward" in vars(module) for module in model.modules()) and "predict" not in vars(model)
    assert torch.nn.Linear.forward.__qualname__ == "Linear.forward"
    assert model.predict(torch.zeros(1, 8), torch.zeros(1, 6)).shape == (1, 8)
    assert check_displacement_map(solutions.displacement_map, model, strict=True) is True


def test_reading_the_weights_by_hand_is_accepted_and_masked_columns_are_zero():
    def layer_by_layer(m):   # the layers applied by hand to the weights: reading them, not running the model
        def run(module):
            linear, norm = module.layers[0], module.layers[1]
            return lambda x: F.batch_norm(F.linear(x, linear.weight, linear.bias), norm.running_mean,
                                          norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return _finite_differences(lambda c: run(c.param_encoder), lambda c: run(c.predictor))(m)

    assert check_displacement_map(layer_by_layer, _trained_like_model(), strict=True) is True
    model = _trained_like_model()
    model.param_mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])   # the module never sees columns 1 and 4
    assert check_displacement_map(solutions.displacement_map, model, strict=True) is True
    assert solutions.displacement_map(model)[:, [1, 4]].abs().max() == 0
