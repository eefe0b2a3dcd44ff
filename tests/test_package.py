"""The package as a whole: install metadata, the conda file, the main job, the CLI."""

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
    assert report["wall_seconds"] > 0 and report["simclr"]["train_seconds"] > 0 and report["random"]["train_seconds"] == 0
    assert report["chance"]["shape_acc"] == pytest.approx(1 / 8) and report["chance"]["colour_acc"] == pytest.approx(1 / 12)
    assert report["probe"]["n_train"] == 512 and report["probe"]["n_test"] == 256  # the quick sizes, said as such
    assert "| random |" in done.stdout and "| equimod |" in done.stdout
    assert "chance: shape_acc 0.125, colour_acc 0.083" in done.stdout
    assert (tmp_path / "gallery.png").exists() and (tmp_path / "comparison.png").exists()


def test_cli_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "equimod_edu.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("demo", "gallery", "train", "evaluate", "compare", "label-efficiency"):
        assert command in done.stdout


def test_the_readme_layout_lists_every_module_and_imports_flow_down_it():
    """README's layout names each module once, in an order where a module imports only the ones above
    it (lazy imports inside functions included), and no module imports another module's _private names."""
    import ast

    text = (REPO / "README.md").read_text()
    block = text[text.index("equimod_edu/\n"):].split("```")[0]
    listed = [line.split()[0] for line in block.splitlines()[1:] if line.startswith("  ")]
    order = [name[:-3] for name in listed if name.endswith(".py")]
    compat = {"evaluate", "explore"}  # the names of earlier releases, listed on the last line
    modules = {p.stem for p in (REPO / "equimod_edu").glob("*.py")} - {"__init__"}
    assert set(order) | compat == modules and len(order) == len(set(order)), sorted(modules ^ (set(order) | compat))
    position = {name: i for i, name in enumerate(order)}
    for name in order:
        tree = ast.parse((REPO / "equimod_edu" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                assert node.module not in compat, f"{name} imports the compatibility module {node.module}"
                assert position[node.module] < position[name], f"{name} imports {node.module}, listed below it"
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{name} imports private names {private} from {node.module}"


def test_the_names_of_earlier_releases_still_import_or_say_where_they_went():
    from equimod_edu import evaluate, explore, probes, widgets

    assert evaluate.linear_probe is probes.linear_probe and explore.DisplacementExplorer is widgets.DisplacementExplorer
    with pytest.raises(AttributeError, match=r"config\.column_names\(\)"):
        explore.column_names
