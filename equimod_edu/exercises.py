"""Exercises of the notebooks: check functions that tell a learner whether an answer is right.

    from equimod_edu.exercises import check_nt_xent
    def my_nt_xent(z_1, z_2, temperature=0.5):
        raise NotImplementedError            # the learner writes this
    check_nt_xent(my_nt_xent)                # prints "not implemented yet", or what is right or wrong

Code exercises (``check_nt_xent``, ``check_equivariance_gain``, ``check_equivariance_loss``,
``check_displacement_map``) compare the learner's function with a reference on random inputs of
several shapes, name the usual mistakes, and **refuse an answer that calls the library function it
asks for** (``losses.nt_xent`` in ``my_nt_xent``...): the exercise is to write it. The loss
exercises refuse every function of ``equimod_edu.losses``, public or private
(``losses._nt_xent_logits`` too), however it is reached; the displacement map refuses running any
part of the model (``model.predict``, ``model.predictor.layers(...)``, a single layer, a copy):
M must be read from the weights. Reasoning exercises check a number or a guess against a
measurement: ``check_loss_floors`` (why the equivariance loss forbids invariance, verified on a
toy by :func:`loss_floor_toy`) and ``check_prediction`` (predict, then measure; it records each
question's first answer in ``runs/predictions.json`` of the working folder and shows it on later
runs, so the prediction survives an edit). A check never raises (a notebook must run top to
bottom with the stub in place): it returns True (right), False (wrong) or None (not answered yet).
``strict=True`` raises AssertionError on a wrong answer instead (for a teacher's own tests).

The teachers' solutions and the answers to every "Try it" of the notebooks are not part of this
package: they live in the repository's ``teachers/`` folder.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import math
import os
import re
import types
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import equivariance, losses
from .files import atomic_write, os_error_reason

__all__ = ["check_nt_xent", "check_equivariance_gain", "check_equivariance_loss", "check_displacement_map",
           "check_loss_floors", "loss_floor_toy", "check_prediction", "check_loss_without_other_view",
           "check_decoupled_nt_xent", "decoupled_toy"]


# ============================================================================================
# The checking machinery
# ============================================================================================
def _say(message: str) -> None:
    print(message)


class _LibraryCalled(BaseException):
    """Raised, during a check, by a library function or a layer the learner's code must not call.

    A BaseException, so that a learner's ``except Exception`` does not swallow it; every attempt is
    also noted in _ATTEMPTS, so that even ``except BaseException`` cannot hide it.
    """


_ATTEMPTS: list[str] = []   # the refused calls of the check in progress


def _refused(name: str):
    """What a refused function does instead of its work: note the attempt, then raise."""
    _ATTEMPTS.append(name)
    raise _LibraryCalled(name)


def _refusing_code(name: str) -> types.CodeType:
    """The code of ``def refused(*args, **kwargs): _refused(name)``, runnable under any module's globals.

    Put in place of a library function's own ``__code__`` during a check, it refuses every call of that
    function object, however the learner's code reached it (``losses.nt_xent``, an import inside the
    function, an alias, a default argument, a functools.partial).
    """
    source = (f"def refused(*args, **kwargs):\n"
              f"    __import__({__name__!r}, fromlist=['_refused'])._refused({name!r})\n")
    namespace: dict = {}
    exec(compile(source, f"<refused {name}>", "exec"), {}, namespace)
    return namespace["refused"].__code__


def _library_functions(module: types.ModuleType, shown: str) -> dict[str, tuple[object, str]]:
    """Every function defined in `module`, public or private: "shown.name" -> (module, name)."""
    return {f"{shown}.{name}": (module, name) for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module.__name__}


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
    if isinstance(fn, functools.partial):   # partial(losses.nt_xent, gather=False): its function and arguments
        for value in (fn.func, *fn.args, *fn.keywords.values()):
            found = referenced_library(value, forbidden) if callable(value) else by_id.get(id(value))
            if found:
                return found
        return None
    fn = getattr(fn, "__func__", fn)        # a bound method: its function
    names = _code_names(fn)
    scope = {**vars(builtins), **getattr(fn, "__globals__", {})}
    values = [scope[name] for name in names if name in scope]
    values += list(getattr(fn, "__defaults__", None) or ()) + list((getattr(fn, "__kwdefaults__", None) or {}).values())
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
    """_call with each forbidden ``owner.attribute`` refusing to run, for the call; all restored after.

    owner: a module, a class (``nn.Linear``, "forward") or an object (a model) whose method is shadowed
    on the instance. A plain function of a module has its ``__code__`` swapped for one that raises, so
    every reference to it refuses (an alias, a default argument, an import inside fn); anything else
    (a decorated function, a method) is replaced by an attribute that raises. A refused call that fn
    catches and hides is still reported: (None, "library: name").
    """
    own = {name: (attr in vars(owner), getattr(owner, attr)) for name, (owner, attr) in forbidden.items()}
    swapped = {name: value for name, (owner, attr) in forbidden.items()
               for value in [own[name][1]] if isinstance(owner, types.ModuleType)
               and isinstance(value, types.FunctionType) and not value.__code__.co_freevars}
    codes = {name: value.__code__ for name, value in swapped.items()}

    def refuse(name):
        def refused(*_, **__):
            _refused(name)
        return refused

    _ATTEMPTS.clear()
    applied = []
    try:
        for name, (owner, attr) in forbidden.items():
            if name in swapped:
                swapped[name].__code__ = _refusing_code(name)
            else:
                setattr(owner, attr, refuse(name))
            applied.append(name)
        result, problem = _call(fn, *args, **kwargs)
    finally:
        for name in reversed(applied):
            owner, attr = forbidden[name]
            was_own, value = own[name]
            if name in swapped:
                value.__code__ = codes[name]
            elif was_own:
                setattr(owner, attr, value)
            else:
                delattr(owner, attr)
    if _ATTEMPTS and not (problem or "").startswith("library: "):
        result, problem = None, f"library: {_ATTEMPTS[0]}"
    _ATTEMPTS.clear()
    return result, problem


def _refusal(exercise: str, called: str, strict: bool, asked: Optional[str] = None) -> bool:
    """The verdict on an answer that calls a refused function; asked: the library function the exercise is about
    ("" for a variant the library does not compute)."""
    if asked == "":
        return _verdict(False, strict, f"{exercise}: your function calls {called}, from equimod_edu.losses: no function "
                                       f"of that module, public or private, may be used here. Write it yourself, in "
                                       f"plain PyTorch.")
    if asked is None or called == asked or not called.startswith("losses."):
        return _verdict(False, strict, f"{exercise}: your function calls {called}, the function this exercise asks "
                                       f"you to write. Write it yourself, in plain PyTorch; the check compares it "
                                       f"with {called} for you.")
    return _verdict(False, strict, f"{exercise}: your function calls {called}, from equimod_edu.losses, the module "
                                   f"that holds the function this exercise asks you to write ({asked}): no function "
                                   f"of that module, public or private, may be used here. Write it yourself, in "
                                   f"plain PyTorch; the check compares it with {asked} for you.")


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


def _judge_number(label: str, value: float, ok: bool, hints: dict[float, str], what: str, why_right: str, line: str,
                  written: Optional[bool], strict: bool) -> Optional[bool]:
    """The verdict on a predicted number, with the hint of any known wrong value within 0.01 and `line` (the
    recorded first answer); then the exercise's result: True when the written function (`written`) and the
    number are both right, False when either is wrong, None while the function is not written yet."""
    tail = f"\n{line}" if line else ""
    if not ok:
        hint = next((why for near, why in hints.items() if abs(value - near) <= 0.01), None)
        return _verdict(False, strict, f"{label}: {value:.4f} is not {what}" + (f" ({hint})." if hint else ".") + tail)
    _verdict(True, strict, f"{label}: right: {why_right}" + tail)
    return True if written else (False if written is False else None)


def _check_function(name: str, fn: Callable, cases: Sequence[tuple[tuple, dict]], reference: Callable,
                    mistakes: dict[str, Callable], strict: bool, tol: float,
                    forbidden: dict[str, tuple[object, str]], asked: Optional[str] = None,
                    reference_name: str = "equimod_edu.losses") -> Optional[bool]:
    """Run fn on each case, compare with reference; name the likely mistake when one matches.

    forbidden: display name -> (module, attribute) of the library functions fn must not call; asked:
    the name of the one the exercise asks for (the refusal of another one says so; "" for a variant
    the library does not compute); reference_name: what the success line says fn matches.
    """
    called = referenced_library(fn, {shown: getattr(owner, attr) for shown, (owner, attr) in forbidden.items()})
    if called is not None:
        return _refusal(name, called, strict, asked)
    for k, (args, kwargs) in enumerate(cases):
        got, problem = _call_refusing(fn, forbidden, *args, **kwargs)
        if problem == "not implemented":
            _say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, then run this "
                 f"cell again).")
            return None
        if problem is not None and problem.startswith("library: "):
            return _refusal(name, problem[len("library: "):], strict, asked)
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
    return _verdict(True, strict, f"{name}: correct on {len(cases)} random cases (matches {reference_name}). Well done!")


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
    still raises NotImplementedError; prints why and, for common mistakes, a hint. A call of any
    function of ``equimod_edu.losses``, public or private (``losses._nt_xent_logits``), is refused.
    """
    return _check_function("NT-Xent", fn, _nt_xent_cases(),
                           lambda z_1, z_2, temperature=0.5: losses.nt_xent(z_1, z_2, temperature, gather=False),
                           _nt_xent_mistakes(), strict, tol=1e-4, forbidden=_library_functions(losses, "losses"),
                           asked="losses.nt_xent")


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
    """Check ``fn(y, y_hat, y_o) -> (N,)`` against ``losses.equivariance_gain`` (three (N, D) inputs).

    Refused: any function of ``equimod_edu.losses`` and ``equivariance.prediction_quality``.
    """
    return _check_function("equivariance gain", fn, _gain_cases(),
                           lambda y, y_hat, y_o: losses.equivariance_gain(y, y_hat, y_o), _gain_mistakes(),
                           strict, tol=1e-5, asked="losses.equivariance_gain",
                           forbidden={**_library_functions(losses, "losses"),
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
    """Check ``fn(y_1, y_2, y_hat_1, y_hat_2, temperature=0.2) -> ()`` against ``losses.equivariance_loss``.

    Refused: any function of ``equimod_edu.losses``, public or private (``losses._info_nce_logits``).
    """
    return _check_function(
        "equivariance loss", fn, _equi_loss_cases(),
        lambda a, b, c, d, temperature=0.2: losses.equivariance_loss(a, b, c, d, temperature, gather=False),
        _equi_loss_mistakes(), strict, tol=1e-4, forbidden=_library_functions(losses, "losses"),
        asked="losses.equivariance_loss")


# ============================================================================================
# What a linear module can express: its displacement map
# ============================================================================================
def _model_calls(model) -> dict[str, tuple[object, str]]:
    """Every way to run the model, refused while the learner's code reads its weights.

    model.predict; the forward of every nn.Module of the model (the model itself, its heads, their
    ``.layers`` and each layer: ``model.predictor.layers[0](x)`` is refused like ``model.predictor(x)``);
    and the forward of every class those modules are made of (``nn.Linear``, ``nn.BatchNorm1d``,
    ``nn.Sequential``, ...), so that a copy of the model or a new layer loaded with its weights cannot
    run either. Functional calls on the weights (``F.linear(x, layer.weight)``) are reading the weights.
    """
    calls = {"model.predict": (model, "predict")}
    for part, module in model.named_modules():
        shown = "model" + re.sub(r"\.(\d+)", r"[\1]", f".{part}" if part else "")
        calls[f"{shown}(...)"] = (module, "forward")
    classes = {cls for module in model.modules() for cls in type(module).__mro__
               if "forward" in vars(cls) and cls is not torch.nn.Module}
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        calls[f"{cls.__name__}.forward (a layer of the kind the model is made of)"] = (cls, "forward")
    calls["equivariance.displacement_map"] = (equivariance, "displacement_map")
    calls["equivariance.column_weights"] = (equivariance, "column_weights")
    return calls


def check_displacement_map(fn: Callable, model, strict: bool = False, cases: int = 4) -> Optional[bool]:
    """Check ``fn(model) -> M (y_dim, param_dim)`` such that y_hat(y_o, t) - y_hat(y_o, t') = M (t - t').

    model: a trained EquiModModel with the paper's linear predictor (put in eval mode here). The
    learner computes M from the weights (the Linear layers and the BatchNorms' running statistics
    of ``model.param_encoder`` and ``model.predictor``). Running any part of the model during fn is
    refused, so finite differences cannot stand in for the derivation: ``model.predict``,
    ``model.predictor(...)``, ``model.predictor.layers(...)``, a single layer, a copy of the model or
    a new layer of the same kind loaded with its weights (see :func:`_model_calls`), and
    ``equivariance.displacement_map`` / ``column_weights``. The check compares M (t - t') with the
    model's own predictions for random y_o, t, t' (`cases` batches of 8).
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
    model.eval()   # in case fn switched it to training mode (batch statistics)
    if problem == "not implemented":
        _say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, then run this cell again).")
        return None
    if problem is not None and problem.startswith("library: "):
        return _verdict(False, strict, f"{name}: your function calls {problem[len('library: '):]}: no part of the "
                                       f"model may run here (nor a copy, nor a layer of the same kind). Compute M "
                                       f"from the weights alone (the point is to see why it cannot depend on the "
                                       f"image).")
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
PREDICTIONS_FILE = "runs/predictions.json"   # check_prediction's record of first answers, in the working folder


def _answer_text(answer) -> str:
    return repr(answer) if isinstance(answer, str) else repr(list(answer))


def _is_record(entry) -> bool:
    """One question's record: {"answer": a name or a list of names, "recorded": a time, ...}."""
    answer = entry.get("answer") if isinstance(entry, dict) else None
    return isinstance(entry, dict) and isinstance(entry.get("recorded"), str) and (
        isinstance(answer, str) or isinstance(answer, list) and all(isinstance(a, str) for a in answer))


def _write_records(path: Path, records: dict) -> Optional[str]:
    """Write the records atomically; None, or a one-line reason why they could not be written."""
    text = json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as error:
        return f"(Not recorded: {path} cannot be written: {os_error_reason(error, path)}.)"
    return None


def _first_answer(record, key: str, answer, ranking: Sequence[str], right: Optional[bool], start_over: bool) -> str:
    """Record `answer` as the first answer to question `key` in the JSON file `record`, unless one is there.

    The file maps each question to {"answer", "recorded" (local time), "right" (at the time)}. answer:
    a key, a sorted list of keys, or None (no prediction yet: never recorded). Returns what to print
    ("" for nothing). Never raises: a file that cannot be read, parsed or written is reported in one
    line, and a damaged file is left as it is.
    """
    path = Path(record)
    again = f"to start over, delete {path} (every question) or pass start_over=True (this one)"
    try:
        records = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        damaged = None if isinstance(records, dict) and all(map(_is_record, records.values())) \
            else "not a table of answers"
    except OSError as error:
        return f"(Not recorded: {path} cannot be read: {os_error_reason(error, path)}.)"
    except ValueError as error:   # not JSON, or not UTF-8
        damaged = f"not JSON: {str(error).splitlines()[0]}"
    if damaged:
        return f"(Not recorded: {path} is damaged ({damaged}); it is left as it is: repair it, or delete it to start over.)"
    first = records.get(key)
    if first is not None and not (start_over and answer is not None):
        if start_over:   # start over with no prediction yet: forget this question's answer
            del records[key]
            return _write_records(path, records) or f"Your recorded answer to this question is forgotten ({path})."
        known = [k for k in ([first["answer"]] if isinstance(first["answer"], str) else first["answer"]) if k in ranking]
        where = f"; number {', '.join(str(ranking.index(k) + 1) for k in known)} in this measurement" if known else ""
        now = ("" if answer is None else " (this one)" if first["answer"] == answer
               else f" (not this one{where})")
        return f"Your first answer, recorded {first['recorded']}: {_answer_text(first['answer'])}{now}. It is the " \
               f"prediction that counts; {again}."
    if answer is None:
        return ""
    recorded = datetime.now().strftime("%Y-%m-%d %H:%M")
    records[key] = {"answer": answer, "recorded": recorded, "right": right}
    problem = _write_records(path, records)
    if problem:
        return problem
    hint = ("; set start_over back to False to keep it" if start_over
            else "; to start over, delete that file or pass start_over=True")
    return f"Recorded as your first answer ({path}, {recorded}): later runs show it{hint}."


def check_prediction(prediction: Union[None, str, Iterable[str]], measured: dict[str, float], question: str = "",
                     higher_means: str = "forgotten", lowest: bool = False, strict: bool = False,
                     record: Union[None, str, os.PathLike] = PREDICTIONS_FILE,
                     start_over: bool = False) -> Optional[bool]:
    """Compare a learner's guess with a measurement: are the guessed keys the top of the ranking?

    prediction: a key of `measured` (e.g. "hue"), a collection of k keys (right when they are the
    k top keys, in any order), or None (not answered yet). measured: name -> a number where larger
    means more `higher_means`; ``lowest=True`` ranks the smallest first (e.g. "which augmentations
    does the module ignore?"). Prints the ranking; returns True / False (for this answer), or None
    when unanswered. The answer is what the model at hand measures, not a fixed string.

    The first answer to each question (keyed by `question`) is recorded in the JSON file `record`,
    ``runs/predictions.json`` of the working folder (created with its folder), and shown on later
    runs, so the prediction is kept when the learner edits it after seeing the measurement. None is
    never recorded; an unknown name neither. ``start_over=True`` replaces this question's record by
    the current answer (with None: forgets it); deleting the file starts every question over;
    ``record=None`` records nothing. A damaged file is reported and left as it is.
    """
    sign = 1.0 if lowest else -1.0
    ranking = sorted(measured, key=lambda k: sign * measured[k] if math.isfinite(measured[k]) else math.inf)
    table = "\n".join(f"  {i + 1}. {k:<12} {measured[k]:+.3f}" for i, k in enumerate(ranking))
    title = f"{question}\n" if question else ""
    asked = question or f"Which of {', '.join(sorted(measured))}{' (lowest first)' if lowest else ''}?"
    if prediction is None:
        line = _first_answer(record, asked, None, ranking, None, start_over) if record is not None else ""
        _say(f"{title}No prediction yet: set it to one of {sorted(measured)} and run the cell again."
             + (f"\n{line}" if line else ""))
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
    answer = keys[0] if isinstance(prediction, str) else sorted(keys)
    line = _first_answer(record, asked, answer, ranking, ok, start_over) if record is not None else ""
    return _verdict(ok, strict, f"{title}{verdict}The measurement, {first} {higher_means} first:\n{table}"
                                + (f"\n{line}" if line else ""))


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
    setting of :func:`loss_floor_toy` (4 images, 16 dimensions, temperature 0.05).
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
    """fn against _loss_without_other_view on random cases; no function of equimod_edu.losses may run."""
    return _check_function("loss without the other view", fn, _equi_loss_cases(), _loss_without_other_view,
                           _without_other_view_mistakes(), strict, tol=1e-4,
                           forbidden=_library_functions(losses, "losses"), asked="",
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
    recorded in `record` as :func:`check_prediction` records its answers, and shown on later runs.
    Once it is set, the toy minimises the loss over free vectors (your fn if it passed, else the
    reference) with and without that constraint and prints what it reaches. Returns True when both
    are right, False when either is wrong, else None.
    """
    written = _check_variant(fn, strict)
    if floor_if_invariant is None:
        line = _first_answer(record, OTHER_VIEW_QUESTION, None, [], None, start_over) if record is not None else ""
        _say("floor: not answered yet (set floor_if_invariant to a number, e.g. math.log(5), then run the cell "
             "again; the toy runs once it is set)." + (f"\n{line}" if line else ""))
        return False if written is False else None
    try:
        value = float(floor_if_invariant)
    except (TypeError, ValueError):
        return _verdict(False, strict, f"floor: floor_if_invariant must be a number, got {floor_if_invariant!r}.")
    right = math.log(2)
    ok = abs(value - right) <= 0.01
    line = _first_answer(record, OTHER_VIEW_QUESTION, f"{value:.4f}", [], ok, start_over) if record is not None else ""
    hints = {0.0: "an invariant y still has a rival equal to a positive: the anchor y_hat_1 has y_2 = y_1 among its "
                  "negatives, and the anchors y_1, y_2 (now one vector) share the candidates y_hat_1 and y_hat_2",
             math.log(3): "log 3 counts three candidates that tie with the positive at best; with y_2 gone, the "
                          "anchor y_1 = y_2 has two: y_hat_1 and y_hat_2",
             math.log(4): "count the candidates that tie with the positive at best, not all of an image's vectors"}
    if toy:
        mine = fn if written else _loss_without_other_view
        whose = "your function" if written else "the reference (your function is not right yet)"
        rows = {c: _floor_of(mine, c) for c in ("none", "invariant")}
        _say(f"The toy: {whose} minimised over free vectors (4 images, temperature 0.05), nats per anchor:\n"
             + "\n".join(f"  {c:>10}: {v:.3f}" for c, v in rows.items())
             + f"\n  log 2 = {math.log(2):.3f}, log 3 = {math.log(3):.3f}")
    return _judge_number("floor", value, ok, hints, "the floor", f"log 2 = {right:.3f}. Without the other view among "
                         f"the negatives, an invariant y still pays log 2 per anchor: the two views' predictions are "
                         f"rivals for one vector y_1 = y_2.", line, written, strict)



# ============================================================================================
# Notebook 2, Exercise 1: NT-Xent without the positive in its denominator (the decoupled loss)
# ============================================================================================
DECOUPLED_QUESTION = ("Notebook 2, Exercise 1: the decoupled loss on the toy z_1 = z_2 = I (N = 2, orthogonal images, "
                      "temperature 0.5)")


def _contrastive64(z_1, z_2, temperature: float = 0.5, *, hide_positive: bool = True, hide_self: bool = True,
                   positive_term: bool = True, normalise: bool = True) -> torch.Tensor:
    """NT-Xent and its variants in float64: (N, D) x 2 -> (), the mean over the 2N anchors of
    -s(anchor, positive) + log sum over the candidates k of exp s(anchor, k), s = cos / temperature.

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
    """The toy of the prediction: (z_1, z_2, temperature) = (I, I, 0.5): two orthogonal images, the two
    views of each equal (perfect alignment)."""
    return torch.eye(2), torch.eye(2), 0.5


def _decoupled_cases():
    cases = []
    for seed, (n, d, temperature) in enumerate([(4, 8, 0.5), (2, 3, 0.5), (6, 16, 0.1), (8, 32, 1.0)]):
        z_1 = _random((n, d), 900 + 10 * seed)
        cases.append(((z_1, z_1 + 0.5 * _random((n, d), 901 + 10 * seed)), {"temperature": temperature}))
    return cases


_DECOUPLED_MISTAKES = {
    "this is NT-Xent: the positive is still in the denominator (hide it with -inf, like the diagonal; its "
    "similarity enters only as -s(anchor, positive))": dict(hide_positive=False),
    "each vector's similarity with itself is left in the denominator (mask the diagonal with -inf)": dict(hide_self=False),
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
    """fn against _contrastive64 on random cases; no function of equimod_edu.losses may run."""
    return _check_function("decoupled loss", fn, _decoupled_cases(), _contrastive64, _decoupled_mistakes(), strict,
                           tol=1e-4, forbidden=_library_functions(losses, "losses"), asked="",
                           reference_name="a float64 reference")


def check_decoupled_nt_xent(fn: Callable, value_at_alignment: Optional[float], strict: bool = False,
                            record: Union[None, str, os.PathLike] = PREDICTIONS_FILE,
                            start_over: bool = False) -> Optional[bool]:
    """Notebook 2, Exercise 1: NT-Xent with the positive taken out of its denominator, and a prediction.

    fn(z_1, z_2, temperature=0.5) -> (): the decoupled contrastive loss (Yeh et al. 2022): for each of
    the 2N anchors, -s(anchor, positive) + log of the sum of exp s(anchor, k) over the 2N - 2
    negatives k, s = cos / temperature; the mean over the anchors. Checked against a float64
    reference on random inputs; any function of ``equimod_edu.losses`` is refused.
    value_at_alignment: the predicted value of this loss on :func:`decoupled_toy` (z_1 = z_2 = I,
    temperature 0.5), or None (not answered yet). The first answer is recorded in `record` as
    :func:`check_prediction` records its answers, and shown on later runs. Returns True when both are
    right, False when either is wrong, else None.
    """
    written = _check_decoupled_function(fn, strict)
    z_1, z_2, temperature = decoupled_toy()
    right = float(_contrastive64(z_1, z_2, temperature))
    if value_at_alignment is None:
        line = _first_answer(record, DECOUPLED_QUESTION, None, [], None, start_over) if record is not None else ""
        _say("prediction: not answered yet (set value_at_alignment to a number, then run the cell again)."
             + (f"\n{line}" if line else ""))
        return False if written is False else None
    try:
        value = float(value_at_alignment)
    except (TypeError, ValueError):
        return _verdict(False, strict, f"prediction: value_at_alignment must be a number, got {value_at_alignment!r}.")
    ok = abs(value - right) <= 0.01
    line = _first_answer(record, DECOUPLED_QUESTION, f"{value:.4f}", [], ok, start_over) if record is not None else ""
    nt_xent = float(_contrastive64(z_1, z_2, temperature, hide_positive=False))
    shown = f"On the toy: NT-Xent {nt_xent:.4f}, the decoupled loss {right:.4f}"
    if written:
        shown += f" (your function: {float(torch.as_tensor(fn(z_1, z_2, temperature=temperature))):.4f})"
    _say(shown + ".")
    hints = {nt_xent: "that is NT-Xent's value on the toy: the decoupled loss takes the positive out of the "
                      "denominator, which leaves the two negatives",
             -1 / temperature: "-s(anchor, positive) = -1 / 0.5 = -2 is right, but the log of the denominator is "
                               "not 0: two negatives (the other image's two views), each at cosine 0",
             1 / temperature - math.log(2): "the sign: the positive's similarity enters with a minus sign, the log "
                                            "of the negatives' sum with a plus",
             math.log(3) - 1 / temperature: "three terms in the denominator; with the anchor and its positive "
                                            "taken out, two candidates remain",
             0.0: "a loss that is the -log of a probability stops at 0; this one is not, so nothing stops it there"}
    return _judge_number("prediction", value, ok, hints, "the value", f"-1/0.5 + log 2 = {right:.4f}, below 0. Without "
                         f"the positive in its denominator the loss is no longer the -log of a probability, and "
                         f"perfect alignment does not bring it to 0.", line, written, strict)

