"""Exercises of the notebooks: check functions that tell a learner whether an answer is right.

    from equimod_edu.exercises import check_nt_xent
    def my_nt_xent(z_1, z_2, temperature=0.5):
        raise NotImplementedError            # the learner writes this
    check_nt_xent(my_nt_xent)                # prints "not implemented yet", or what is right or wrong

Every ``check_*`` compares the learner's answer with the library (``losses.nt_xent``,
``losses.equivariance_gain``, ``losses.equivariance_loss``) on random inputs of several shapes,
and prints one helpful message. It never raises (a notebook must run top to bottom with the stub
in place): it returns True (right), False (wrong) or None (not implemented yet). Pass
``strict=True`` to raise AssertionError on a wrong answer instead (for a teacher's own tests).

Solutions, for teachers: :data:`solutions` (``solutions.nt_xent``, ``solutions.equivariance_gain``,
``solutions.equivariance_loss``), written from scratch in plain PyTorch (``losses.py`` is the
reference implementation, with distributed negatives); ``print(solutions.source("nt_xent"))``
shows one.
"""

from __future__ import annotations

import inspect
import math
import types
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import losses

__all__ = ["check_nt_xent", "check_equivariance_gain", "check_equivariance_loss", "check_prediction",
           "solutions"]


# ============================================================================================
# Solutions (for teachers)
# ============================================================================================
def _solution_nt_xent(z_1: torch.Tensor, z_2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent: each of the 2N vectors must find its partner among the 2N - 1 others."""
    n = z_1.shape[0]
    z = F.normalize(torch.cat([z_1, z_2]).float(), dim=1)          # (2N, D), unit vectors
    logits = z @ z.T / temperature                                  # (2N, 2N) cosines / T
    logits.fill_diagonal_(float("-inf"))                            # a vector is not its own negative
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # i <-> i + N
    return F.cross_entropy(logits, partner)                         # mean of -log softmax[partner]


def _solution_equivariance_gain(y: torch.Tensor, y_hat: torch.Tensor, y_o: torch.Tensor) -> torch.Tensor:
    """Per sample: how much closer the prediction is to the view than the original is."""
    return F.cosine_similarity(y.float(), y_hat.float(), dim=1) - F.cosine_similarity(y.float(), y_o.float(), dim=1)


def _solution_equivariance_loss(y_1: torch.Tensor, y_2: torch.Tensor, y_hat_1: torch.Tensor, y_hat_2: torch.Tensor,
                                temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE over [y_1; y_2; y_hat_1; y_hat_2]: y_k^i and its prediction y_hat_k^i are partners."""
    n2 = 2 * y_1.shape[0]
    v = F.normalize(torch.cat([y_1, y_2, y_hat_1, y_hat_2]).float(), dim=1)   # (4N, D)
    logits = v @ v.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n2, 2 * n2), torch.arange(0, n2)]).to(v.device)
    return F.cross_entropy(logits, partner)


def _source(name: str) -> str:
    return inspect.getsource({"nt_xent": _solution_nt_xent, "equivariance_gain": _solution_equivariance_gain,
                              "equivariance_loss": _solution_equivariance_loss}[name])


#: The teachers' solutions: solutions.nt_xent, solutions.equivariance_gain, solutions.equivariance_loss,
#: solutions.source(name) (their code as text), solutions.forgotten_augmentation (what to expect).
solutions = types.SimpleNamespace(
    nt_xent=_solution_nt_xent,
    equivariance_gain=_solution_equivariance_gain,
    equivariance_loss=_solution_equivariance_loss,
    source=_source,
    forgotten_augmentation=(
        "There is no fixed answer: check_prediction grades the guess against the measurement of the model at "
        "hand. The argument to discuss: NT-Xent rewards features that do not change between the two views, so "
        "training should remove what the augmentations change most strongly and most often (colour jitter: "
        "brightness, contrast, saturation, hue; grayscale; the crop). The paper's case is colour (the hue). "
        "Whether a given training budget has got there is an empirical question: on short CPU budgets the "
        "backbone may still be *learning* some colour (notebook 2 compares SimCLR with its no-colour twin), so the "
        "augmentations it has become most invariant to need not be the colour ones. Ask the learners to "
        "explain the ranking the cell prints, not to match this text."),
)


# ============================================================================================
# The checking machinery
# ============================================================================================
def _say(message: str) -> None:
    print(message)


