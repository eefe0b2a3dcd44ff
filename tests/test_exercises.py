"""Exercise checks: they accept the teachers' solutions, refuse a call of the library function asked for,
reject wrong answers with a hint, and never stop a notebook."""

import copy
import functools
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import equimod_edu
from equimod_edu import exercises, losses
from equimod_edu import losses as L
from equimod_edu.exercises import (check_displacement_map, check_equivariance_gain, check_equivariance_loss,
                                   check_loss_floors, check_nt_xent, check_prediction, loss_floor_toy)
from equimod_edu.models import EquiModModel, ModelConfig

TEACHERS = Path(__file__).resolve().parent.parent / "teachers"
_spec = importlib.util.spec_from_file_location("teachers_solutions", TEACHERS / "solutions.py")
solutions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(solutions)


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.fixture(autouse=True)
def _scratch_working_folder(tmp_path, monkeypatch):
    """check_prediction records first answers in runs/ of the working folder: never the repository's."""
    monkeypatch.chdir(tmp_path)


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


def _nt_xent_by_the_private_helper(z_1, z_2, temperature=0.5):
    return F.cross_entropy(*losses._nt_xent_logits(z_1, z_2, temperature, False))


def _nt_xent_through_an_alias(z_1, z_2, temperature=0.5):
    return F.cross_entropy(*L._nt_xent_logits(z_1, z_2, temperature, False))


def _nt_xent_importing_the_helper(z_1, z_2, temperature=0.5):
    from equimod_edu.losses import _nt_xent_logits   # run at the call: the refused version
    return F.cross_entropy(*_nt_xent_logits(z_1, z_2, temperature, False))


def _nt_xent_by_a_default_argument(z_1, z_2, temperature=0.5, *, logits=losses._info_nce_logits):
    n = len(z_1)
    return F.cross_entropy(*logits(torch.cat([z_1, z_2]), torch.cat([torch.arange(n, 2 * n), torch.arange(n)]),
                                   temperature, False))


def _nt_xent_hiding_the_refusal(z_1, z_2, temperature=0.5):
    try:   # the name built at run time, the refusal caught: still reported
        return getattr(importlib.import_module("equimod_edu.losses"), "_nt_xent" + "_logits")(z_1, z_2, temperature,
                                                                                               False)[0].sum()
    except BaseException:
        return solutions.nt_xent(z_1, z_2, temperature)


