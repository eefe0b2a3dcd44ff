"""Exercises of the notebooks: check functions that tell a learner whether an answer is right.

    from equimod_edu.exercises import check_nt_xent
    def my_nt_xent(z_1, z_2, temperature=0.5):
        raise NotImplementedError            # the learner writes this
    check_nt_xent(my_nt_xent)                # prints "not implemented yet", or what is right or wrong

Code exercises (``check_nt_xent``, ``check_equivariance_gain``, ``check_equivariance_loss``,
``check_displacement_map``) compare the learner's function with a reference on random inputs of
several shapes, name the usual mistakes, and **refuse an answer that calls the library function it
asks for** (``losses.nt_xent`` in ``my_nt_xent``...): the exercise is to write it. Reasoning
exercises check a number or a guess against a measurement: ``check_loss_floors`` (why the
equivariance loss forbids invariance, verified on a toy by :func:`loss_floor_toy`) and
``check_prediction`` (predict, then measure). A check never raises (a notebook must run top to
bottom with the stub in place): it returns True (right), False (wrong) or None (not answered yet).
``strict=True`` raises AssertionError on a wrong answer instead (for a teacher's own tests).

The teachers' solutions and the answers to every "Try it" of the notebooks are not part of this
package: they live in the repository's ``teachers/`` folder.
"""

from __future__ import annotations

import builtins
import math
import types
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import equivariance, losses

__all__ = ["check_nt_xent", "check_equivariance_gain", "check_equivariance_loss", "check_displacement_map",
           "check_loss_floors", "loss_floor_toy", "check_prediction"]


# ============================================================================================
# The checking machinery
# ============================================================================================
def _say(message: str) -> None:
    print(message)


class _LibraryCalled(Exception):
    """Raised, during a check, by a library function the learner was asked to write."""


def _call(fn: Callable, *args, **kwargs):
    """(result, None), or (None, "not implemented") / (None, "library: name") / (None, "error text")."""
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, "not implemented"
    except _LibraryCalled as called:
        return None, f"library: {called}"
    except Exception as error:  # the learner's bug: report it, do not stop the notebook
        return None, f"{type(error).__name__}: {error}"


def _code_names(fn: Callable) -> set[str]:
    """Every global or attribute name fn's code (nested functions included) refers to."""
    names, stack = set(), [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is not None:
            names.update(code.co_names)
            stack.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    return names


def referenced_library(fn: Callable, forbidden: dict[str, object]) -> Optional[str]:
    """The name of a `forbidden` object (display name -> function) that fn is or refers to, else None.

    Found through fn's globals, attributes of the modules among them (``losses.nt_xent``) and its
    closure. The checks also make the forbidden functions raise while the learner's code runs, which
    catches what this reading of the code cannot see (e.g. an import inside the function).
    """
    by_id = {id(obj): name for name, obj in forbidden.items()}
    if id(fn) in by_id:
        return by_id[id(fn)]
    names = _code_names(fn)
    scope = {**vars(builtins), **getattr(fn, "__globals__", {})}
    values = [scope[name] for name in names if name in scope]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    for value in values:
        if id(value) in by_id:
            return by_id[id(value)]
        if isinstance(value, types.ModuleType):
            for name in names:
                if id(getattr(value, name, None)) in by_id:
                    return by_id[id(getattr(value, name))]
    return None


def _call_refusing(fn: Callable, forbidden: dict[str, tuple[object, str]], *args, **kwargs):
    """_call with each forbidden ``owner.attribute`` replaced, for the call, by one that raises.

    owner: a module, or an object (a model) whose method is shadowed on the instance and restored.
    """
    own = {name: (attr in vars(owner), getattr(owner, attr)) for name, (owner, attr) in forbidden.items()}

    def refuse(name):
        def refused(*_, **__):
            raise _LibraryCalled(name)
        return refused

    try:
        for name, (owner, attr) in forbidden.items():
            setattr(owner, attr, refuse(name))
        return _call(fn, *args, **kwargs)
    finally:
        for name, (owner, attr) in forbidden.items():
            was_own, value = own[name]
            if was_own:
                setattr(owner, attr, value)
            else:
                delattr(owner, attr)


def _refusal(exercise: str, called: str, strict: bool) -> bool:
    return _verdict(False, strict, f"{exercise}: your function calls {called}, the function this exercise asks you "
                                   f"to write. Write it yourself, in plain PyTorch; the check compares it with "
                                   f"{called} for you.")


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
                    mistakes: dict[str, Callable], strict: bool, tol: float,
                    forbidden: dict[str, tuple[object, str]]) -> Optional[bool]:
    """Run fn on each case, compare with reference; name the likely mistake when one matches.

    forbidden: display name -> (module, attribute) of the library functions fn must not call.
    """
    called = referenced_library(fn, {shown: getattr(owner, attr) for shown, (owner, attr) in forbidden.items()})
    if called is not None:
        return _refusal(name, called, strict)
    for k, (args, kwargs) in enumerate(cases):
        got, problem = _call_refusing(fn, forbidden, *args, **kwargs)
        if problem == "not implemented":
            _say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, then run this "
                 f"cell again).")
            return None
        if problem is not None and problem.startswith("library: "):
            return _refusal(name, problem[len("library: "):], strict)
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
                           _nt_xent_mistakes(), strict, tol=1e-4,
                           forbidden={"losses.nt_xent": (losses, "nt_xent"),
                                      "losses.equivariance_loss": (losses, "equivariance_loss")})


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
    return _check_function("equivariance gain", fn, _gain_cases(),
                           lambda y, y_hat, y_o: losses.equivariance_gain(y, y_hat, y_o), _gain_mistakes(),
                           strict, tol=1e-5,
                           forbidden={"losses.equivariance_gain": (losses, "equivariance_gain"),
                                      "equivariance.prediction_quality": (equivariance, "prediction_quality")})


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
        _equi_loss_mistakes(), strict, tol=1e-4,
        forbidden={"losses.equivariance_loss": (losses, "equivariance_loss"), "losses.nt_xent": (losses, "nt_xent"),
                   "losses.equivariance_logits": (losses, "equivariance_logits")})


