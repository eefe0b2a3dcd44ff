"""The course: every notebook runs top to bottom in fast mode and is stored without outputs.

Each opens with its goals, its run time and a version check.

Notebooks are executed with nbclient in a temporary working folder (their training runs go there),
with EQUIMOD_FAST=1, on a kernel that runs *this* Python (sys.executable): a kernel spec named
"python3" is written to a temporary JUPYTER_PATH, which Jupyter searches first, so a user-level or
system "python3" kernel of another environment is never picked up.
"""

import importlib
import json
import re
import sys
import time
from pathlib import Path

import pytest

import equimod_edu

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISE_MODULES = ("loss_exercises", "displacement_exercise", "predictions")   # the homes of the check_ functions
# Per cell: a guard against a hung kernel (notebook 5 fits two predictors of ~2 min each on a busy CPU),
# not a speed target.
TIMEOUT_S = 600


def read(path):
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


# ---------------------------------------------------------------- the set of notebooks
def test_the_course_is_numbered_notebooks_in_order_each_with_its_teachers_answers():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{k:02d}" for k in range(1, len(NOTEBOOKS) + 1)], numbers
    answers = {p.stem for p in (REPO / "teachers").glob("[0-9][0-9]_*.md")}
    assert answers == {p.stem for p in NOTEBOOKS}, sorted(answers ^ {p.stem for p in NOTEBOOKS})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    nb = read(path)
    nbformat.validate(nb)
    for k, cell in enumerate(code_cells(nb)):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{path.name}: code cell {k} holds outputs; clear them before committing "
            f"(jupyter nbconvert --clear-output --inplace {path.relative_to(REPO)})")
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata; clear it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_with_goals_run_time_and_the_setup_cell(path):
    nb = read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "Learning goals" in first.source
    run_time = re.search(r"Run time on a CPU:\*\*(.*)", first.source)
    assert run_time and "fast mode" in run_time.group(1) and "full mode" in run_time.group(1)
    setup = code_cells(nb)[0].source
    assert setup.splitlines()[0] == "%matplotlib inline" and "setup(" in setup, "the first code cell is the setup call"
    others = "\n".join(cell.source for cell in code_cells(nb)[1:])
    assert "EQUIMOD_FAST" not in others, "read the flag once, in the first code cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ends_with_summary_references_and_exercises_answered_for_teachers(path):
    """d2l's template: the last cells are a summary, references and exercises.

    The exercises' answers live in teachers/ (outside the package students import), which the exercises cell names.
    """
    nb = read(path)
    headings = [cell.source.splitlines()[0] for cell in nb.cells if cell.cell_type == "markdown" and cell.source]
    assert headings[-3:] == ["## Summary", "## References", "## Exercises"], headings[-3:]
    key = f"teachers/{path.stem}.md"
    assert f"`{key}`" in nb.cells[-1].source, f"the exercises cell of {path.name} must name {key}"
    answers = (REPO / key).read_text()
    assert answers.startswith(f"# Notebook {int(path.name[:2])}, answers for teachers")
    assert "import solutions" not in "\n".join(cell.source for cell in nb.cells)


