r"""Shipped checkpoints: small, weights-only files that let notebooks open instantly.

    from equimod_edu.pretrained import available, load_pretrained
    available()              # ['augself', 'care', 'cassle', 'equimod', 'essl', 'simclr', ...]
    model, cfg, metrics = load_pretrained("equimod")  # model in eval mode, its TrainConfig, its metrics

Each file in ``data/pretrained/`` holds one trained model (its state dict in float32 on the CPU),
its TrainConfig and the headline metrics of its evaluation (``report.headline`` of the run's
``eval/report.json``); no optimiser, so a few MB each. ``MANIFEST.json`` lists, per name: the
file, its size and SHA-256, the command that trained and evaluated it, its config and the
metrics. ``load_pretrained`` checks the SHA-256 before loading and says what to
do when a file is missing or altered.

How the shipped files were made (the project's own commands, nothing else; data/results/README.md):

    equimod-edu compare --preset cpu-reference --seeds 0 --out runs/reference \
        --variants simclr,simclr-no-colour,equimod,supervised --no-progress
    python -c "from equimod_edu.pretrained import export_pretrained as e; \
        [e(f'runs/reference/{v}-s0', v) for v in ('simclr', 'simclr-no-colour', 'equimod', 'supervised')]"

The peers of notebook 7 (AugSelf, CASSLE, E-SSL, CARE, the split space) are the seed-0 runs of
``data/results/peers.json`` (``cpu-live``, float32), exported the same way from ``runs/peers/<variant>-s0``.

A rebuilt file will not have the same SHA-256 as the shipped one (floating-point sums differ
between machines and thread counts); ``export_pretrained`` records the new one in the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from pathlib import Path
from typing import Optional

import torch

from . import __version__
from .files import atomic_write

__all__ = ["PRETRAINED_DIR", "MANIFEST_NAME", "PretrainedError", "available", "manifest", "export_pretrained",
           "load_pretrained", "sha256_of", "verify", "TRAINING_ONLY"]

#: Where the shipped checkpoints and their manifest live: the repository's ``data/pretrained/``. They
#: ship with the code, so EQUIMOD_DATA (which moves the dataset cache, see data.DATA_DIR) does not move them.
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "data" / "pretrained"
MANIFEST_NAME = "MANIFEST.json"


class PretrainedError(RuntimeError):
    """A shipped checkpoint is unknown, missing or altered (the message says how to rebuild it)."""


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------
def _dir(directory) -> Path:
    return Path(directory) if directory is not None else PRETRAINED_DIR


def manifest(directory=None) -> dict:
    """The manifest {"version", "checkpoints": {name: entry}} ({} of checkpoints when there is none)."""
    path = _dir(directory) / MANIFEST_NAME
    if not path.exists():
        return {"version": __version__, "checkpoints": {}}
    restore = f"restore it with `git checkout -- {path}` (or re-export the checkpoints)"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedError(f"{path} is not valid JSON ({getattr(error, 'msg', error)}): {restore}") from None
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    fields = ("file", "sha256")
    if not isinstance(entries, dict) or not all(isinstance(e, dict) and all(k in e for k in fields)
                                                for e in entries.values()):
        raise PretrainedError(f"{path} is not a manifest (it needs 'checkpoints': name -> an entry with "
                              f"{' and '.join(fields)}): {restore}")
    return data


def available(directory=None) -> list[str]:
    """Names of the checkpoints listed in the manifest (sorted)."""
    return sorted(manifest(directory)["checkpoints"])


def _write_manifest(data: dict, directory: Path) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(directory / MANIFEST_NAME, lambda f: f.write(text.encode()))


def sha256_of(path) -> str:
    """The SHA-256 of a file, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Commands that (re)build a checkpoint
# --------------------------------------------------------------------------------------------
def _run_command(run_dir: Path) -> Optional[str]:
    """The command line that trained the run, from its environment.json (argv), if recorded."""
    path = run_dir / "environment.json"
    if not path.exists():
        return None
    argv = list(json.loads(path.read_text()).get("argv") or [])
    if not argv:
        return None
    if argv[0].endswith(("cli.py", "equimod-edu")):
        argv[0] = "equimod-edu"
    return " ".join(shlex.quote(a) for a in argv)


def _rebuild_hint(name: str, entry: Optional[dict]) -> str:
    entry = entry or {}
    lines = ["To rebuild it, train and evaluate the run with the project's own command, then export it:"]
    if entry.get("command"):
        lines.append(f"    {entry['command']}")
    run_dir = entry.get("run_dir", "RUN_DIR")
    lines.append(f"    python -c \"from equimod_edu.pretrained import export_pretrained; "
                 f"export_pretrained('{run_dir}', '{name}')\"")
    lines.append("Or restore the shipped file from git: git checkout -- data/pretrained/")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Export and load
