"""The static HTML course (`make book`, equimod_edu.book).

End to end on notebook 01 (about 10 s), a notebook whose cell raises, and a bad --only. tests/test_notebooks.py
renders every notebook in fast mode through the same functions.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import equimod_edu

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbconvert")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_01 = next((REPO / "notebooks").glob("01_*.ipynb"))


def book(*args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, "-m", "equimod_edu.book", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def book_lines(stderr: str) -> list:
    """The builder's own lines on stderr (the kernel logs a warning or two there too)."""
    return [line for line in stderr.splitlines() if line.startswith("book:")]


@pytest.mark.slow
def test_book_of_notebook_01_has_its_outputs_and_an_index_and_leaves_the_notebook_alone(tmp_path):
    before = NOTEBOOK_01.read_bytes()
    out = tmp_path / "book"
    done = book("--only", "01", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(rf"^\[1/1\] {NOTEBOOK_01.name}: \d+ s in fast mode", done.stdout, re.M), done.stdout

    page = out / f"{NOTEBOOK_01.stem}.html"
    executed = out / f"{NOTEBOOK_01.stem}.ipynb"   # the executed copy, beside its page
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", page.name, executed.name])
    assert any(cell.get("outputs") for cell in nbformat.read(executed, as_version=4).cells if cell.cell_type == "code")
    text = page.read_text()
    assert "FAST mode" in text and text.count('src="data:image/png;base64,') >= 1  # the outputs, figures included

    index = (out / "index.html").read_text()
    title = nbformat.read(NOTEBOOK_01, as_version=4).cells[0].source.splitlines()[0].lstrip("# ").strip()
    assert f'href="{page.name}"' in index and title in index
    assert "Learning goals" in index and "<li>" in index and "fast mode" in index
    assert f"equimod_edu {equimod_edu.__version__}" in index and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", index)

    assert NOTEBOOK_01.read_bytes() == before, "the build wrote into the repository's notebook"
    nb = nbformat.read(NOTEBOOK_01, as_version=4)
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
    assert not (REPO / "notebooks" / "runs").exists(), "a training run went into the repository"


def test_a_cell_that_raises_stops_the_build_with_one_line_naming_the_notebook_and_the_cell(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Broken\n\n**Learning goals**\n- none\n"),
                nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('boom\\non two lines')"),
                nbformat.v4.new_code_cell("print('never reached')")]
    nbformat.write(nb, folder / "01_broken.ipynb")
    done = book("--notebooks", str(folder), "--out", str(tmp_path / "book"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert book_lines(done.stderr) == [
        "book: error: 01_broken.ipynb: cell 3 (code cell 2: `raise ValueError('boom\\non two lines')`) "
        "raised ValueError: boom on two lines"], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "book" / "index.html").exists()


def test_an_unknown_notebook_number_is_a_clear_error_before_any_kernel_starts(tmp_path):
    done = book("--only", "01,99", "--out", str(tmp_path / "book"), timeout=60)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "--only 01,99: no notebook numbered 99" in last and "(there are 01, 02" in last, done.stderr
    assert not (tmp_path / "book").exists()


@pytest.mark.slow
def test_a_kernel_that_dies_once_gets_a_fresh_one_and_one_that_always_dies_fails(tmp_path, kernel_of_this_python):
    """execute_notebook retries a dead kernel once (an overloaded machine kills one now and then).

    A notebook that kills every kernel still fails, with DeadKernelError.
    """
    import nbclient

    from equimod_edu.book import execute_notebook

    marker = tmp_path / "died_once"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
                    f"import os, pathlib\nif not pathlib.Path({str(marker)!r}).exists():\n"
                    f"    pathlib.Path({str(marker)!r}).touch()\n    os._exit(1)"),
                nbformat.v4.new_code_cell("print('second kernel')")]
    said = []
    done = execute_notebook(nb, tmp_path / "once", kernel_name=kernel_of_this_python, timeout=60, log=said.append)
    assert marker.exists() and "second kernel" in done.cells[1].outputs[0]["text"]
    assert said == ["notebook: the kernel died; retrying with a fresh kernel (attempt 2 of 2)"]
    nb.cells = [nbformat.v4.new_code_cell("import os\nos._exit(1)")]
    with pytest.raises(nbclient.exceptions.DeadKernelError):
        execute_notebook(nb, tmp_path / "always", kernel_name=kernel_of_this_python, timeout=60, log=said.append)
    assert len(said) == 2