# ============================================================================================
# What a linear module can express: its displacement map
# ============================================================================================
def _model_calls(model) -> dict[str, tuple[object, str]]:
    """The model's own ways to predict, refused while the learner's code reads its weights."""
    calls = {"model.predict": (model, "predict")}
    for part in ("param_encoder", "predictor"):
        module = getattr(model, part, None)
        if module is not None:
            calls[f"model.{part}(...)"] = (module, "forward")
    calls["equivariance.displacement_map"] = (equivariance, "displacement_map")
    calls["equivariance.column_weights"] = (equivariance, "column_weights")
    return calls


def check_displacement_map(fn: Callable, model, strict: bool = False, cases: int = 4) -> Optional[bool]:
    """Check ``fn(model) -> M (y_dim, param_dim)`` such that y_hat(y_o, t) - y_hat(y_o, t') = M (t - t').

    model: a trained EquiModModel with the paper's linear predictor (put in eval mode here). The
    learner computes M from the weights (the Linear layers and the BatchNorms' running statistics
    of ``model.param_encoder`` and ``model.predictor``); calling the model (``model.predict``,
    ``model.predictor(...)``) or ``equivariance.displacement_map`` is refused. The check compares
    M (t - t') with the model's own predictions for random y_o, t, t' (`cases` batches of 8).
    """
    name = "displacement map"
    if model.predictor is None or model.cfg.predictor_depth != 0:
        raise ValueError("check_displacement_map needs an EquiMod model with the paper's linear predictor (depth 0)")
    model.eval()
    forbidden = _model_calls(model)
    called = referenced_library(fn, {shown: getattr(owner, attr) for shown, (owner, attr) in forbidden.items()
                                     if isinstance(owner, types.ModuleType)})
    if called is not None:
        return _refusal(name, called, strict)
    with torch.no_grad():
        got, problem = _call_refusing(fn, forbidden, model)
    if problem == "not implemented":
        _say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, then run this cell again).")
        return None
    if problem is not None and problem.startswith("library: "):
        return _verdict(False, strict, f"{name}: your function calls {problem[len('library: '):]}: compute M from the "
                                       f"weights alone (the point is to see why it cannot depend on the image).")
    if problem is not None:
        return _verdict(False, strict, f"{name}: your function raised {problem}.")
    y_dim, param_dim = model.cfg.y_dim, model.cfg.param_dim
    m, not_a_tensor = _call(lambda: torch.as_tensor(got).detach().float().cpu())
    if not_a_tensor or tuple(m.shape) != (y_dim, param_dim):
        shape = None if not_a_tensor else tuple(m.shape)
        hint = " (transposed? M maps t to y_hat: rows are y, columns are t)" if shape == (param_dim, y_dim) else ""
        return _verdict(False, strict, f"{name}: expected a tensor of shape (y_dim, param_dim) = ({y_dim}, {param_dim}), "
                                       f"got {shape}{hint}.")
    generator = torch.Generator().manual_seed(7)
    device = next(model.parameters()).device
    for k in range(cases):
        y_o, t, t_prime = (torch.randn(8, d, generator=generator) for d in (y_dim, param_dim, param_dim))
        with torch.no_grad():
            actual = (model.predict(y_o.to(device), t.to(device)) - model.predict(y_o.to(device), t_prime.to(device)))
        predicted = (t - t_prime) @ m.T
        error = float((predicted - actual.float().cpu()).norm() / actual.norm().clamp_min(1e-12))
        if error > 1e-3:
            message = (f"{name}: not yet right: M (t - t') differs from the model's y_hat(y_o, t) - y_hat(y_o, t') by "
                       f"{error:.1%} (relative, case {k + 1} of {cases}).")
            message += ("\n  Hint: fold each BatchNorm in eval mode into a per-feature scale "
                        "weight / sqrt(running_var + eps) (no weight: 1); the shifts cancel in a difference, and only "
                        "the columns of the predictor's Linear that read p(t) (after the y_dim columns of y_o) matter.")
            return _verdict(False, strict, message)
    return _verdict(True, strict, f"{name}: correct: for {cases * 8} random (y_o, t, t') your M (t - t') equals the "
                                  f"model's predicted displacement, whatever y_o. Well done!")


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
    vectors = {k: torch.randn(n_images, dim, generator=generator).requires_grad_() for k in ("y_1", "y_2", "h_1", "h_2")}
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
    answered yet. toy=True also runs :func:`loss_floor_toy` for the three constraints and prints it.
    """
    if if_invariant is None or if_t_ignored is None:
        _say("loss floors: not answered yet (set both numbers, e.g. math.log(5), then run the cell again).")
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
        _say("The toy: the loss minimised over free vectors (4 images, temperature 0.05), nats per anchor:\n"
             + "\n".join(f"  {c:>10}: y anchors {r['y anchors']:.3f}, y_hat anchors {r['y_hat anchors']:.3f}, "
                          f"mean {r['mean']:.3f}" for c, r in rows.items())
             + f"\n  log 3 = {math.log(3):.3f}, log 2 = {math.log(2):.3f}")
    if wrong:
        return _verdict(False, strict, "loss floors: not yet right: " + "; ".join(wrong) + ".")
    return _verdict(True, strict, f"loss floors: right: log 3 = {math.log(3):.3f} if y is invariant, log 2 = "
                                  f"{math.log(2):.3f} if y_hat ignores t; the toy never goes below them.")


# ============================================================================================
# Predict, then measure
# ============================================================================================
def check_prediction(prediction: Union[None, str, Iterable[str]], measured: dict[str, float], question: str = "",
                     higher_means: str = "forgotten", lowest: bool = False, strict: bool = False) -> Optional[bool]:
    """Compare a learner's guess with a measurement: are the guessed keys the top of the ranking?

    prediction: a key of `measured` (e.g. "hue"), a collection of k keys (right when they are the
    k top keys, in any order), or None (not answered yet). measured: name -> a number where larger
    means more `higher_means`; ``lowest=True`` ranks the smallest first (e.g. "which augmentations
    does the module ignore?"). Prints the ranking; returns True / False, or None when unanswered.
    The answer is what the model at hand measures, not a fixed string.
    """
    sign = 1.0 if lowest else -1.0
    ranking = sorted(measured, key=lambda k: sign * measured[k] if math.isfinite(measured[k]) else math.inf)
    table = "\n".join(f"  {i + 1}. {k:<12} {measured[k]:+.3f}" for i, k in enumerate(ranking))
    title = f"{question}\n" if question else ""
    if prediction is None:
        _say(f"{title}No prediction yet: set it to one of {sorted(measured)} and run the cell again.")
        return None
    keys = [prediction] if isinstance(prediction, str) else list(prediction)
    keys = [str(key).strip().lower() for key in keys]
    unknown = [key for key in keys if key not in measured]
    if unknown or not keys:
        return _verdict(False, strict, f"{title}{unknown or prediction!r} is not one of the measured names "
                                       f"{sorted(measured)}.")
    top = ranking[:len(keys)]
    ok = set(keys) == set(top)
    first = "least" if lowest else "most"
    shown = repr(top[0]) if len(top) == 1 else repr(top)
    verdict = ("Right: " if ok else f"Not this time: the measurement puts {shown} first, yours "
               f"{'is' if len(keys) == 1 else 'are'} number {', '.join(str(ranking.index(k) + 1) for k in keys)}. ")
    return _verdict(ok, strict, f"{title}{verdict}The measurement, {first} {higher_means} first:\n{table}")
