"""Loss exercises.

They accept the teachers' solutions, refuse every function of equimod_edu.losses however it is reached, reject
wrong answers with a hint, judge the predicted numbers, and never stop a notebook.
"""

import functools
import importlib
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import teachers_solutions

import equimod_edu
from equimod_edu import losses
from equimod_edu import losses as L
from equimod_edu.loss_exercises import (
    OTHER_VIEW_QUESTION,
    _contrastive64,
    check_decoupled_nt_xent,
    check_equivariance_gain,
    check_equivariance_loss,
    check_loss_floors,
    check_loss_without_other_view,
    check_nt_xent,
    decoupled_toy,
    loss_floor_toy,
)

solutions = teachers_solutions()
pytestmark = pytest.mark.usefixtures("scratch_working_folder")   # predictions are recorded in runs/ there
RECORDS = Path("runs") / "predictions.json"   # in the working folder (a scratch folder here)


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
    from equimod_edu import losses as hidden  # invisible to a reading of the globals: refused at the call
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
    from equimod_edu.losses import _nt_xent_logits  # run at the call: the refused version
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
    (check_equivariance_gain,
     lambda y, y_hat, y_o: losses.equivariance_gain(y, y_hat, y_o) + 0 * losses.info_nce_chance(2), "losses."),
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
    from equimod_edu import displacement_exercise, judge, loss_exercises, predictions

    exercise_modules = (judge, predictions, loss_exercises, displacement_exercise)
    assert not [m.__name__ for m in exercise_modules if hasattr(m, "solutions")]
    assert not (Path(equimod_edu.__file__).parent / "solutions.py").exists()
    source = Path(solutions.__file__).read_text()
    assert "losses." not in source.split('"""', 2)[2].replace("equimod_edu/losses.py", "")
    for name in ("nt_xent", "equivariance_gain", "equivariance_loss", "displacement_map"):
        assert callable(getattr(solutions, name))


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
    assert check_loss_without_other_view(stub, None) is None
    assert "not implemented yet" in capsys.readouterr().out
    assert check_loss_without_other_view(_loss_without_other_view, None) is None
    assert "correct" in capsys.readouterr().out
    assert check_loss_without_other_view(_loss_without_other_view, math.log(2)) is True
    out = capsys.readouterr().out
    none, invariant = (float(re.search(rf"{c}: (\d\.\d+)", out).group(1)) for c in ("none", "invariant"))
    assert none < 0.01 and abs(invariant - math.log(2)) < 0.01          # the toy reaches the floor, not below
    first = json.loads(RECORDS.read_text())[OTHER_VIEW_QUESTION]
    assert first["answer"] == f"{math.log(2):.4f}" and first["right"] is True
    assert check_loss_without_other_view(_loss_without_other_view, math.log(3), toy=False) is False
    out = capsys.readouterr().out
    assert "log 3 counts three candidates" in out and "Your first answer" in out
    full = lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature)  # noqa: E731
    assert check_loss_without_other_view(full, math.log(2), toy=False) is False
    assert "from equimod_edu.losses" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        check_loss_without_other_view(full, None, strict=True)


# ------------------------------------------------------- notebook 2: the decoupled loss, and its value at alignment
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
    generator = torch.Generator().manual_seed(0)
    for n, d, temperature in ((2, 3, 0.5), (5, 8, 0.1), (3, 4, 1.0)):
        z_1, z_2 = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)
        by_hand = float(_decoupled_by_hand(z_1, z_2, temperature))
        assert float(_contrastive64(z_1, z_2, temperature)) == pytest.approx(by_hand, abs=1e-9)
        nt = float(_contrastive64(z_1, z_2, temperature, hide_positive=False))
        assert nt == pytest.approx(float(losses.nt_xent(z_1, z_2, temperature)), abs=1e-5)   # the switch gives NT-Xent
    z_1, z_2, temperature = decoupled_toy()
    assert float(_contrastive64(z_1, z_2, temperature)) == pytest.approx(-2 + math.log(2), abs=1e-12)
    assert float(losses.nt_xent(z_1, z_2, temperature)) == pytest.approx(0.2395, abs=1e-4)


def test_check_decoupled_nt_xent_accepts_the_answer_and_records_the_first_prediction(tmp_path, capsys):
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
    assert check_decoupled_nt_xent(answer, None, record=None) is False
    out = capsys.readouterr().out
    if hint:
        assert hint in out
    with pytest.raises(AssertionError):
        check_decoupled_nt_xent(answer, None, record=None, strict=True)
