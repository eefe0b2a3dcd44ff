"""The exercises' judge: run a learner's function, compare it with a reference, say the verdict.

The judge runs the function with the library's shortcuts refused, compares it with a reference on
random cases, and names the usual mistake.

The notebooks' checks (loss_exercises.py, displacement_exercise.py, predictions.py) are made of these parts:

- refusing: ``referenced_library`` reads which forbidden functions a learner's function refers to (its
  globals, attributes of the modules among them, its closure and defaults, a functools.partial);
  ``call_refusing`` then runs it while each forbidden function refuses to run. A plain function of a
  module has its ``__code__`` swapped, so an alias, a default argument or an import inside the learner's
  function is refused too, and a refusal the learner's code catches is still reported.
- judging: ``check_function`` compares the answer with a reference on random cases and names the
  mistake it matches; ``judge_number`` judges a predicted number; ``verdict`` prints the verdict.

A check never raises (a notebook must run top to bottom with the stub in place): it returns True
(right), False (wrong) or None (not answered yet). ``strict=True`` raises AssertionError on a wrong
answer instead (for a teacher's own tests).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import types
from typing import Callable, Optional, Sequence

import torch

__all__ = ["say", "referenced_library", "library_functions", "call_answer", "call_refusing", "refusal", "verdict",
           "judge_number", "check_function", "randn"]


def say(message: str) -> None:
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


def library_functions(module: types.ModuleType, shown: str) -> dict[str, tuple[object, str]]:
    """Every function defined in `module`, public or private: "shown.name" -> (module, name)."""
    return {f"{shown}.{name}": (module, name) for name, value in vars(module).items()
            if inspect.isfunction(value) and value.__module__ == module.__name__}


def call_answer(fn: Callable, *args, **kwargs):
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


def call_refusing(fn: Callable, forbidden: dict[str, tuple[object, str]], *args, **kwargs):
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
        result, problem = call_answer(fn, *args, **kwargs)
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


def refusal(exercise: str, called: str, strict: bool, asked: Optional[str] = None) -> bool:
    """The verdict on an answer that calls a refused function.

    ``asked`` is the library function the exercise is about ("" for a variant the library does not compute).
    """
    if asked == "":
        return verdict(False, strict, f"{exercise}: your function calls {called}, from equimod_edu.losses: no function "
                                      f"of that module, public or private, may be used here. Write it yourself, in "
                                      f"plain PyTorch.")
    if asked is None or called == asked or not called.startswith("losses."):
        return verdict(False, strict, f"{exercise}: your function calls {called}, the function this exercise asks "
                                      f"you to write. Write it yourself, in plain PyTorch; the check compares it "
                                      f"with {called} for you.")
    return verdict(False, strict, f"{exercise}: your function calls {called}, from equimod_edu.losses, the module "
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


def verdict(ok: bool, strict: bool, message: str) -> bool:
    say(message)
    if strict and not ok:
        raise AssertionError(message)
    return ok


def judge_number(label: str, value: float, ok: bool, hints: dict[float, str], what: str, why_right: str, line: str,
                 written: Optional[bool], strict: bool) -> Optional[bool]:
    """The verdict on a predicted number, then the exercise's result.

    The verdict carries the hint of any known wrong value within 0.01 and ``line`` (the recorded first
    answer). The result is True when the written function (``written``) and the number are both right,
    False when either is wrong, None while the function is not written yet.
    """
    tail = f"\n{line}" if line else ""
    if not ok:
        hint = next((why for near, why in hints.items() if abs(value - near) <= 0.01), None)
        return verdict(False, strict, f"{label}: {value:.4f} is not {what}" + (f" ({hint})." if hint else ".") + tail)
    verdict(True, strict, f"{label}: right: {why_right}" + tail)
    return True if written else (False if written is False else None)


def check_function(name: str, fn: Callable, cases: Sequence[tuple[tuple, dict]], reference: Callable,
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
        return refusal(name, called, strict, asked)
    for k, (args, kwargs) in enumerate(cases):
        got, problem = call_refusing(fn, forbidden, *args, **kwargs)
        if problem == "not implemented":
            say(f"{name}: not implemented yet (replace `raise NotImplementedError` by your code, then run this "
                f"cell again).")
            return None
        if problem is not None and problem.startswith("library: "):
            return refusal(name, problem[len("library: "):], strict, asked)
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        if problem is not None:
            return verdict(False, strict, f"{name}: your function raised {problem}\n  on inputs of shapes "
                                          f"{shapes} with {kwargs or 'default arguments'}.")
        expected = reference(*args, **kwargs)
        if _close(got, expected, tol):
            continue
        converts = call_answer(torch.as_tensor, got)[1] is None
        got_shape = tuple(torch.as_tensor(got).shape) if converts else type(got).__name__
        hint = next((why for why, wrong in mistakes.items() if _close(got, wrong(*args, **kwargs), tol)), None)
        message = (f"{name}: not yet right (case {k + 1} of {len(cases)}: inputs {shapes}, {kwargs or 'defaults'}).\n"
                   f"  expected {_short(expected)} (shape {tuple(expected.shape)}), got {_short(got)} "
                   f"(shape {got_shape}).")
        if hint:
            message += f"\n  Hint: your result matches a common mistake: {hint}."
        return verdict(False, strict, message)
    return verdict(True, strict, f"{name}: correct on {len(cases)} random cases (matches {reference_name}). Well done!")


def _short(value) -> str:
    try:
        t = torch.as_tensor(value).detach().float().cpu()
    except (TypeError, ValueError, RuntimeError):
        return repr(value)[:60]
    if t.numel() == 1:
        return f"{t.item():.4f}"
    return "[" + ", ".join(f"{v:.3f}" for v in t.flatten()[:4].tolist()) + (", ...]" if t.numel() > 4 else "]")


def randn(shape, seed: int) -> torch.Tensor:
    """Standard normal numbers of `shape` from a generator seeded with `seed`: a check's random cases."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
