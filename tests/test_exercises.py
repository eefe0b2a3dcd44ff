"""Exercise checks: they accept the solutions, reject wrong answers with a hint, and never stop a notebook."""

import pytest
import torch
import torch.nn.functional as F

from equimod_edu import exercises, losses
from equimod_edu.exercises import (check_equivariance_gain, check_equivariance_loss, check_nt_xent, check_prediction,
                                   solutions)


def stub(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- the solutions pass, the library passes
@pytest.mark.parametrize("check, answer", [
    (check_nt_xent, solutions.nt_xent),
    (check_nt_xent, lambda z_1, z_2, temperature=0.5: losses.nt_xent(z_1, z_2, temperature)),
    (check_equivariance_gain, solutions.equivariance_gain),
    (check_equivariance_gain, losses.equivariance_gain),
    (check_equivariance_loss, solutions.equivariance_loss),
    (check_equivariance_loss, lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature)),
])
def test_right_answers_are_accepted(check, answer, capsys):
    assert check(answer) is True
    assert "correct" in capsys.readouterr().out
    assert check(answer, strict=True) is True


def test_solutions_are_written_out_not_calls_to_the_library():
    for name in ("nt_xent", "equivariance_gain", "equivariance_loss"):
        source = solutions.source(name)
        assert source.startswith("def ") and "losses." not in source
    assert "hue" in solutions.forgotten_augmentation and "measurement" in solutions.forgotten_augmentation


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