def _call(fn: Callable, *args, **kwargs):
    """(result, None), or (None, "not implemented") / (None, "error text")."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, "not implemented"
    except Exception as error:  # the learner's bug: report it, do not stop the notebook
        return None, f"{type(error).__name__}: {error}"


def _close(a, b, tol: float) -> bool:
    try:
        a = torch.as_tensor(a).detach().float().cpu()
    except (TypeError, ValueError, RuntimeError):
        return False
    b = torch.as_tensor(b).detach().float().cpu()
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a, b, atol=tol, rtol=tol))


def _verdict(ok: bool, strict: bool, message: str) -> bool:
    _say(message)
    if strict and not ok:
        raise AssertionError(message)
    return ok


def _check_function(name: str, fn: Callable, cases: Sequence[tuple[tuple, dict]], reference: Callable,
                    mistakes: dict[str, Callable], strict: bool, tol: float) -> Optional[bool]:
    """Run fn on each case, compare with reference; name the likely mistake when one matches."""
    for k, (args, kwargs) in enumerate(cases):
        got, problem = _call(fn, *args, **kwargs)
        if problem == "not implemented":
            _say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, then run this "
                 f"cell again).")
            return None
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        if problem is not None:
            return _verdict(False, strict, f"{name}: your function raised {problem}\n  on inputs of shapes "
                                           f"{shapes} with {kwargs or 'default arguments'}.")
        expected = reference(*args, **kwargs)
        if _close(got, expected, tol):
            continue
        got_shape = tuple(torch.as_tensor(got).shape) if _call(torch.as_tensor, got)[1] is None else type(got).__name__
        hint = next((why for why, wrong in mistakes.items() if _close(got, wrong(*args, **kwargs), tol)), None)
        message = (f"{name}: not yet right (case {k + 1} of {len(cases)}: inputs {shapes}, {kwargs or 'defaults'}).\n"
                   f"  expected {_short(expected)} (shape {tuple(expected.shape)}), got {_short(got)} "
                   f"(shape {got_shape}).")
        if hint:
            message += f"\n  Hint: your result matches a common mistake: {hint}."
        return _verdict(False, strict, message)
    return _verdict(True, strict, f"{name}: correct on {len(cases)} random cases (matches equimod_edu.losses). Well done!")


def _short(value) -> str:
    try:
        t = torch.as_tensor(value).detach().float().cpu()
    except (TypeError, ValueError, RuntimeError):
        return repr(value)[:60]
    if t.numel() == 1:
        return f"{t.item():.4f}"
    return "[" + ", ".join(f"{v:.3f}" for v in t.flatten()[:4].tolist()) + (", ...]" if t.numel() > 4 else "]")


def _random(shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ============================================================================================
# NT-Xent
# ============================================================================================
def _nt_xent_cases():
    cases = []
    for seed, (n, d, temperature) in enumerate([(4, 8, 0.5), (6, 16, 0.5), (3, 5, 0.1), (8, 32, 1.0)]):
        z_1 = _random((n, d), 10 * seed)
        z_2 = z_1 + 0.5 * _random((n, d), 10 * seed + 1)  # related views: the positive is findable
        cases.append(((z_1, z_2), {"temperature": temperature}))
    return cases


def _nt_xent_mistakes():
    def no_normalise(z_1, z_2, temperature=0.5):
        n, z = z_1.shape[0], torch.cat([z_1, z_2]).float()
        logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
        return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    def keeps_self(z_1, z_2, temperature=0.5):
        n, z = z_1.shape[0], F.normalize(torch.cat([z_1, z_2]).float(), dim=1)
        return F.cross_entropy(z @ z.T / temperature, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    def one_direction(z_1, z_2, temperature=0.5):
        a, b = F.normalize(z_1.float(), dim=1), F.normalize(z_2.float(), dim=1)
        return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))

    def no_temperature(z_1, z_2, temperature=0.5):
        return losses.nt_xent(z_1, z_2, 1.0, gather=False)

    def times_temperature(z_1, z_2, temperature=0.5):
        return losses.nt_xent(z_1, z_2, 1 / temperature, gather=False)

    def summed(z_1, z_2, temperature=0.5):
        return 2 * z_1.shape[0] * losses.nt_xent(z_1, z_2, temperature, gather=False)

    return {"the vectors are not L2-normalised (NT-Xent uses the cosine similarity: F.normalize first)": no_normalise,
            "each vector's similarity with itself is left among the negatives (mask the diagonal with -inf)":
                keeps_self,
            "only the 2-view N x N similarities are used; the other N - 1 vectors of the same view are negatives "
            "too (use the full 2N x 2N matrix)": one_direction,
            "the temperature is ignored (divide the cosines by it)": no_temperature,
            "the cosines are multiplied by the temperature (divide them by it)": times_temperature,
            "the loss is summed over the 2N anchors (take the mean)": summed}


def check_nt_xent(fn: Callable, strict: bool = False) -> Optional[bool]:
    """Check the learner's ``fn(z_1, z_2, temperature=0.5) -> ()`` against ``losses.nt_xent``.

    Inputs (N, D) float for several N, D and temperatures. Returns True / False, or None when fn
    still raises NotImplementedError; prints why and, for common mistakes, a hint.
    """
    return _check_function("NT-Xent", fn, _nt_xent_cases(),
                           lambda z_1, z_2, temperature=0.5: losses.nt_xent(z_1, z_2, temperature, gather=False),
                           _nt_xent_mistakes(), strict, tol=1e-4)


# ============================================================================================
# Equivariance gain and loss
# ============================================================================================
def _gain_cases():
    cases = []
    for seed, (n, d) in enumerate([(5, 8), (1, 3), (16, 128)]):
        y_o = _random((n, d), 100 + seed)
        y = y_o + 0.8 * _random((n, d), 200 + seed)
        y_hat = y + 0.5 * _random((n, d), 300 + seed)
        cases.append(((y, y_hat, y_o), {}))
    return cases


def _gain_mistakes():
    cos = lambda a, b: F.cosine_similarity(a.float(), b.float(), dim=1)  # noqa: E731
    return {"the sign is flipped: the gain is cos(y, y_hat) - cos(y, y_o), positive when the prediction beats "
            "'nothing moved'": lambda y, y_hat, y_o: cos(y, y_o) - cos(y, y_hat),
            "dot products instead of cosines (normalise, or use F.cosine_similarity)":
                lambda y, y_hat, y_o: (y * y_hat).sum(1) - (y * y_o).sum(1),
            "the result is averaged over the batch; return one gain per sample, shape (N,)":
                lambda y, y_hat, y_o: (cos(y, y_hat) - cos(y, y_o)).mean(),
            "only cos(y, y_hat) is returned; subtract the invariant baseline cos(y, y_o)":
                lambda y, y_hat, y_o: cos(y, y_hat),
            "cos(y_hat, y_o) is used where cos(y, y_o) belongs (the baseline compares the view with its original)":
                lambda y, y_hat, y_o: cos(y, y_hat) - cos(y_hat, y_o)}


def check_equivariance_gain(fn: Callable, strict: bool = False) -> Optional[bool]:
    """Check ``fn(y, y_hat, y_o) -> (N,)`` against ``losses.equivariance_gain`` (three (N, D) inputs)."""
    return _check_function("equivariance gain", fn, _gain_cases(), losses.equivariance_gain, _gain_mistakes(),
                           strict, tol=1e-5)


def _equi_loss_cases():
    cases = []
    for seed, (n, d, temperature) in enumerate([(4, 8, 0.2), (3, 16, 0.5), (6, 4, 0.2)]):
        y_1, y_2 = _random((n, d), 400 + seed), _random((n, d), 500 + seed)
        cases.append(((y_1, y_2, y_1 + 0.3 * _random((n, d), 600 + seed), y_2 + 0.3 * _random((n, d), 700 + seed)),
                      {"temperature": temperature}))
    return cases


def _equi_loss_mistakes():
    def views_as_pairs(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
        return losses.nt_xent(y_1, y_2, temperature, gather=False)

    def predictions_only_as_keys(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
        y = F.normalize(torch.cat([y_1, y_2]).float(), dim=1)
        y_hat = F.normalize(torch.cat([y_hat_1, y_hat_2]).float(), dim=1)
        return F.cross_entropy(y @ y_hat.T / temperature, torch.arange(len(y)))

    return {"the pairs are (y_1, y_2) as in SimCLR; here each view y_k is paired with its prediction y_hat_k":
                views_as_pairs,
            "only the 2N x 2N similarities between views and predictions are used; the loss is an InfoNCE over all "
            "4N vectors [y_1; y_2; y_hat_1; y_hat_2] (self excluded)": predictions_only_as_keys}


def check_equivariance_loss(fn: Callable, strict: bool = False) -> Optional[bool]:
    """Check ``fn(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2) -> ()`` against ``losses.equivariance_loss``."""
    return _check_function(
        "equivariance loss", fn, _equi_loss_cases(),
        lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature, gather=False),
        _equi_loss_mistakes(), strict, tol=1e-4)


# ============================================================================================
# Predict, then measure
# ============================================================================================
def check_prediction(prediction: Optional[str], measured: dict[str, float], question: str = "",
                     higher_means: str = "forgotten", strict: bool = False) -> Optional[bool]:
    """Compare a learner's guess with a measurement: is the guess the key with the largest value?

    prediction: a key of `measured` (e.g. "hue"), or None (not answered yet). measured: name ->
    a number where larger means more `higher_means` (e.g. how much less of each augmentation the
    trained features keep than the random-init ones). Prints the ranking; returns True when the
    guess is the top key, False otherwise, None when unanswered. The answer is what the model at
    hand measures, not a fixed string: a short fast-mode run may rank things differently.
    """
    ranking = sorted(measured, key=lambda k: -measured[k] if math.isfinite(measured[k]) else math.inf)
    table = "\n".join(f"  {i + 1}. {k:<12} {measured[k]:+.3f}" for i, k in enumerate(ranking))
    title = f"{question}\n" if question else ""
    if prediction is None:
        _say(f"{title}No prediction yet: set it to one of {sorted(measured)} and run the cell again.")
        return None
    key = str(prediction).strip().lower()
    if key not in measured:
        return _verdict(False, strict, f"{title}{prediction!r} is not one of the measured names {sorted(measured)}.")
    ok = key == ranking[0]
    verdict = ("Right: " if ok else f"Not this time: the measurement puts {ranking[0]!r} first, yours is "
               f"number {ranking.index(key) + 1}. ")
    return _verdict(ok, strict, f"{title}{verdict}The measurement, most {higher_means} first:\n{table}")