def _run_setup_cell(source: str) -> dict:
    namespace = {}
    exec("\n".join(line for line in source.splitlines() if not line.startswith("%")), namespace)
    return namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_version_check_passes_here_and_fails_clearly_on_another_version(path, monkeypatch, capsys):
    setup = code_cells(read(path))[0].source
    monkeypatch.setenv("EQUIMOD_FAST", "1")
    assert _run_setup_cell(setup)["FAST"] is True and "FAST mode" in capsys.readouterr().out
    monkeypatch.setenv("EQUIMOD_FAST", "0")
    assert _run_setup_cell(setup)["FAST"] is False and "full mode" in capsys.readouterr().out
    monkeypatch.setattr(equimod_edu, "__version__", "9.9.9")
    with pytest.raises(RuntimeError) as error:
        _run_setup_cell(setup)
    message = str(error.value)
    assert "written for equimod_edu 0.1.0" in message and "9.9.9" in message and "pip install -e ." in message


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_call_the_library_and_leave_exercise_stubs(path):
    nb = read(path)
    text = "\n".join(cell.source for cell in code_cells(nb))
    assert "equimod_edu" in text
    assert "class Trainer" not in text and "def training_step" not in text, "the engine belongs in the library"
    stubs = [cell.source for cell in code_cells(nb) if "raise NotImplementedError" in cell.source]
    if path.name[:2] in ("02", "03"):
        assert stubs and all("check_" in source for source in stubs)
    for name in set(re.findall(r"\b(check_\w+)\(", text)):   # each check is imported from the module defining it
        home = next(m for m in EXERCISE_MODULES if hasattr(importlib.import_module(f"equimod_edu.{m}"), name))
        assert re.search(rf"^from equimod_edu\.{home} import .*\b{name}\b", text, re.M), (
            f"{path.name} calls {name}: import it from equimod_edu.{home}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_retrain_cells_leave_deleting_a_run_folder_to_the_trainer(path):
    """No code cell deletes a run folder itself: `Trainer(cfg, overwrite=True)` does, under the folder's lock.

    A `shutil.rmtree` of the folder first would delete the lock of a training writing there and mix the two runs.
    """
    for cell in code_cells(read(path)):
        assert "rmtree(" not in cell.source, (
            f"{path.name}: a code cell deletes a folder with rmtree; let Trainer(cfg, overwrite=True) replace the run")


# ---------------------------------------------------------------- running them
@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom_in_fast_mode(path, tmp_path, monkeypatch, kernel_of_this_python):
    """Executed and rendered as `make book` does (equimod_edu.book).

    So CI checks the book in fast mode without running the notebooks twice.
    """
    from equimod_edu import book

    monkeypatch.setenv("EQUIMOD_FAST", "1")
    tic = time.perf_counter()
    nb = read(path)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('KERNEL', sys.executable)"))
    try:
        # each attempt in a fresh folder under tmp_path; a cell with no reply within TIMEOUT_S (seen once in
        # CI: the kernel idle, nbclient still waiting) gets one more try with a fresh kernel, a second hang fails
        nb = book.execute_notebook(nb, tmp_path, kernel_name=kernel_of_this_python, timeout=TIMEOUT_S,
                                   name=path.name)
    except book.CellError as error:   # an error in a cell: never retried
        pytest.fail(f"{path.name} failed in fast mode:\n{error.details[-4000:]}")
    seconds = time.perf_counter() - tic
    print(f"{path.name}: {seconds:.0f} s in fast mode")

    def text(cell):
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    cells = code_cells(nb)
    assert "FAST mode" in text(cells[0]), "EQUIMOD_FAST=1 did not reach the kernel"
    assert text(cells[-1]).strip() == f"KERNEL {sys.executable}", "the kernel ran another Python"
    for cell in cells:
        if "raise NotImplementedError" in cell.source:
            assert "not implemented yet" in text(cell), "an exercise check did not report the stub"
    # the quoting rule: every number of the prose is printed by this run, or its cell says where it comes from
    unprinted = book.unprinted_numbers(nb, "fast")
    assert not unprinted, (f"{path.name}: the prose quotes numbers this fast-mode run did not print "
                           f"(cell, number): {unprinted}; print them, or label the cell (full mode, `data/...`)")

    # the book's page of this notebook shows its outputs: the mode line, and every figure as an image
    page = book.to_html(nb, resources_path=path.parent)
    pngs = sum("image/png" in o.get("data", {}) for cell in cells for o in cell.outputs)
    assert "FAST mode" in page and f"KERNEL {sys.executable}" in page
    assert page.count('src="data:image/png;base64,') >= pngs
    if any("matplotlib" in cell.source for cell in cells):
        assert pngs > 0, f"{path.name} plots, but no figure reached its outputs"


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S)
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in ("05", "06")], ids=lambda p: p.stem)
def test_the_retrain_flag_trains_a_matched_pair_instead_of_loading(path, tmp_path, monkeypatch, kernel_of_this_python):
    """RETRAIN = True: the notebook's own training cell runs (in fast mode); the rest is the same code."""
    nb = read(path)
    flag = next(i for i, cell in enumerate(nb.cells) if "RETRAIN = False" in cell.source)
    branch = next(i for i, cell in enumerate(nb.cells) if "if RETRAIN:" in cell.source)
    nb.cells[flag].source = nb.cells[flag].source.replace("RETRAIN = False", "RETRAIN = True")
    nb.cells = nb.cells[: branch + 1]
    monkeypatch.setenv("EQUIMOD_FAST", "1")
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name=kernel_of_this_python, timeout=TIMEOUT_S,
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} with RETRAIN = True failed:\n{str(error)[-4000:]}")
    runs = sorted(p.parent.name for p in (workdir / "runs" / "notebooks").glob("*/checkpoint.pt"))
    assert len(runs) == 2 and any("simclr" in r for r in runs) and any("equimod" in r for r in runs), runs


