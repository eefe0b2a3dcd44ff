"""Exercise checks: they accept the teachers' solutions, refuse a call of the library function asked for,
reject wrong answers with a hint, and never stop a notebook."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import equimod_edu
from equimod_edu import exercises, losses
from equimod_edu.exercises import (check_displacement_map, check_equivariance_gain, check_equivariance_loss,
                                   check_loss_floors, check_nt_xent, check_prediction, loss_floor_toy)
from equimod_edu.models import EquiModModel, ModelConfig

TEACHERS = Path(__file__).resolve().parent.parent / "teachers"
_spec = importlib.util.spec_from_file_location("teachers_solutions", TEACHERS / "solutions.py")
solutions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(solutions)


def stub(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- the solutions pass; the library is refused
@pytest.mark.parametrize("check, answer", [
    (check_nt_xent, solutions.nt_xent),
    (check_equivariance_gain, solutions.equivariance_gain),
    (check_equivariance_loss, solutions.equivariance_loss),
])
def test_right_answers_are_accepted(check, answer, capsys):
    assert check(answer) is True
    assert "correct" in capsys.readouterr().out
    assert check(answer, strict=True) is True


def _nt_xent_through_an_import(z_1, z_2, temperature=0.5):
    from equimod_edu import losses as hidden   # invisible to a reading of the globals: refused at the call
    return hidden.nt_xent(z_1, z_2, temperature)


@pytest.mark.parametrize("check, answer, called", [
    (check_nt_xent, lambda z_1, z_2, temperature=0.5: losses.nt_xent(z_1, z_2, temperature), "losses.nt_xent"),
    (check_nt_xent, _nt_xent_through_an_import, "losses.nt_xent"),
    (check_equivariance_gain, losses.equivariance_gain, "losses.equivariance_gain"),
    (check_equivariance_loss, lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature),
     "losses.equivariance_loss"),
])
def test_a_direct_call_of_the_library_function_is_refused(check, answer, called, capsys):
    assert check(answer) is False
    assert f"calls {called}" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="the function this exercise asks you to write"):
        check(answer, strict=True)
    assert losses.nt_xent(torch.ones(2, 3), torch.ones(2, 3)) > 0   # restored after the check


def test_the_solutions_live_outside_the_package_and_are_written_out():
    assert not hasattr(exercises, "solutions")
    assert not (Path(equimod_edu.__file__).parent / "solutions.py").exists()
    source = (TEACHERS / "solutions.py").read_text()
    assert "losses." not in source.split('"""', 2)[2].replace("equimod_edu/losses.py", "")
    for name in ("nt_xent", "equivariance_gain", "equivariance_loss", "displacement_map"):
        assert callable(getattr(solutions, name))


# ---------------------------------------------------------------- the displacement map of a linear module
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


# ---------------------------------------------------------------- why the equivariance loss forbids invariance
def test_the_toy_never_goes_below_the_two_bounds_and_reaches_zero_without_constraint():
    free, invariant, ignores_t = (loss_floor_toy(c, steps=300) for c in ("none", "invariant", "ignores_t"))
    assert free["mean"] < 0.05
    assert invariant["y anchors"] >= math.log(3) - 1e-3 and invariant["y_hat anchors"] >= math.log(2) - 1e-3
    assert min(ignores_t["y anchors"], ignores_t["y_hat anchors"]) >= math.log(2) - 1e-3
    with pytest.raises(ValueError, match="constraint"):
        loss_floor_toy("both")


def test_check_loss_floors_accepts_the_bounds_and_names_the_mistake(capsys):
    assert check_loss_floors(None, math.log(2), toy=False) is None
    assert check_loss_floors(math.log(3), math.log(2), toy=False) is True
    assert check_loss_floors(math.log(2), math.log(2), toy=False) is False
    assert "y_hat_2 is a rival" in capsys.readouterr().out
    assert check_loss_floors(math.log(3), "half", toy=False) is False
    assert "must be a number" in capsys.readouterr().out


# ---------------------------------------------------------------- stubs and crashes do not stop a notebook
@pytest.mark.parametrize("check", [check_nt_xent, check_equivariance_gain, check_equivariance_loss])
def test_a_stub_is_reported_as_not_implemented_without_raising(check, capsys):
    assert check(stub) is None
    assert "not implemented yet" in capsys.readouterr().out
    assert check(stub, strict=True) is None  # unanswered is not wrong