def _executed(cells):
    """A notebook of (kind, text[, printed]) cells, as nbclient leaves it: code cells with a stream output."""
    nb = nbformat.v4.new_notebook()
    for kind, text, *printed in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cell = nbformat.v4.new_code_cell(text)
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed[0] if printed else "")]
            nb.cells.append(cell)
    return nb


def test_the_quoting_rule_finds_prose_numbers_the_run_did_not_print():
    from equimod_edu.book import unprinted_numbers

    nb = _executed([("code", "gain = measure(brightness=1.40)", "gain +0.1753, rank 1/17\n"),
                    ("md", "**Reading it:** the gain is +0.175 (0.17 rounded) at brightness 1.40; loss 3.434."),
                    ("md", "**Reading it** (full mode; fast mode prints its own): 0.812."),
                    ("md", "**Reading it** (both modes, full mode too): 0.555."),
                    ("md", "From `data/results/live.json`: 0.623 ± 0.061; "
                           "torch 2.14.1 and version 0.1.0 are no numbers."),
                    ("md", "## References\n- Devillers & Lefort (2023), arXiv:2211.01244; https://arxiv.org/abs/2002.05709")])
    assert unprinted_numbers(nb, "fast") == [(1, "3.434"), (3, "0.555")]
    assert unprinted_numbers(nb, "full") == [(1, "3.434"), (2, "0.812"), (3, "0.555")]
    nb.cells[1].source = nb.cells[1].source.replace("; loss 3.434", "")
    assert unprinted_numbers(nb, "fast") == [(3, "0.555")]


@pytest.mark.parametrize("text,reason", [
    ('<<<<<<< HEAD\n{"cells": []}\n=======\n{"cells": [1]}\n>>>>>>> theirs\n', "merge conflict"),
    ('{"cells": 5, "nbformat": 4, "nbformat_minor": 5, "metadata": {}}', "not a notebook"),
    ("[1, 2]", "not a notebook"),
    ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 5}]}',
     "not a notebook"),
])
def test_a_notebook_that_is_not_json_or_not_a_notebook_stops_the_build_in_one_line_before_any_kernel(
        tmp_path, monkeypatch, capsys, text, reason):
    from equimod_edu import book as book_module

    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / NOTEBOOK_01.name).write_bytes(NOTEBOOK_01.read_bytes())
    (folder / "02_broken.ipynb").write_text(text)

    def no_kernel(*args, **kwargs):
        raise AssertionError("a notebook was executed before every notebook was read")

    monkeypatch.setattr(book_module, "execute_notebook", no_kernel)
    code = book_module.main(["--notebooks", str(folder), "--out", str(tmp_path / "book")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(folder / "02_broken.ipynb") in lines[0] and reason in lines[0] and "git" in lines[0]
    assert not (tmp_path / "book").exists()


@pytest.mark.parametrize("value", ["-5", "0"])
def test_a_timeout_that_is_not_positive_is_refused(tmp_path, monkeypatch, capsys, value):
    from equimod_edu import book as book_module

    def no_kernel(*args, **kwargs):
        raise AssertionError("a notebook was executed")

    monkeypatch.setattr(book_module, "execute_notebook", no_kernel)
    with pytest.raises(SystemExit) as stop:
        book_module.main(["--only", "01", "--timeout", value, "--out", str(tmp_path / "book")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--timeout" in err and "at least 1 s" in err and f"got {value}" in err
    with pytest.raises(ValueError, match="timeout"):
        book_module.build([NOTEBOOK_01], tmp_path / "book", timeout=int(value))
    assert not (tmp_path / "book").exists()