# ---------------------------------------------------------------- the measured story stays true
STORY_METRICS = ("shape_acc", "colour_acc", "knn_acc", "equivariance_gain", "hue_sensitivity", "train_seconds")


#: The lambda sweep's runs shared the machine with other work: its wall times are not shown.
LAMBDA_METRICS = ("shape_acc", "colour_acc", "knn_acc", "equivariance_gain", "hue_sensitivity")

#: The (variant, metric) cells of data/results/live.json that the claim table of notebook 6 and the README quotes.
CLAIM_CELLS = (("random", "shape_acc"), ("simclr", "shape_acc"), ("supervised", "shape_acc"), ("equimod", "shape_acc"),
               ("byol", "shape_acc"), ("byol-equimod", "shape_acc"), ("simclr-time", "shape_acc"),
               ("byol-time", "shape_acc"), ("simclr", "colour_acc"), ("simclr-no-colour", "colour_acc"),
               ("equimod", "colour_acc"), ("byol", "colour_acc"), ("byol-equimod", "colour_acc"),
               ("equimod-mlp-cyclic", "colour_acc"), ("equimod", "hue_sensitivity"),
               ("equimod-mlp-cyclic", "hue_sensitivity"))


@pytest.mark.parametrize("name", ["live", "module_search", "lambda_sweep", "live_fp32"])
def test_notebook_6_and_the_readme_tell_the_numbers_of_the_shipped_results(name):
    """The whole tables of data/results are in docs/research_log.md and the README as printed.

    Exactly as compare.table_markdown prints them; notebook 6 names data/results/live.json and holds the claim
    table (the same as the README's), each of whose numbers is read here from the files (live.json,
    and reference.json for the gain at twice the training), and every three-decimal number of its
    prose that cites a file (the cells the quoting rule leaves to this test) is one of the files' (or a
    chance level, or a number the claim table is checked for): no stale number survives a new measurement.
    """
    from equimod_edu.book import CITED_ELSEWHERE
    from equimod_edu.compare import table_markdown

    result = json.loads((REPO / "data" / "results" / f"{name}.json").read_text())
    expected = table_markdown(result["summary"], LAMBDA_METRICS if name == "lambda_sweep" else STORY_METRICS)
    readme = (REPO / "README.md").read_text()
    research_log = (REPO / "docs" / "research_log.md").read_text()
    for where, text in (("docs/research_log.md", research_log), ("README.md", readme)):
        assert f"`data/results/{name}.json`" in text, where
        assert expected in text, f"{where}'s table for {name} differs from data/results/{name}.json; paste:\n{expected}"
    if name != "live":
        return
    reference = json.loads((REPO / "data" / "results" / "reference.json").read_text())
    efficiency = json.loads((REPO / "data" / "results" / "label_efficiency.json").read_text())
    nb = read(REPO / "notebooks" / "06_what_the_representation_keeps.ipynb")
    prose = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "data/results/live.json" in prose and "data/results/live.json" in "\n".join(c.source for c in code_cells(nb))

    def claim_table(text):
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("| the paper's claim |"))
        end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
        return "\n".join(lines[start:end])

    table = claim_table(prose)
    assert claim_table(readme) == table, "README.md and notebook 6 hold different claim tables"
    assert len(table.splitlines()) == 2 + 7, "the claim table has seven rows"
    summary = result["summary"]

    def cell(variant, metric):   # a mean of -0.0004 is quoted as 0.000: the table says "zero", not its sign
        text = f"{summary[variant][metric]['mean']:.3f} ± {summary[variant][metric]['std']:.3f}"
        return text.replace("-0.000 ", "0.000 ")

    def mean(variant, metric="colour_acc"):
        return summary[variant][metric]["mean"]

    def gain(base, equimod):   # EquiMod's shape gain over its base, mean over seeds
        return f"{mean(equimod, 'shape_acc') - mean(base, 'shape_acc'):+.3f}"

    def seed_0_gain(file):     # the same at seed 0, the only seed of reference.json (twice live.json's epochs)
        runs = file["runs"]
        return f"{runs['equimod']['0']['shape_acc'] - runs['simclr']['0']['shape_acc']:+.3f}"

    # what the claim table quotes, computed from data/results (the words around the numbers are free)
    cells = {cell(variant, metric) for variant, metric in CLAIM_CELLS}
    gains = {gain("simclr", "equimod"), gain("byol", "byol-equimod"), seed_0_gain(result), seed_0_gain(reference)}
    lost = mean("simclr-no-colour") - mean("simclr")                      # object colour lost to invariance
    kept = f"{(mean('equimod') - mean('simclr')) / lost:.0%}".replace("%", " %")   # the share EquiMod keeps
    quoted = set(re.findall(r"\d\.\d{3} ± \d\.\d{3}", table))
    assert quoted == cells, f"notebook 6's claim table: quoted, not measured {sorted(quoted - cells)}; " \
                            f"measured, not quoted {sorted(cells - quoted)} (data/results/live.json)"
    signed = set(re.findall(r"(?<![\w.])[+-]\d\.\d{3}(?!\d)", table))
    assert signed == gains, f"notebook 6's claim table: shape gains {sorted(signed)}, measured {sorted(gains)}"
    assert f"{lost:.2f}" in re.findall(r"(?<![\d.])\d\.\d\d(?!\d)", table), f"the colour lost, {lost:.2f}"
    assert kept in re.findall(r"(?<![\d.])\d+ %", table), f"the share of the lost colour EquiMod keeps, {kept}"
    number = r"(?<![\d.])\d\.\d{3}(?!\d)"
    known = ({f"{s[k]:.3f}" for per in summary.values() for s in per.values() if s and s.get("mean") is not None
              for k in ("mean", "std")} | {"0.125", "0.083"}   # + the chance levels of shape and object colour
             | {shape_gain.lstrip("+-") for shape_gain in gains}
             | {f"{v:.3f}" for values in efficiency["curves"].values() for v in values})
    cited = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown"
                      and any(label in cell.source for label in CITED_ELSEWHERE))
    stale = sorted(set(re.findall(number, cited)) - known)
    assert not stale, f"notebook 6 quotes numbers that are not in data/results/: {stale}"


