"""Checkpoints: one file per run, written atomically, read with weights_only=True, self-describing.

    save_checkpoint("runs/equimod/checkpoint.pt", trainer.state())
    state = load_checkpoint("runs/equimod")            # a run folder or a file
    model = build_model(state)                         # the model, its weights loaded, eval mode
    model, cfg = load_model("runs/equimod")            # the same, with the run's TrainConfig

A checkpoint holds the model and optimiser state, the schedule, the step, the run's TrainConfig
("config"), the ModelConfig ("model_config") and AugmentationConfig ("augmentation") it implies,
the metrics and the package version. `build_model` needs only "model_config" and "model": the
trainer, the evaluations, the explorers and the shipped checkpoints of data/pretrained all build
their model with it. (Files written before "model_config" was stored are read through their
"config".)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .augment import AugmentationConfig
from .config import TrainConfig, check_fields
from .files import atomic_write
from .models import EquiModModel, ModelConfig

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "save_checkpoint", "load_checkpoint", "all_finite", "model_config_of",
           "augmentation_of", "describe", "build_model", "load_model"]

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path, state: dict) -> None:
    """Write `state` with torch.save, atomically (files.atomic_write): a kill leaves the old or the new file."""
    atomic_write(path, lambda f: torch.save(state, f))


class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or not an equimod_edu checkpoint (the message says which).

    .reason: what is wrong with the file, without the advice (e.g. "truncated or damaged").
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint safely (weights_only=True: tensors and plain Python values only).

    path: a checkpoint file, or a run folder holding checkpoint.pt. A missing file raises
    FileNotFoundError; a damaged one (truncated, empty, random bytes, a folder, an object that is
    not tensors and plain values) raises CheckpointError naming the file and what to do.
    """
    path = Path(path)
    if path.is_dir() and path.name != CHECKPOINT_NAME:  # a run folder
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():  # a FIFO would make torch.load wait forever, a device such as /dev/zero read forever
        raise CheckpointError(f"{path} is not a plain file (a FIFO, a device or a socket), not a checkpoint: "
                              f"move it away and restore the checkpoint from a copy", "not a plain file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch's messages differ by damage; its advice to drop weights_only is never relayed
        kind = "empty" if path.stat().st_size == 0 else (
            "it holds objects other than tensors and plain values, which this package never loads"
            if "weights_only" in str(error) or "Unsupported global" in str(error)
            else "truncated or damaged")
        run = next((folder for folder in path.parents[:2] if (folder / CHECKPOINT_NAME).is_file()), None)
        if path.name != CHECKPOINT_NAME and run is not None:  # a file of a run, given instead of its folder
            raise CheckpointError(f"{path} is a file of a run, not a checkpoint: pass the run folder {run}",
                                  kind) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({kind}). Restore it from a copy, or "
                              f"retrain the run (equimod-edu train ... --overwrite).", kind) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is a torch file but not an equimod_edu checkpoint (no 'model' entry)")
    return state


def all_finite(tensors) -> bool:
    """True when every floating-point tensor of the iterable holds only finite values (one host sync)."""
    checks = [torch.isfinite(t).all() for t in tensors if torch.is_tensor(t) and t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def model_config_of(state: dict) -> ModelConfig:
    """The ModelConfig a checkpoint describes ("model_config", or rebuilt from its TrainConfig)."""
    if "model_config" in state:
        check_fields(ModelConfig, state["model_config"])
        return ModelConfig(**state["model_config"])
    return TrainConfig.from_dict(state["config"]).model_config()


def augmentation_of(state: dict) -> AugmentationConfig:
    """The AugmentationConfig a checkpoint was trained with (its t encoding depends on it)."""
    if "augmentation" in state:
        return AugmentationConfig(**state["augmentation"])
    return TrainConfig.from_dict(state["config"]).augmentation()


def describe(cfg: TrainConfig) -> dict:
    """The "model_config" and "augmentation" entries a checkpoint of a run with `cfg` stores."""
    aug = cfg.augmentation()
    return {"model_config": dataclasses.asdict(cfg.model_config(aug)), "augmentation": dataclasses.asdict(aug)}


def build_model(state: dict, map_location="cpu", missing_ok: tuple[str, ...] = ()) -> EquiModModel:
    """The model a checkpoint describes, with its weights loaded, in eval mode.

    state: a loaded checkpoint (load_checkpoint), or any dict with "model_config" (or "config")
    and "model". missing_ok: state-dict key prefixes a file may leave out on purpose (the shipped
    files leave out BYOL's EMA target: it is then a copy of the online network, as at the start
    of training). Any other missing or unexpected key raises ValueError naming it.
    """
    model = EquiModModel(model_config_of(state))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    wrong = list(unexpected) + [key for key in missing if not key.startswith(tuple(missing_ok))]
    if wrong:
        raise ValueError(f"the weights do not fit the model config: {wrong[:5]}")
    if model.target_backbone is not None and any(k.startswith("target_") for k in missing):
        model.target_backbone.load_state_dict(model.backbone.state_dict())
        model.target_projector.load_state_dict(model.projector.state_dict())
    return model.to(map_location).eval()


def load_model(path, map_location="cpu") -> tuple[EquiModModel, TrainConfig]:
    """The trained model (eval mode) and its TrainConfig from a run folder or checkpoint file."""
    state = load_checkpoint(path, map_location)
    return build_model(state, map_location), TrainConfig.from_dict(state["config"])