def _equivariance_loss_by_the_private_helper(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
    n2, vectors = 2 * len(y_1), torch.cat([y_1, y_2, y_hat_1, y_hat_2])
    index = torch.arange(n2)
    return F.cross_entropy(*losses._info_nce_logits(vectors, torch.cat([index + n2, index]), temperature, False))


@pytest.mark.parametrize("check, answer, called", [
    (check_nt_xent, _nt_xent_by_the_private_helper, "losses._nt_xent_logits"),
    (check_nt_xent, _nt_xent_through_an_alias, "losses._nt_xent_logits"),
    (check_nt_xent, _nt_xent_importing_the_helper, "losses._nt_xent_logits"),
    (check_nt_xent, _nt_xent_by_a_default_argument, "losses._info_nce_logits"),
    (check_nt_xent, _nt_xent_hiding_the_refusal, "losses._nt_xent_logits"),
    (check_nt_xent, functools.partial(losses.nt_xent, gather=False), "losses.nt_xent"),
    (check_equivariance_loss, _equivariance_loss_by_the_private_helper, "losses._info_nce_logits"),
    (check_equivariance_loss, lambda *v, temperature=0.2: F.cross_entropy(*losses.equivariance_logits(
        *v, temperature, gather=False)), "losses.equivariance_logits"),
    (check_equivariance_gain, lambda y, y_hat, y_o: losses.equivariance_gain(y, y_hat, y_o) + 0 * losses.info_nce_chance(2),
     "losses."),
], ids=["private", "alias", "import-inside", "default-argument", "caught", "partial", "info-nce", "logits", "gain"])
def test_every_function_of_the_losses_module_is_refused_for_the_loss_exercises(check, answer, called, capsys):
    assert check(answer) is False
    out = capsys.readouterr().out
    assert f"calls {called}" in out and "plain PyTorch" in out
    if called not in ("losses.nt_xent", "losses."):
        assert "no function of that module, public or private" in out
    with pytest.raises(AssertionError, match="the function this exercise asks you to write"):
        check(answer, strict=True)
    # restored after the check: every function of the module runs, under its own code
    assert losses._nt_xent_logits.__code__.co_name == "_nt_xent_logits"
    assert losses._nt_xent_logits(torch.eye(2), torch.eye(2), 0.5, False)[1].tolist() == [2, 3, 0, 1]
    assert float(losses.nt_xent(torch.eye(2), torch.eye(2))) == pytest.approx(0.2395, abs=1e-4)


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


MEASURED = {"crop": 0.1, "hue": 0.4, "flip": -0.2}
RECORDS = Path("runs") / "predictions.json"   # in the working folder (a scratch folder here)


def test_the_first_answer_is_recorded_and_shown_on_later_runs(capsys):
    assert check_prediction(None, MEASURED, question="Most?") is None
    assert not RECORDS.exists()                                     # no prediction yet: nothing recorded
    assert check_prediction("crop", MEASURED, question="Most?") is False
    assert "Recorded as your first answer" in capsys.readouterr().out
    first = json.loads(RECORDS.read_text())["Most?"]
    assert first["answer"] == "crop" and first["right"] is False and first["recorded"][:2] == "20"

    assert check_prediction("hue", MEASURED, question="Most?") is True       # edited after seeing the ranking
    out = capsys.readouterr().out
    assert f"Your first answer, recorded {first['recorded']}: 'crop' (not this one; number 2" in out
    assert "delete runs/predictions.json" in out and "start_over=True" in out
    assert json.loads(RECORDS.read_text())["Most?"] == first                # the first one stays
    assert check_prediction(None, MEASURED, question="Most?") is None
    assert "Your first answer" in capsys.readouterr().out and json.loads(RECORDS.read_text())["Most?"] == first

    assert check_prediction({"flip", "crop"}, MEASURED, question="Least two?", lowest=True) is True
    assert json.loads(RECORDS.read_text())["Least two?"]["answer"] == ["crop", "flip"]
    assert check_prediction(["crop", "flip"], MEASURED, question="Least two?", lowest=True) is True
    assert "(this one)" in capsys.readouterr().out


def test_start_over_and_no_record(capsys):
    check_prediction("crop", MEASURED, question="Most?")
    assert check_prediction("hue", MEASURED, question="Most?", start_over=True) is True
    assert json.loads(RECORDS.read_text())["Most?"]["answer"] == "hue"
    check_prediction(None, MEASURED, question="Most?", start_over=True)
    assert "forgotten" in capsys.readouterr().out and "Most?" not in json.loads(RECORDS.read_text())
    RECORDS.unlink()
    assert check_prediction("hue", MEASURED, question="Most?", record=None) is True
    assert not RECORDS.exists() and "first answer" not in capsys.readouterr().out
    elsewhere = Path("elsewhere") / "answers.json"
    check_prediction("flip", MEASURED, question="Most?", record=elsewhere)
    assert json.loads(elsewhere.read_text())["Most?"]["answer"] == "flip" and not RECORDS.exists()


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"Most?": "crop"}', '{"Most?": {"answer": 3, "recorded": "x"}}',
                                    b"\xff\xfe"])
def test_a_damaged_record_is_reported_in_one_line_and_left_as_it_is(damage, capsys):
    RECORDS.parent.mkdir()
    RECORDS.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    before = RECORDS.read_bytes()
    assert check_prediction("hue", MEASURED, question="Most?") is True       # the check itself still works
    lines = [line for line in capsys.readouterr().out.splitlines() if "damaged" in line]
    assert len(lines) == 1 and "runs/predictions.json" in lines[0] and "delete it" in lines[0]
    assert RECORDS.read_bytes() == before


# ---------------------------------------------------------------- notebook 3, Exercise 2: loss without the other view
def _loss_without_other_view(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
    """The answer in plain PyTorch (teachers/03_equimod.md)."""
    n = y_1.shape[0]
    v = F.normalize(torch.cat([y_1, y_2, y_hat_1, y_hat_2]), dim=1)
    logits = v @ v.T / temperature
    i = torch.arange(n)
    logits.fill_diagonal_(float("-inf"))
    logits[i, i + n] = float("-inf")
    logits[i + n, i] = float("-inf")
    return F.cross_entropy(logits, torch.cat([i + 2 * n, i + 3 * n, i, i + n]))


def test_the_loss_without_the_other_view_and_its_floor(capsys):
    import re

    from equimod_edu.exercises import check_loss_without_other_view

    assert check_loss_without_other_view(stub, None) is None
    assert "not implemented yet" in capsys.readouterr().out
    assert check_loss_without_other_view(_loss_without_other_view, None) is None
    assert "correct" in capsys.readouterr().out
    assert check_loss_without_other_view(_loss_without_other_view, math.log(2)) is True
    out = capsys.readouterr().out
    none, invariant = (float(re.search(rf"{c}: (\d\.\d+)", out).group(1)) for c in ("none", "invariant"))
    assert none < 0.01 and abs(invariant - math.log(2)) < 0.01          # the toy reaches the floor, not below
    first = json.loads(RECORDS.read_text())[exercises.OTHER_VIEW_QUESTION]
    assert first["answer"] == f"{math.log(2):.4f}" and first["right"] is True
    assert check_loss_without_other_view(_loss_without_other_view, math.log(3), toy=False) is False
    out = capsys.readouterr().out
    assert "log 3 counts three candidates" in out and "Your first answer" in out
    full = lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature)  # noqa: E731
    assert check_loss_without_other_view(full, math.log(2), toy=False) is False
    assert "from equimod_edu.losses" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        check_loss_without_other_view(full, None, strict=True)


