"""The folder of one training run: its files, one writer, finite checkpoints, a checked resume.

Which files make it a run, one writer at a time, checkpoints saved only when finite, a resume only
with the settings it was trained with.

    folder = RunFolder("runs/x", resume=False, overwrite=False)  # refuses a folder holding another run
    with folder.lock():                                          # files.RunLock: one training per folder
        folder.prepare()                                         # stale temporary files (overwrite: the old run) go
        folder.write_json("config.json", cfg.to_dict())
        folder.save(state, tensors, step, lr)                    # checkpoint.pt, atomically, if finite
    state = folder.load(cfg, device)                             # --resume: the checkpoint, its config checked

Errors say what happened and what was kept: NonFiniteLossError (the loss or the weights became NaN
or infinite), TrainingError (data, disk, I/O), files.RunFolderError (the folder is taken).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME, all_finite, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .files import TEMP_PREFIX, RunFolderError, RunLock, atomic_write, os_error_reason

__all__ = ["RunFolder", "NonFiniteLossError", "TrainingError", "RUN_FILES", "RESUMABLE_CHANGES"]

#: The files that make a folder a run folder.
RUN_FILES = (CHECKPOINT_NAME, "config.json", "metrics.jsonl", "environment.json")
#: Settings a resumed run may change: they do not change what the run computes.
RESUMABLE_CHANGES = ("out_dir", "progress", "max_steps", "log_every", "checkpoint_every", "num_workers", "device",
                     "compile", "data_root")


class NonFiniteLossError(RuntimeError):
    """The loss or the parameters became NaN or infinite; the last finite checkpoint was kept."""


class TrainingError(RuntimeError):
    """Training stopped on an error (data, disk, I/O); the message names the cause and what was saved."""


class RunFolder:
    """A run's folder (``path``): checkpoint.pt, config.json, metrics.jsonl, environment.json.

    resume: continue the run there; overwrite: delete it and start over (exclusive). A fresh run
    refuses a folder that holds another run (RunFolderError), before any work.
    """

    def __init__(self, path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.resume, self.overwrite = resume, overwrite
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run, or start it over")
        existing = [name for name in RUN_FILES if (self.path / name).exists() or (self.path / name).is_symlink()]
        if existing and not (resume or overwrite):
            raise RunFolderError(f"{self.path} already holds a run ({', '.join(existing)}): continue it with "
                                 f"--resume, start it over with --overwrite (deletes it), or choose another --out")

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def lock(self) -> RunLock:
        """The folder's lock (a second process training into it is refused)."""
        return RunLock(self.path)

    def prepare(self) -> None:
        """Under the lock: delete the old run (overwrite) and temporary files that kills left behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        for path in self.path.glob(f"{TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)
        if self.overwrite and not self.resume:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)

    def write_json(self, name: str, values: dict) -> None:
        text = json.dumps(values, indent=2)
        atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def check_finite(self, record: dict, keys, step: int, lr: float) -> None:
        """NonFiniteLossError unless every entry of `record` named in `keys` is finite."""
        if not all(math.isfinite(v) for k, v in record.items() if k in keys):
            kept = (f"the last good checkpoint is kept: {self.checkpoint}" if self.checkpoint.exists()
                    else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"the loss became non-finite by step {step} ({record}); training stopped and {kept}. "
                f"Try a lower lr (now {lr}) or precision='fp32'.")

    def save(self, state: dict, tensors, step: int, lr: float) -> None:
        """Write the checkpoint `state` after checking that `tensors` (weights, optimiser state) are finite."""
        if not all_finite(tensors):
            kept = (f"the last finite checkpoint is kept: {self.checkpoint}" if self.checkpoint.exists()
                    else "no checkpoint was written")
            raise NonFiniteLossError(f"the parameters became non-finite by step {step}; {kept}. "
                                     f"Try a lower lr (now {lr}) or precision='fp32'.")
        try:
            save_checkpoint(self.checkpoint, state)
        except (OSError, RuntimeError) as error:
            raise TrainingError(f"could not write the checkpoint {self.checkpoint}: "
                                f"{os_error_reason(error, self.checkpoint)}") from None

    def load(self, cfg: TrainConfig, device) -> dict:
        """The checkpoint to resume from, after checking it was trained with ``cfg``'s settings.

        All settings are compared but ``RESUMABLE_CHANGES``.
        """
        if not self.checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.checkpoint}")
        state = load_checkpoint(self.checkpoint, map_location=device)
        saved, now = TrainConfig.from_dict(state["config"]).to_dict(), cfg.to_dict()
        changed = [name for name in now if name not in RESUMABLE_CHANGES and saved.get(name) != now[name]]
        if changed:
            first = changed[0]
            raise ValueError(f"--resume: the checkpoint was trained with {first}={saved.get(first)!r}, this config "
                             f"says {now[first]!r}" + (f" (and {len(changed) - 1} more changed settings: "
                                                       f"{', '.join(changed[1:])})" if len(changed) > 1 else "")
                             + ". A resumed run keeps its settings: start a new run (another --out) to change them")
        return state

    def stopped_by(self, error: BaseException, step: int, save) -> str:
        """The message of an error that stopped training at `step`, after trying `save()`."""
        reason = os_error_reason(error, getattr(error, "filename", None) or self.path)
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        try:
            save()
            saved = f"a checkpoint at step {step} was saved: fix the cause, then --resume"
        except Exception:  # a full disk, or non-finite weights: keep the last checkpoint as it is
            saved = (f"the last checkpoint ({self.checkpoint}) is kept" if self.checkpoint.exists()
                     else "no checkpoint was written")
        return f"training stopped at step {step}: {reason}{where}; {saved}"