@pytest.mark.parametrize("check", [check_nt_xent, check_equivariance_gain, check_equivariance_loss])
def test_an_answer_that_raises_is_wrong_and_the_error_is_shown(check, capsys):
    def broken(*args, **kwargs):
        return 1 / 0

    assert check(broken) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        check(broken, strict=True)


# ---------------------------------------------------------------- wrong answers, with the mistake named
def _nt_xent_variants():
    def no_normalise(z_1, z_2, temperature=0.5):
        n, z = z_1.shape[0], torch.cat([z_1, z_2])
        logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
        return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    def keeps_self(z_1, z_2, temperature=0.5):
        n, z = z_1.shape[0], F.normalize(torch.cat([z_1, z_2]), dim=1)
        return F.cross_entropy(z @ z.T / temperature, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    def across_views_only(z_1, z_2, temperature=0.5):
        a, b = F.normalize(z_1, dim=1), F.normalize(z_2, dim=1)
        return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))

    def ignores_temperature(z_1, z_2, temperature=0.5):
        return solutions.nt_xent(z_1, z_2, 1.0)

    def summed(z_1, z_2, temperature=0.5):
        return 2 * len(z_1) * solutions.nt_xent(z_1, z_2, temperature)

    def off_by_a_little(z_1, z_2, temperature=0.5):
        return solutions.nt_xent(z_1, z_2, temperature) + 0.01

    return [(no_normalise, "normalised"), (keeps_self, "itself"), (across_views_only, "2N x 2N"),
            (ignores_temperature, "temperature"), (summed, "mean"), (off_by_a_little, None)]


@pytest.mark.parametrize("answer, hint", _nt_xent_variants(), ids=lambda x: getattr(x, "__name__", str(x)))
def test_wrong_nt_xent_is_rejected_with_a_hint(answer, hint, capsys):
    assert check_nt_xent(answer) is False
    out = capsys.readouterr().out
    assert "not yet right" in out and "expected" in out
    if hint:
        assert "Hint" in out and hint in out
    with pytest.raises(AssertionError):
        check_nt_xent(answer, strict=True)


def _cos(a, b):
    return F.cosine_similarity(a, b, dim=1)


@pytest.mark.parametrize("answer, hint", [
    (lambda y, y_hat, y_o: _cos(y, y_o) - _cos(y, y_hat), "sign"),
    (lambda y, y_hat, y_o: (y * y_hat).sum(1) - (y * y_o).sum(1), "dot products"),
    (lambda y, y_hat, y_o: (_cos(y, y_hat) - _cos(y, y_o)).mean(), "per sample"),
    (lambda y, y_hat, y_o: _cos(y, y_hat), "baseline"),
    (lambda y, y_hat, y_o: _cos(y, y_hat) - _cos(y_hat, y_o), "original"),
    (lambda y, y_hat, y_o: (_cos(y, y_hat) - _cos(y, y_o)).tolist(), None),  # a list is fine: same numbers
])
def test_wrong_gains_are_rejected_with_a_hint(answer, hint, capsys):
    result = check_equivariance_gain(answer)
    out = capsys.readouterr().out
    if hint is None:
        assert result is True
        return
    assert result is False and "Hint" in out and hint in out


def test_wrong_equivariance_losses_are_rejected(capsys):
    def simclr_pairs(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
        return solutions.nt_xent(y_1, y_2, temperature)

    assert check_equivariance_loss(simclr_pairs) is False
    assert "paired with its prediction" in capsys.readouterr().out
    assert check_equivariance_loss(lambda *a, temperature=0.2: torch.tensor(0.0)) is False


# ---------------------------------------------------------------- predict, then measure
def test_check_prediction_compares_with_the_measurement(capsys):
    measured = {"crop": 0.1, "hue": 0.4, "flip": -0.2}
    assert check_prediction(None, measured) is None
    assert "No prediction yet" in capsys.readouterr().out
    assert check_prediction("hue", measured) is True
    assert check_prediction(" Hue ", measured) is True
    out = capsys.readouterr().out
    assert out.index("hue") < out.index("crop") < out.index("flip")  # ranked, largest first
    assert check_prediction("crop", measured) is False
    assert "'hue' first" in capsys.readouterr().out
    assert check_prediction("colour", measured) is False
    assert "not one of the measured names" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        check_prediction("flip", measured, strict=True)
    assert check_prediction({"flip", "crop"}, measured, lowest=True) is True    # the two smallest, any order
    assert "least forgotten first" in capsys.readouterr().out
    assert check_prediction(["flip", "hue"], measured, lowest=True) is False
    assert "number 1, 3" in capsys.readouterr().out