# ---------------------------------------------------------------- notebook 2: the decoupled loss, and its value at alignment
def _decoupled_by_hand(z_1, z_2, temperature=0.5):
    """The decoupled contrastive loss written out anchor by anchor, in float64 (the test's own reference)."""
    z = F.normalize(torch.cat([z_1, z_2]).double(), dim=1)
    n2, total = len(z), 0.0
    for a in range(n2):
        p = (a + n2 // 2) % n2
        negatives = [math.exp(float(z[a] @ z[k]) / temperature) for k in range(n2) if k not in (a, p)]
        total += -float(z[a] @ z[p]) / temperature + math.log(sum(negatives))
    return torch.tensor(total / n2, dtype=torch.float64)


def _decoupled_answer(z_1, z_2, temperature=0.5):
    n = len(z_1)
    z = F.normalize(torch.cat([z_1, z_2]), dim=1)
    s = z @ z.T / temperature
    rows, partner = torch.arange(2 * n), torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    hidden = torch.eye(2 * n, dtype=torch.bool)
    hidden[rows, partner] = True
    return (-s[rows, partner] + torch.logsumexp(s.masked_fill(hidden, float("-inf")), dim=1)).mean()


def test_the_decoupled_reference_matches_a_hand_computation_and_the_toy_goes_below_zero():
    from equimod_edu.exercises import _contrastive64, decoupled_toy
    generator = torch.Generator().manual_seed(0)
    for n, d, temperature in ((2, 3, 0.5), (5, 8, 0.1), (3, 4, 1.0)):
        z_1, z_2 = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)
        assert float(_contrastive64(z_1, z_2, temperature)) == pytest.approx(float(_decoupled_by_hand(z_1, z_2, temperature)), abs=1e-9)
        nt = float(_contrastive64(z_1, z_2, temperature, hide_positive=False))
        assert nt == pytest.approx(float(losses.nt_xent(z_1, z_2, temperature)), abs=1e-5)   # the switch gives NT-Xent
    z_1, z_2, temperature = decoupled_toy()
    assert float(_contrastive64(z_1, z_2, temperature)) == pytest.approx(-2 + math.log(2), abs=1e-12)
    assert float(losses.nt_xent(z_1, z_2, temperature)) == pytest.approx(0.2395, abs=1e-4)


def test_check_decoupled_nt_xent_accepts_the_answer_and_records_the_first_prediction(tmp_path, capsys):
    from equimod_edu.exercises import check_decoupled_nt_xent
    record = tmp_path / "runs" / "predictions.json"
    assert check_decoupled_nt_xent(stub, None, record=record) is None
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "not answered yet" in out and not record.exists()
    assert check_decoupled_nt_xent(_decoupled_answer, 0.2395, record=record) is False   # NT-Xent's value: wrong
    out = capsys.readouterr().out
    assert "correct on 4 random cases" in out and "NT-Xent's value" in out and "Recorded" in out
    assert check_decoupled_nt_xent(_decoupled_answer, -2 + math.log(2), record=record) is True
    out = capsys.readouterr().out
    assert "right" in out and "-1.3069" in out and "Your first answer" in out and "'0.2395'" in out
    assert check_decoupled_nt_xent(_decoupled_answer, -1.307, record=None, strict=True) is True
    assert check_decoupled_nt_xent(stub, -1.307, record=None) is None     # prediction right, code not written yet
    with pytest.raises(AssertionError):
        check_decoupled_nt_xent(_decoupled_answer, -2.0, record=None, strict=True)


@pytest.mark.parametrize("answer, hint", [
    (solutions.nt_xent, "this is NT-Xent"),
    (lambda z_1, z_2, temperature=0.5: 2 * len(z_1) * _decoupled_answer(z_1, z_2, temperature), "summed"),
    (lambda z_1, z_2, temperature=0.5: _decoupled_answer(z_1, z_2, temperature) + 0.01, None),
    (lambda z_1, z_2, temperature=0.5: losses.nt_xent(z_1, z_2, temperature) - 1.0, "from equimod_edu.losses"),
    (lambda z_1, z_2, temperature=0.5: F.cross_entropy(*losses._nt_xent_logits(z_1, z_2, temperature, False)),
     "losses._nt_xent_logits"),
])
def test_wrong_decoupled_losses_are_refused(answer, hint, capsys):
    from equimod_edu.exercises import check_decoupled_nt_xent
    assert check_decoupled_nt_xent(answer, None, record=None) is False
    out = capsys.readouterr().out
    if hint:
        assert hint in out
    with pytest.raises(AssertionError):
        check_decoupled_nt_xent(answer, None, record=None, strict=True)
