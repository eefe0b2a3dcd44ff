"""The loss exercises of the notebooks: write a loss (or a gain) in plain PyTorch, predict a value.

    from equimod_edu.loss_exercises import check_nt_xent
    def my_nt_xent(z_1, z_2, temperature=0.5):
        raise NotImplementedError            # the learner writes this
    check_nt_xent(my_nt_xent)                # prints "not implemented yet", or what is right or wrong

Code exercises (``check_nt_xent``, ``check_equivariance_gain``, ``check_equivariance_loss``, and the
two variants ``check_decoupled_nt_xent``, ``check_loss_without_other_view``) compare the learner's
function with a reference on random inputs of several shapes, name the usual mistakes, and refuse
every function of ``equimod_edu.losses``, public or private (``losses._nt_xent_logits`` too), however
it is reached: the exercise is to write it. Reasoning exercises check a number against a
measurement: ``check_loss_floors`` (why the equivariance loss forbids invariance, verified on a toy
by ``loss_floor_toy``) and the predicted values of the two variants, whose first answers are recorded
as predictions.py records them.

The teachers' solutions and the answers to every "Try it" of the notebooks are not part of this
package: they live in the repository's ``teachers/`` folder.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from . import equivariance, losses
from .judge import check_function, judge_number, library_functions, randn, say, verdict
from .predictions import PREDICTIONS_FILE, first_answer

__all__ = ["check_nt_xent", "check_equivariance_gain", "check_equivariance_loss", "check_loss_floors",
           "loss_floor_toy", "check_loss_without_other_view", "check_decoupled_nt_xent", "decoupled_toy"]


# ============================================================================================
# NT-Xent
# ============================================================================================
def _nt_xent_cases():
    cases = []
    for seed, (n, d, temperature) in enumerate([(4, 8, 0.5), (6, 16, 0.5), (3, 5, 0.1), (8, 32, 1.0)]):
        z_1 = randn((n, d), 10 * seed)
        z_2 = z_1 + 0.5 * randn((n, d), 10 * seed + 1)  # related views: the positive is findable
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
    still raises NotImplementedError; prints why and, for common mistakes, a hint. A call of any
    function of ``equimod_edu.losses``, public or private (``losses._nt_xent_logits``), is refused.
    """
    return check_function("NT-Xent", fn, _nt_xent_cases(),
                          lambda z_1, z_2, temperature=0.5: losses.nt_xent(z_1, z_2, temperature, gather=False),
                          _nt_xent_mistakes(), strict, tol=1e-4, forbidden=library_functions(losses, "losses"),
                          asked="losses.nt_xent")


# ============================================================================================
# Equivariance gain and loss
# ============================================================================================
def _gain_cases():
    cases = []
    for seed, (n, d) in enumerate([(5, 8), (1, 3), (16, 128)]):
        y_o = randn((n, d), 100 + seed)
        y = y_o + 0.8 * randn((n, d), 200 + seed)
        y_hat = y + 0.5 * randn((n, d), 300 + seed)
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
    """Check ``fn(y, y_hat, y_o) -> (N,)`` against ``losses.equivariance_gain`` (three (N, D) inputs).

    Refused: any function of ``equimod_edu.losses`` and ``equivariance.prediction_quality``.
    """
    return check_function("equivariance gain", fn, _gain_cases(),
                          lambda y, y_hat, y_o: losses.equivariance_gain(y, y_hat, y_o), _gain_mistakes(),
                          strict, tol=1e-5, asked="losses.equivariance_gain",
                          forbidden={**library_functions(losses, "losses"),
                                      "equivariance.prediction_quality": (equivariance, "prediction_quality")})