# --------------------------------------------------------------------------------------------
def export_pretrained(run_dir, name: str, out_dir=None, command: Optional[str] = None) -> dict:
    """Write run_dir's model as a weights-only checkpoint ``out_dir/<name>.pt`` and list it in the manifest.

    run_dir: a finished training run (``checkpoint.pt``) that has been evaluated
    (``eval/report.json``, written by ``equimod-edu compare`` or ``equimod-edu evaluate``).
    The file holds {"model": state dict, float32, CPU, contiguous; "config": TrainConfig dict;
    "metrics": report.headline(report); "name"; "version"}: no optimiser, a few MB. The run's
    full report is copied beside it as ``<name>.report.json``. command: how the run was trained
    (default: the argv in the run's environment.json). Returns the manifest entry.
    """
    from .checkpoint import augmentation_of, load_checkpoint, model_config_of
    from .config import TrainConfig
    from .report import headline

    run_dir, out = Path(run_dir), _dir(out_dir)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem (e.g. 'equimod'), got {name!r}")
    report_path = run_dir / "eval" / "report.json"
    if not report_path.exists():
        raise FileNotFoundError(f"{report_path} does not exist: evaluate the run first "
                                f"(equimod-edu evaluate {run_dir} --fast), then export it")
    state = load_checkpoint(run_dir)
    if state.get("stop_reason") != "finished":
        raise ValueError(f"{run_dir} has not finished training (stop_reason {state.get('stop_reason')!r}); "
                         f"continue it with: equimod-edu train --out {run_dir} --resume")
    report = json.loads(report_path.read_text())
    metrics = headline(report)
    objective = state.get("objective", "self-supervised")
    dropped = _not_shipped(objective)
    weights = {key: (value.detach().float() if value.is_floating_point() else value.detach()).cpu().contiguous()
               for key, value in state["model"].items() if not key.startswith(dropped)}
    config = TrainConfig.from_dict(state["config"]).to_dict()  # every field, checked
    payload = {"model": weights, "config": config,
               "model_config": dataclasses.asdict(model_config_of(state)),
               "augmentation": dataclasses.asdict(augmentation_of(state)),
               "metrics": metrics, "name": name, "objective": objective, "version": __version__}
    path = atomic_write(out / f"{name}.pt", lambda f: torch.save(payload, f))
    (out / f"{name}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    history = state.get("metrics") or []
    entry = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        "report": f"{name}.report.json",
        "run_dir": str(run_dir),
        "command": command or _run_command(run_dir),
        "config": config,
        "objective": objective,
        "metrics": metrics,
        "evaluation": {"fast": report.get("meta", {}).get("fast"), "seed": report.get("meta", {}).get("seed"),
                       "sizes": report.get("meta", {}).get("sizes")},
        "training": {"steps": state.get("step"), "epochs": state.get("epoch"),
                     "final_loss": history[-1].get("loss") if history else None,
                     "final_gain": history[-1].get("gain") if history else None},
        "version": __version__,
    }
    data = manifest(out)
    data["version"] = __version__
    data["checkpoints"][name] = entry
    data["checkpoints"] = dict(sorted(data["checkpoints"].items()))
    _write_manifest(data, out)
    return entry


def verify(name: str, directory=None) -> Path:
    """The path of checkpoint `name` after checking it is listed, present and unaltered (SHA-256).

    Raises PretrainedError with what is wrong and the commands that rebuild the file.
    """
    directory = _dir(directory)
    entries = manifest(directory)["checkpoints"]
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise PretrainedError(f"no shipped checkpoint named {name!r} in {directory / MANIFEST_NAME} "
                              f"(available: {known}).")
    entry = entries[name]
    path = directory / entry["file"]
    if not path.exists():
        raise PretrainedError(f"the shipped checkpoint {name!r} is missing: {path} does not exist.\n"
                              + _rebuild_hint(name, entry))
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise PretrainedError(
            f"the shipped checkpoint {name!r} was altered: {path} has SHA-256 {actual[:16]}..., the manifest "
            f"says {entry['sha256'][:16]}... ({path.stat().st_size} bytes, expected {entry.get('bytes')}). "
            f"It may be truncated, edited, or a Git LFS pointer instead of the file.\n" + _rebuild_hint(name, entry))
    return path


def load_pretrained(name: str, directory=None, map_location="cpu"):
    """(model in eval mode, TrainConfig, metrics dict) of a shipped checkpoint, after checking its SHA-256.

    metrics: the headline metrics measured when it was exported (see compare.METRICS).
    """
    from .checkpoint import CheckpointError, build_model, load_checkpoint
    from .config import TrainConfig

    path = verify(name, directory)
    entry = manifest(directory)["checkpoints"][name]
    try:  # tensors and plain values only; torch's advice to load without weights_only is never relayed
        state = load_checkpoint(path, map_location)
    except CheckpointError as error:
        raise PretrainedError(f"the shipped checkpoint {name!r} cannot be loaded: {path} is not a readable "
                              f"checkpoint ({error.reason}).\n"
                              + _rebuild_hint(name, entry)) from None
    missing = [key for key in ("config", "metrics") if not isinstance(state.get(key), dict)]
    if missing:
        raise PretrainedError(f"the shipped checkpoint {name!r} cannot be loaded: {path} has no {' or '.join(missing)} "
                              f"entry (not a file export_pretrained wrote).\n" + _rebuild_hint(name, entry))
    try:
        model = build_model(state, map_location, missing_ok=_not_shipped(state.get("objective", "self-supervised")))
        cfg = TrainConfig.from_dict(state["config"])
    except ValueError as error:
        raise PretrainedError(f"the shipped checkpoint {name!r} does not fit its config: {error}") from None
    return model, cfg, dict(state["metrics"])


#: What a shipped file leaves out, as state-dict key prefixes: BYOL's EMA target (needed only to
#: train; loading copies the online network into it), and for the supervised reference its
#: projector (never trained: the labels train the backbone and a classifier). Keeps
#: data/pretrained/ under 30 MB.
TRAINING_ONLY = ("target_backbone.", "target_projector.")


def _not_shipped(objective: str) -> tuple[str, ...]:
    return TRAINING_ONLY + (("projector.",) if objective == "supervised" else ())