PEERS_NOTEBOOK = REPO / "notebooks" / "07_other_ways_to_keep_what_augmentations_change.ipynb"


@pytest.mark.skipif(not (REPO / "data" / "results" / "peers.json").exists(),
                    reason="data/results/peers.json is not measured yet (equimod-edu compare --preset cpu-live "
                           "--seeds 0,1,2 --out runs/peers --variants augself,cassle,essl,care,split)")
def test_notebook_7_and_the_readme_tell_the_numbers_of_the_peers():
    """The README's peers table is compare.table_markdown of the merged files, as notebook 7 prints it.

    Notebook 7's table cell reads data/results/peers.json and live.json and merges them the same way
    (the rows of compare.PEER_REFERENCES from live.json, every peer but random init from peers.json), and
    every three-decimal number of its prose that cites a file is one of the files' (no stale number).
    """
    from equimod_edu.compare import PEER_METRICS, PEER_REFERENCES, merged_summary, table_markdown

    live, peers = (json.loads((REPO / "data" / "results" / f"{name}.json").read_text()) for name in ("live", "peers"))
    summary = merged_summary((live, PEER_REFERENCES), (peers, [v for v in peers["summary"] if v != "random"]))
    expected = table_markdown(summary, PEER_METRICS)
    readme = (REPO / "README.md").read_text()
    assert "`data/results/peers.json`" in readme
    assert expected in readme, f"README.md's peers table differs from data/results/peers.json; paste:\n{expected}"
    nb = read(PEERS_NOTEBOOK)
    code = "\n".join(cell.source for cell in code_cells(nb))
    for needed in ('"peers.json"', '"live.json"', "merged_summary((live, PEER_REFERENCES), (peers, peer_rows))",
                   "table_markdown(summary, PEER_METRICS)"):
        assert needed in code, f"notebook 7's table cell does not hold {needed}"
    known = {f"{s[k]:.3f}" for file in (live, peers) for per in file["summary"].values() for s in per.values()
             if s and s.get("mean") is not None for k in ("mean", "std")}
    known |= {f"{v:.3f}" for file in (live, peers) for seeds in file["runs"].values() for run in seeds.values()
              for v in run.values() if isinstance(v, float)}
    cited = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown" and "`data/" in cell.source)
    stale = sorted(set(re.findall(r"(?<![\d.])\d\.\d{3}(?!\d)", cited)) - known)
    assert not stale, f"notebook 7 quotes numbers that are not in data/results/: {stale}"
