"""The exercises' judge on a library of its own.

It finds and refuses every way to reach a forbidden function, restores the library after the check, compares with a
reference and names the mistake.
"""

import functools
import sys
import types

import pytest
import torch

from equimod_edu.judge import (
    call_answer,
    call_refusing,
    check_function,
    judge_number,
    library_functions,
    randn,
    referenced_library,
)

LIBRARY_SOURCE = '''
def secret(x):
    return 2 * x

def _private_helper(x):
    return secret(x) + 1
'''


@pytest.fixture
def library(monkeypatch):
    """A small importable module, "judged_library", whose two functions the learner must not call."""
    module = types.ModuleType("judged_library")
    exec(compile(LIBRARY_SOURCE, "judged_library.py", "exec"), vars(module))
    monkeypatch.setitem(sys.modules, "judged_library", module)
    return module


def _cases():
    return [((randn((3, 4), seed),), {}) for seed in range(3)]


def _check(fn, library, strict=False):
    return check_function("double", fn, _cases(), lambda x: 2 * x, {"the sign is flipped": lambda x: -2 * x},
                          strict, tol=1e-6, forbidden=library_functions(library, "judged_library"),
                          asked="judged_library.secret", reference_name="the reference")


def test_library_functions_lists_every_function_defined_in_the_module_public_or_private(library):
    library.imported = torch.zeros      # a function the module holds but does not define: not its own
    assert set(library_functions(library, "lib")) == {"lib.secret", "lib._private_helper"}
    assert library_functions(library, "lib")["lib.secret"] == (library, "secret")


def test_referenced_library_reads_globals_attributes_closures_defaults_and_partials(library):
    forbidden = {"lib.secret": library.secret}
    alias = library

    def through_an_alias(x):
        return alias.secret(x)

    def by_a_default(x, f=library.secret):
        return f(x)

    assert referenced_library(library.secret, forbidden) == "lib.secret"
    assert referenced_library(through_an_alias, forbidden) == "lib.secret"          # a module in the closure
    assert referenced_library(by_a_default, forbidden) == "lib.secret"
    assert referenced_library(functools.partial(library.secret), forbidden) == "lib.secret"
    assert referenced_library(lambda x: 2 * x, forbidden) is None


def test_a_call_reached_by_an_import_inside_the_function_is_refused_and_the_library_restored(library):
    def import_inside(x):
        from judged_library import _private_helper  # invisible to a reading of the code: refused at the call
        return _private_helper(x)

    forbidden = library_functions(library, "lib")
    assert referenced_library(import_inside, {k: getattr(o, a) for k, (o, a) in forbidden.items()}) is None
    assert call_refusing(import_inside, forbidden, torch.ones(2)) == (None, "library: lib._private_helper")
    assert library._private_helper.__code__.co_name == "_private_helper"          # its own code is back
    assert library._private_helper(torch.ones(1)).item() == 3


def test_a_refusal_the_answer_catches_is_still_reported(library):
    def hides_it(x):
        try:
            return library.secret(x)
        except BaseException:
            return 2 * x

    assert call_refusing(hides_it, library_functions(library, "lib"), torch.ones(2)) == (None, "library: lib.secret")


def test_check_function_judges_right_wrong_stub_and_crash(library, capsys):
    assert _check(lambda x: x + x, library) is True
    assert "correct on 3 random cases (matches the reference)" in capsys.readouterr().out
    assert _check(lambda x: -2 * x, library) is False
    assert "Hint: your result matches a common mistake: the sign is flipped" in capsys.readouterr().out
    assert _check(lambda x: (_ for _ in ()).throw(NotImplementedError), library) is None
    assert "not implemented yet" in capsys.readouterr().out
    assert _check(lambda x: 1 / 0, library) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert _check(lambda x: library.secret(x), library) is False
    assert "calls judged_library.secret, the function this exercise asks you to write" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not yet right"):
        _check(lambda x: 3 * x, library, strict=True)
    assert _check(lambda x: (_ for _ in ()).throw(NotImplementedError), library, strict=True) is None


def test_call_answer_never_raises():
    assert call_answer(int, "3") == (3, None)
    assert call_answer(int, "three")[1].startswith("ValueError")
    assert call_answer(lambda: (_ for _ in ()).throw(NotImplementedError)) == (None, "not implemented")


def test_judge_number_names_a_known_wrong_value_and_waits_for_the_code(capsys):
    hints = {1.0: "that is the other quantity"}
    assert judge_number("guess", 1.005, False, hints, "the value", "", "", None, False) is False
    assert "1.0050 is not the value (that is the other quantity)." in capsys.readouterr().out
    assert judge_number("guess", 2.0, True, hints, "the value", "two.", "", None, False) is None   # code not written
    assert judge_number("guess", 2.0, True, hints, "the value", "two.", "", True, False) is True
    assert judge_number("guess", 2.0, True, hints, "the value", "two.", "", False, False) is False
