"""Notebook 4's code exercise: what a linear module can express, its displacement map.

    from equimod_edu.displacement_exercise import check_displacement_map
    check_displacement_map(my_displacement_map, model)   # my_displacement_map(model) -> M (y_dim, param_dim)

The learner reads M from the weights; running any part of the model is refused (``model.predict``,
``model.predictor.layers(...)``, a single layer, a copy, a new layer of the same kind), so finite
differences cannot stand in for the derivation.
"""

from __future__ import annotations

import re
import types
from typing import Callable, Optional

import torch

from . import equivariance
from .judge import call_answer, call_refusing, referenced_library, refusal, say, verdict

__all__ = ["check_displacement_map"]


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
    a new layer of the same kind loaded with its weights (see ``_model_calls``), and
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
        return refusal(name, called, strict)
    with torch.no_grad():
        got, problem = call_refusing(fn, forbidden, model)
    model.eval()   # in case fn switched it to training mode (batch statistics)
    if problem == "not implemented":
        say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, "
            f"then run this cell again).")
        return None
    if problem is not None and problem.startswith("library: "):
        return verdict(False, strict, f"{name}: your function calls {problem[len('library: '):]}: no part of the "
                                      f"model may run here (nor a copy, nor a layer of the same kind). Compute M "
                                      f"from the weights alone (the point is to see why it cannot depend on the "
                                      f"image).")
    if problem is not None:
        return verdict(False, strict, f"{name}: your function raised {problem}.")
    y_dim, param_dim = model.cfg.y_dim, model.cfg.param_dim
    m, not_a_tensor = call_answer(lambda: torch.as_tensor(got).detach().float().cpu())
    if not_a_tensor or tuple(m.shape) != (y_dim, param_dim):
        shape = None if not_a_tensor else tuple(m.shape)
        hint = " (transposed? M maps t to y_hat: rows are y, columns are t)" if shape == (param_dim, y_dim) else ""
        return verdict(False, strict, f"{name}: expected a tensor of shape (y_dim, param_dim) = "
                                      f"({y_dim}, {param_dim}), got {shape}{hint}.")
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
            return verdict(False, strict, message)
    return verdict(True, strict, f"{name}: correct: for {cases * 8} random (y_o, t, t') your M (t - t') equals the "
                                 f"model's predicted displacement, whatever y_o. Well done!")
