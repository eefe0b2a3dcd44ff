"""The package as a whole: install metadata, the conda file, the main job, the CLI, the layout, the docstrings."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import equimod_edu

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parents[1] / "equimod_edu"

# One docstring convention: a one-line summary, then prose (shapes and code in double backticks).
# No Sphinx roles (there is no Sphinx build) and no Google-style section headers.
SPHINX_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc|py:\w+):`")
GOOGLE_SECTION = re.compile(r"^\s*(?:Args|Arguments|Parameters|Returns|Raises|Yields|Attributes|Example|Examples"
                            r"|Note|Notes):\s*$")


def test_environment_yml_installs_the_package_and_lists_no_second_set_of_dependencies():
    text = (REPO / "environment.yml").read_text()
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    pip_items = [line[2:].strip() for line in lines if line.startswith("- ") and line[2:].strip().startswith("-e")]
    assert pip_items == ['-e ".[test]"'], "environment.yml must install this package with pip"
    after = lines[lines.index("dependencies:") + 1:]
    conda_deps = [line[2:].strip() for line in after if line.startswith("- ") and not line[2:].strip().startswith("-e")]
    # only python and pip come from conda; everything else from pyproject.toml
    assert all(re.match(r"^(python(=[\d.]+)?|pip|pip:)$", dep) for dep in conda_deps), conda_deps
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    python = re.search(r"python=([\d.]+)", text).group(1)
    minimum = pyproject["project"]["requires-python"].lstrip(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, minimum.split(".")))


def test_dependencies_are_ranges_that_admit_the_ci_wheels():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in deps}
    assert {"torch", "torchvision", "jupyterlab", "ipywidgets", "matplotlib", "scikit-learn", "umap-learn",
            "tqdm"} <= names
    assert not [d for d in deps if "==" in d], "pin nothing exactly: notebooks should survive upgrades"
    from packaging.specifiers import SpecifierSet
    spec = {re.split(r"[<>=!~ ]", d)[0]: SpecifierSet(d[len(re.split(r"[<>=!~ ]", d)[0]):]) for d in deps}
    from importlib.metadata import version
    for name in ("torch", "torchvision"):  # the ranges admit what is installed here
        assert version(name).split("+")[0] in spec[name], (name, version(name), spec[name])


def test_version_is_single_sourced():
    from importlib.metadata import version
    assert version("equimod_edu") == equimod_edu.__version__


def test_the_gallery_command_saves_a_figure_and_prints_parameter_vectors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "equimod_edu.cli", "gallery", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\s+\d+\s+-?\d+\.\d\d", line)]
    assert len(rows) == 6 and all(len(re.findall(r"-?\d+\.\d\d", r.split("crop")[0])) == 15 for r in rows)


def test_the_main_job_compares_random_simclr_and_equimod_and_prints_the_report_path_last(tmp_path):
    done = subprocess.run([sys.executable, "-m", "equimod_edu.cli", "demo", "--quick", "--no-progress",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == str(tmp_path / "report.json")
    report = json.loads(Path(last).read_text())
    for model in ("random", "simclr", "equimod"):
        assert {"shape_acc", "colour_acc", "knn_acc"} <= set(report[model])
        assert 0 <= report[model]["shape_acc"] <= 1
    for model in ("simclr", "equimod"):
        for key in ("equivariance_gain", "mrr", "hit1"):
            assert isinstance(report[model][key], float), (model, key)
    assert report["wall_seconds"] > 0
    assert report["simclr"]["train_seconds"] > 0 and report["random"]["train_seconds"] == 0
    assert report["chance"]["shape_acc"] == pytest.approx(1 / 8)
    assert report["chance"]["colour_acc"] == pytest.approx(1 / 12)
    assert report["probe"]["n_train"] == 512 and report["probe"]["n_test"] == 256  # the quick sizes, said as such
    assert "| random |" in done.stdout and "| equimod |" in done.stdout
    assert "chance: shape_acc 0.125, colour_acc 0.083" in done.stdout
    assert (tmp_path / "gallery.png").exists() and (tmp_path / "comparison.png").exists()


def test_the_readme_layout_lists_every_module_and_imports_flow_down_it():
    """README's layout names each module once, each importing only the ones above it.

    Lazy imports inside functions included; and no module imports another module's _private names.
    """
    import ast

    text = (REPO / "README.md").read_text()
    block = text[text.index("equimod_edu/\n"):].split("```")[0]
    listed = [line.split()[0] for line in block.splitlines()[1:] if line.startswith("  ")]
    order = [name[:-3] for name in listed if name.endswith(".py")]
    modules = {p.stem for p in (REPO / "equimod_edu").glob("*.py")} - {"__init__"}
    assert set(order) == modules and len(order) == len(set(order)), sorted(modules ^ set(order))
    position = {name: i for i, name in enumerate(order)}
    for name in order:
        tree = ast.parse((REPO / "equimod_edu" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                assert position[node.module] < position[name], f"{name} imports {node.module}, listed below it"
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{name} imports private names {private} from {node.module}"


def test_make_test_and_ci_run_every_test_and_make_test_fast_is_the_quick_loop():
    """Slow and browser tests are opt-in locally (tests/conftest.py); `make test`, which .ci/run runs, opts in."""
    makefile = (REPO / "Makefile").read_text()

    def recipe(target):
        return re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)

    assert "pytest --run-slow" in recipe("test") and "--run-slow" not in recipe("test-fast")
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test" and "EQUIMOD_ALL_TESTS=1" in ci


def test_docstrings_are_prose_without_sphinx_roles_or_google_sections():
    problems = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=False)
            if doc is None:
                continue
            first = node.body[0].lineno  # the line the docstring starts on
            for offset, line in enumerate(doc.splitlines()):
                if SPHINX_ROLE.search(line):
                    problems.append(f"{path.name}:{first + offset}: Sphinx role (write ``name``): {line.strip()}")
                if GOOGLE_SECTION.match(line):
                    problems.append(f"{path.name}:{first + offset}: Google section header (write prose): "
                                    f"{line.strip()}")
    assert not problems, "docstrings off the project's convention:\n" + "\n".join(problems)