def _equi_loss_cases():
    cases = []
    for seed, (n, d, temperature) in enumerate([(4, 8, 0.2), (3, 16, 0.5), (6, 4, 0.2)]):
        y_1, y_2 = randn((n, d), 400 + seed), randn((n, d), 500 + seed)
        cases.append(((y_1, y_2, y_1 + 0.3 * randn((n, d), 600 + seed), y_2 + 0.3 * randn((n, d), 700 + seed)),
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
    """Check ``fn(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2) -> ()`` against ``losses.equivariance_loss``.

    Refused: any function of ``equimod_edu.losses``, public or private (``losses._info_nce_logits``).
    """
    return check_function(
        "equivariance loss", fn, _equi_loss_cases(),
        lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature, gather=False),
        _equi_loss_mistakes(), strict, tol=1e-4, forbidden=library_functions(losses, "losses"),
        asked="losses.equivariance_loss")


# ============================================================================================
# Why the equivariance loss forbids invariance: two lower bounds, and a toy that reaches them
# ============================================================================================
def _anchor_losses(y_1, y_2, y_hat_1, y_hat_2, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor loss of the equivariance InfoNCE: (y anchors (2N,), y_hat anchors (2N,))."""
    logits, target = losses.equivariance_logits(y_1, y_2, y_hat_1, y_hat_2, temperature, gather=False)
    per_anchor = F.cross_entropy(logits, target, reduction="none")
    n2 = 2 * y_1.shape[0]
    return per_anchor[:n2], per_anchor[n2:]


def loss_floor_toy(constraint: str = "none", n_images: int = 4, dim: int = 16, temperature: float = 0.05,
                   steps: int = 600, seed: int = 0) -> dict[str, float]:
    """Minimise EquiMod's equivariance loss over free vectors under a constraint; the per-anchor means it reaches.

    Every vector is a free parameter (n_images images, dim dimensions): y_1, y_2 (the views'
    embeddings) and y_hat_1, y_hat_2 (the predictions). constraint: "none"; "invariant": y_2 = y_1
    (an embedding invariant to the augmentation); "ignores_t": y_hat_2 = y_hat_1 (a predictor that
    does not read t, so both views of an image get the same prediction). Adam for `steps` steps. A
    low temperature makes the other images' vectors negligible, so the numbers approach the bounds.
    Returns {"y anchors", "y_hat anchors", "mean"}: mean loss per anchor (nats).
    """
    if constraint not in ("none", "invariant", "ignores_t"):
        raise ValueError(f"constraint must be 'none', 'invariant' or 'ignores_t', got {constraint!r}")
    generator = torch.Generator().manual_seed(seed)
    vectors = {k: torch.randn(n_images, dim, generator=generator).requires_grad_()
               for k in ("y_1", "y_2", "h_1", "h_2")}
    optimizer = torch.optim.Adam(vectors.values(), lr=0.05)

    def embeddings():
        y_1, h_1 = vectors["y_1"], vectors["h_1"]
        y_2 = y_1 if constraint == "invariant" else vectors["y_2"]
        h_2 = h_1 if constraint == "ignores_t" else vectors["h_2"]
        return y_1, y_2, h_1, h_2

    for _ in range(steps):
        y_anchors, h_anchors = _anchor_losses(*embeddings(), temperature)
        loss = torch.cat([y_anchors, h_anchors]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        y_anchors, h_anchors = _anchor_losses(*embeddings(), temperature)
    return {"y anchors": float(y_anchors.mean()), "y_hat anchors": float(h_anchors.mean()),
            "mean": float(torch.cat([y_anchors, h_anchors]).mean())}


def check_loss_floors(if_invariant: Optional[float], if_t_ignored: Optional[float], strict: bool = False,
                      toy: bool = True) -> Optional[bool]:
    """Check two lower bounds of the equivariance loss (nats per anchor), then show the toy reaching them.

    if_invariant: the lowest possible mean loss of the y anchors of an image when y_1 = y_2.
    if_t_ignored: the lowest possible loss of any anchor when y_hat_1 = y_hat_2. Either None: not
    answered yet. toy=True also runs ``loss_floor_toy`` for the three constraints and prints it.
    """
    if if_invariant is None or if_t_ignored is None:
        say("loss floors: not answered yet (set both numbers, e.g. math.log(5), then run the cell again).")
        return None
    wrong = []
    for name, value, right, hints in (
            ("if_invariant", if_invariant, math.log(3),
             {math.log(2): "log 2 counts one rival of the positive; the other view's prediction y_hat_2 is a rival "
                           "too, and the two y anchors of an image share one denominator",
              0.0: "0 would need the positive to beat every rival by far; here a rival equals the anchor itself"}),
            ("if_t_ignored", if_t_ignored, math.log(2),
             {math.log(3): "log 3 is the invariant case; here only the two predictions coincide, so one rival ties "
                           "with the positive",
              0.0: "0 would need the positive to beat every rival by far; here a rival is identical to it"})):
        try:
            value = float(value)
        except (TypeError, ValueError):
            wrong.append(f"{name} must be a number, got {value!r}")
            continue
        if abs(value - right) > 0.01:
            hint = next((why for near, why in hints.items() if abs(value - near) < 0.01), None)
            wrong.append(f"{name} = {value:.4f} is not the bound" + (f" ({hint})" if hint else ""))
    if toy:
        rows = {c: loss_floor_toy(c) for c in ("none", "invariant", "ignores_t")}
        say("The toy: the loss minimised over free vectors (4 images, temperature 0.05), nats per anchor:\n"
            + "\n".join(f"  {c:>10}: y anchors {r['y anchors']:.3f}, y_hat anchors {r['y_hat anchors']:.3f}, "
                          f"mean {r['mean']:.3f}" for c, r in rows.items())
            + f"\n  log 3 = {math.log(3):.3f}, log 2 = {math.log(2):.3f}")
    if wrong:
        return verdict(False, strict, "loss floors: not yet right: " + "; ".join(wrong) + ".")
    return verdict(True, strict, f"loss floors: right: log 3 = {math.log(3):.3f} if y is invariant, log 2 = "
                                 f"{math.log(2):.3f} if y_hat ignores t; the toy never goes below them.")


# ============================================================================================
# Notebook 3, Exercise 2: the equivariance loss without the other view among the negatives
# ============================================================================================
def _loss_without_other_view(y_1, y_2, y_hat_1, y_hat_2, temperature: float = 0.2,
                             reduction: str = "mean") -> torch.Tensor:
    """EquiMod's InfoNCE over [y_1; y_2; y_hat_1; y_hat_2] with y_1^i and y_2^i no longer each other's negative.

    (N, D) x 4 -> () (reduction "mean") or (4N,) per anchor ("none"). The 4N x 4N cosine matrix / T
    has -inf on its diagonal (self) and at (i, N + i), (N + i, i): the two views of image i.
    """
    n = y_1.shape[0]
    v = F.normalize(torch.cat([y_1, y_2, y_hat_1, y_hat_2]).float(), dim=1)
    i = torch.arange(n, device=v.device)
    hidden = torch.eye(4 * n, dtype=torch.bool, device=v.device)
    hidden[i, i + n] = True
    hidden[i + n, i] = True
    logits = (v @ v.T / temperature).masked_fill(hidden, float("-inf"))
    target = torch.cat([i + 2 * n, i + 3 * n, i, i + n])
    return F.cross_entropy(logits, target, reduction=reduction)


def _without_other_view_mistakes():
    def full_loss(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
        return losses.equivariance_loss(y_1, y_2, y_hat_1, y_hat_2, temperature, gather=False)

    def predictions_hidden_too(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
        n = y_1.shape[0]
        v = F.normalize(torch.cat([y_1, y_2, y_hat_1, y_hat_2]).float(), dim=1)
        i = torch.arange(n)
        hidden = torch.eye(4 * n, dtype=torch.bool)
        for a, b in ((i, i + n), (i + 2 * n, i + 3 * n)):
            hidden[a, b] = hidden[b, a] = True
        logits = (v @ v.T / temperature).masked_fill(hidden, float("-inf"))
        return F.cross_entropy(logits, torch.cat([i + 2 * n, i + 3 * n, i, i + n]))

    def one_direction(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2):
        n = y_1.shape[0]
        v = F.normalize(torch.cat([y_1, y_2, y_hat_1, y_hat_2]).float(), dim=1)
        i = torch.arange(n)
        hidden = torch.eye(4 * n, dtype=torch.bool)
        hidden[i, i + n] = True
        logits = (v @ v.T / temperature).masked_fill(hidden, float("-inf"))
        return F.cross_entropy(logits, torch.cat([i + 2 * n, i + 3 * n, i, i + n]))

    return {"this is the full loss: the other view of the same image is still a negative (set the entries between "
            "y_1^i and y_2^i to -inf, like the diagonal)": full_loss,
            "the two predictions y_hat_1^i, y_hat_2^i are hidden from each other too; only the two views' embeddings "
            "y_1^i, y_2^i are": predictions_hidden_too,
            "y_2^i is hidden from the anchor y_1^i, but y_1^i is still a negative of the anchor y_2^i (hide both "
            "entries)": one_direction}


def _floor_of(loss: Callable, constraint: str, n_images: int = 4, dim: int = 16, temperature: float = 0.05,
              steps: int = 300, seed: int = 0) -> float:
    """The lowest value Adam finds for loss(y_1, y_2, y_hat_1, y_hat_2, temperature) over free vectors.

    constraint: "none", or "invariant" (y_2 = y_1: an embedding invariant to the augmentation). The
    setting of ``loss_floor_toy`` (4 images, 16 dimensions, temperature 0.05).
    """
    generator = torch.Generator().manual_seed(seed)
    vectors = {k: torch.randn(n_images, dim, generator=generator).requires_grad_()
               for k in ("y_1", "y_2", "h_1", "h_2")}
    optimizer = torch.optim.Adam(vectors.values(), lr=0.05)

    def value():
        y_2 = vectors["y_1"] if constraint == "invariant" else vectors["y_2"]
        return loss(vectors["y_1"], y_2, vectors["h_1"], vectors["h_2"], temperature=temperature)

    for _ in range(steps):
        optimizer.zero_grad()
        value().backward()
        optimizer.step()
    with torch.no_grad():
        return float(value())


def _check_variant(fn: Callable, strict: bool) -> Optional[bool]:
    """Check ``fn`` against ``_loss_without_other_view`` on random cases; no function of equimod_edu.losses may run."""
    return check_function("loss without the other view", fn, _equi_loss_cases(), _loss_without_other_view,
                          _without_other_view_mistakes(), strict, tol=1e-4,
                          forbidden=library_functions(losses, "losses"), asked="",
                          reference_name="a reference written for this check")


#: The key under which check_loss_without_other_view records the first prediction (runs/predictions.json).
OTHER_VIEW_QUESTION = "Notebook 3, Exercise 2: the floor of the loss without the other view, if y is invariant"


def check_loss_without_other_view(fn: Callable, floor_if_invariant: Optional[float], strict: bool = False,
                                  toy: bool = True, record: Union[None, str, os.PathLike] = PREDICTIONS_FILE,
                                  start_over: bool = False) -> Optional[bool]:
    """Notebook 3, Exercise 2: a variant of the equivariance loss, and a prediction of its floor.

    fn(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2) -> (): EquiMod's InfoNCE over the 4N vectors in
    which the other view of the same image (y_2^i for the anchor y_1^i, and y_1^i for y_2^i) is no
    longer a negative; checked against a reference on random inputs (any function of
    ``equimod_edu.losses`` is refused). floor_if_invariant: the predicted lowest value of this loss
    (nats, mean over the anchors) when y_1 = y_2, or None (not answered yet); the first answer is
    recorded in `record` as predictions.check_prediction records its answers, and shown on later runs.
    Once it is set, the toy minimises the loss over free vectors (your fn if it passed, else the
    reference) with and without that constraint and prints what it reaches. Returns True when both
    are right, False when either is wrong, else None.
    """
    written = _check_variant(fn, strict)
    if floor_if_invariant is None:
        line = first_answer(record, OTHER_VIEW_QUESTION, None, [], None, start_over) if record is not None else ""
        say("floor: not answered yet (set floor_if_invariant to a number, e.g. math.log(5), then run the cell "
            "again; the toy runs once it is set)." + (f"\n{line}" if line else ""))
        return False if written is False else None
    try:
        value = float(floor_if_invariant)
    except (TypeError, ValueError):
        return verdict(False, strict, f"floor: floor_if_invariant must be a number, got {floor_if_invariant!r}.")
    right = math.log(2)
    ok = abs(value - right) <= 0.01
    line = first_answer(record, OTHER_VIEW_QUESTION, f"{value:.4f}", [], ok, start_over) if record is not None else ""
    hints = {0.0: "an invariant y still has a rival equal to a positive: the anchor y_hat_1 has y_2 = y_1 among its "
                  "negatives, and the anchors y_1, y_2 (now one vector) share the candidates y_hat_1 and y_hat_2",
             math.log(3): "log 3 counts three candidates that tie with the positive at best; with y_2 gone, the "
                          "anchor y_1 = y_2 has two: y_hat_1 and y_hat_2",
             math.log(4): "count the candidates that tie with the positive at best, not all of an image's vectors"}
    if toy:
        mine = fn if written else _loss_without_other_view
        whose = "your function" if written else "the reference (your function is not right yet)"
        rows = {c: _floor_of(mine, c) for c in ("none", "invariant")}
        say(f"The toy: {whose} minimised over free vectors (4 images, temperature 0.05), nats per anchor:\n"
            + "\n".join(f"  {c:>10}: {v:.3f}" for c, v in rows.items())
            + f"\n  log 2 = {math.log(2):.3f}, log 3 = {math.log(3):.3f}")
    return judge_number("floor", value, ok, hints, "the floor", f"log 2 = {right:.3f}. Without the other view among "
                        f"the negatives, an invariant y still pays log 2 per anchor: the two views' predictions are "
                        f"rivals for one vector y_1 = y_2.", line, written, strict)


# ============================================================================================
# Notebook 2, Exercise 1: NT-Xent without the positive in its denominator (the decoupled loss)
# ============================================================================================
DECOUPLED_QUESTION = ("Notebook 2, Exercise 1: the decoupled loss on the toy z_1 = z_2 = I (N = 2, orthogonal images, "
                      "temperature 0.5)")


def _contrastive64(z_1, z_2, temperature: float = 0.5, *, hide_positive: bool = True, hide_self: bool = True,
                   positive_term: bool = True, normalise: bool = True) -> torch.Tensor:
    """NT-Xent and its variants in float64: ``(N, D) x 2 -> ()``.

    The mean over the 2N anchors of -s(anchor, positive) + log sum over the candidates k of
    exp s(anchor, k), s = cos / temperature.

    The defaults give the decoupled contrastive loss (Yeh et al. 2022): the candidates are the 2N - 2
    negatives (self and the positive hidden); hide_positive=False gives NT-Xent. The other switches
    make the usual mistakes (self among the candidates, no positive term, dot products).
    """
    n = z_1.shape[0]
    z = torch.cat([torch.as_tensor(z_1), torch.as_tensor(z_2)]).double()
    z = F.normalize(z, dim=1) if normalise else z
    logits = z @ z.T / temperature
    rows, partner = torch.arange(2 * n), torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    hidden = torch.eye(2 * n, dtype=torch.bool) if hide_self else torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    if hide_positive:
        hidden[rows, partner] = True
    denominator = torch.logsumexp(logits.masked_fill(hidden, float("-inf")), dim=1)
    return ((-logits[rows, partner] if positive_term else 0.0) + denominator).mean()


def decoupled_toy() -> tuple[torch.Tensor, torch.Tensor, float]:
    """The toy of the prediction: (z_1, z_2, temperature) = (I, I, 0.5).

    Two orthogonal images, the two views of each equal (perfect alignment).
    """
    return torch.eye(2), torch.eye(2), 0.5


def _decoupled_cases():
    cases = []
    for seed, (n, d, temperature) in enumerate([(4, 8, 0.5), (2, 3, 0.5), (6, 16, 0.1), (8, 32, 1.0)]):
        z_1 = randn((n, d), 900 + 10 * seed)
        cases.append(((z_1, z_1 + 0.5 * randn((n, d), 901 + 10 * seed)), {"temperature": temperature}))
    return cases


_DECOUPLED_MISTAKES = {
    "this is NT-Xent: the positive is still in the denominator (hide it with -inf, like the diagonal; its "
    "similarity enters only as -s(anchor, positive))": dict(hide_positive=False),
    "each vector's similarity with itself is left in the denominator (mask the diagonal with -inf)":
        dict(hide_self=False),
    "the positive's term is missing: the loss of an anchor is -s(anchor, positive) + log of the sum over the "
    "negatives": dict(positive_term=False),
    "the vectors are not L2-normalised (the similarity is the cosine: F.normalize first)": dict(normalise=False),
}


def _decoupled_mistakes() -> dict[str, Callable]:
    """Each common mistake as a function of the case's arguments, for _check_function's hints."""
    mistakes = {why: (lambda *args, _switches=switches, **kwargs: _contrastive64(*args, **kwargs, **_switches))
                for why, switches in _DECOUPLED_MISTAKES.items()}
    mistakes["the loss is summed over the 2N anchors (take the mean)"] = \
        lambda z_1, z_2, **kwargs: 2 * len(z_1) * _contrastive64(z_1, z_2, **kwargs)
    return mistakes


def _check_decoupled_function(fn: Callable, strict: bool) -> Optional[bool]:
    """Check ``fn`` against ``_contrastive64`` on random cases; no function of equimod_edu.losses may run."""
    return check_function("decoupled loss", fn, _decoupled_cases(), _contrastive64, _decoupled_mistakes(), strict,
                          tol=1e-4, forbidden=library_functions(losses, "losses"), asked="",
                          reference_name="a float64 reference")


def check_decoupled_nt_xent(fn: Callable, value_at_alignment: Optional[float], strict: bool = False,
                            record: Union[None, str, os.PathLike] = PREDICTIONS_FILE,
                            start_over: bool = False) -> Optional[bool]:
    """Notebook 2, Exercise 1: NT-Xent with the positive taken out of its denominator, and a prediction.

    fn(z_1, z_2, temperature=0.5) -> (): the decoupled contrastive loss (Yeh et al. 2022): for each of
    the 2N anchors, -s(anchor, positive) + log of the sum of exp s(anchor, k) over the 2N - 2
    negatives k, s = cos / temperature; the mean over the anchors. Checked against a float64
    reference on random inputs; any function of ``equimod_edu.losses`` is refused.
    value_at_alignment: the predicted value of this loss on ``decoupled_toy`` (z_1 = z_2 = I,
    temperature 0.5), or None (not answered yet). The first answer is recorded in `record` as
    predictions.check_prediction records its answers, and shown on later runs. Returns True when both are
    right, False when either is wrong, else None.
    """
    written = _check_decoupled_function(fn, strict)
    z_1, z_2, temperature = decoupled_toy()
    right = float(_contrastive64(z_1, z_2, temperature))
    if value_at_alignment is None:
        line = first_answer(record, DECOUPLED_QUESTION, None, [], None, start_over) if record is not None else ""
        say("prediction: not answered yet (set value_at_alignment to a number, then run the cell again)."
            + (f"\n{line}" if line else ""))
        return False if written is False else None
    try:
        value = float(value_at_alignment)
    except (TypeError, ValueError):
        return verdict(False, strict, f"prediction: value_at_alignment must be a number, got {value_at_alignment!r}.")
    ok = abs(value - right) <= 0.01
    line = first_answer(record, DECOUPLED_QUESTION, f"{value:.4f}", [], ok, start_over) if record is not None else ""
    nt_xent = float(_contrastive64(z_1, z_2, temperature, hide_positive=False))
    shown = f"On the toy: NT-Xent {nt_xent:.4f}, the decoupled loss {right:.4f}"
    if written:
        shown += f" (your function: {float(torch.as_tensor(fn(z_1, z_2, temperature=temperature))):.4f})"
    say(shown + ".")
    hints = {nt_xent: "that is NT-Xent's value on the toy: the decoupled loss takes the positive out of the "
                      "denominator, which leaves the two negatives",
             -1 / temperature: "-s(anchor, positive) = -1 / 0.5 = -2 is right, but the log of the denominator is "
                               "not 0: two negatives (the other image's two views), each at cosine 0",
             1 / temperature - math.log(2): "the sign: the positive's similarity enters with a minus sign, the log "
                                            "of the negatives' sum with a plus",
             math.log(3) - 1 / temperature: "three terms in the denominator; with the anchor and its positive "
                                            "taken out, two candidates remain",
             0.0: "a loss that is the -log of a probability stops at 0; this one is not, so nothing stops it there"}
    return judge_number("prediction", value, ok, hints, "the value", f"-1/0.5 + log 2 = {right:.4f}, below 0. Without "
                        f"the positive in its denominator the loss is no longer the -log of a probability, and "
                        f"perfect alignment does not bring it to 0.", line, written, strict)
