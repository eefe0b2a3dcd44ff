"""The folder of one training run: its files, one writer, finite checkpoints, a checked resume.

Which files make it a run, one writer at a time, checkpoints saved only when finite, a resume only
with the settings it was trained with.

    folder = RunFolder("runs/x", resume=False, overwrite=False)  # refuses a folder holding another run
    with folder.lock():                                          # files.RunLock: one training per folder
        folder.prepare()                                         # stale temporary files (overwrite: the old run) go
        folder.write_json("config.json", cfg.to_dict())
        folder.save(state, tensors, step, cfg)                   # checkpoint.pt, atomically, if finite
    state = folder.load(cfg, device)                             # --resume: the checkpoint, its config checked

The folder is checked twice: when the RunFolder is made (before any work) and again under the lock
(prepare), so a training that checked an empty folder cannot replace a run finished meanwhile.

Errors say what happened and what was kept: NonFiniteLossError (the loss or the weights became NaN
or infinite), TrainingError (data, disk, I/O), files.RunFolderError (the folder is taken).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME, all_finite, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .files import TEMP_PREFIX, RunFolderError, RunLock, atomic_write, os_error_reason, read_run_file

__all__ = ["RunFolder", "NonFiniteLossError", "TrainingError", "RUN_FILES", "RESUMABLE_CHANGES", "REUSABLE_CHANGES",
           "changed_settings", "describe_changes", "non_finite_advice"]

#: The files that make a folder a run folder.
RUN_FILES = (CHECKPOINT_NAME, "config.json", "metrics.jsonl", "environment.json")
#: Settings a resumed run may change: they do not change what the run computes.
RESUMABLE_CHANGES = ("out_dir", "progress", "max_steps", "log_every", "checkpoint_every", "num_workers", "device",
                     "compile", "data_root")
#: Settings that do not change what a *finished* run holds (max_steps does: a shorter run is another run).
#: compare and train_supervised reuse a finished run only if all other settings are the same.
REUSABLE_CHANGES = tuple(name for name in RESUMABLE_CHANGES if name != "max_steps")
#: What else a run leaves in its folder (evaluate's report): deleted with the run by overwrite.
RUN_OUTPUTS = ("eval",)
#: A temperature below this makes NT-Xent / InfoNCE logits overflow: the likely cause of a non-finite loss.
TINY_TEMPERATURE = 1e-3


def changed_settings(saved: dict, cfg: TrainConfig, ignored=RESUMABLE_CHANGES) -> list[str]:
    """The fields of ``cfg`` whose value differs from the config ``saved`` (a dict), but the ``ignored`` ones."""
    def plain(values: dict) -> dict:  # tuples and lists alike, as in config.json
        return json.loads(json.dumps(TrainConfig.from_dict(values).to_dict()))

    before, now = plain(saved), plain(cfg.to_dict())
    return [name for name in now if name not in ignored and before.get(name) != now[name]]


def describe_changes(saved: dict, cfg: TrainConfig, changed: list[str]) -> str:
    """'trained with lr=0.002, this one asks for 0.05 (and 1 more: seed)': the first of ``changed`` and the others."""
    first, more = changed[0], changed[1:]
    return (f"trained with {first}={saved.get(first)!r}, this one asks for {getattr(cfg, first)!r}"
            + (f" (and {len(more)} more: {', '.join(more)})" if more else ""))


def non_finite_advice(cfg: TrainConfig) -> str:
    """What to change after a non-finite loss or weights: a tiny temperature the objective uses, else the lr."""
    used = [] if cfg.objective == "supervised" else (
        ["temperature_inv"] * (cfg.base == "simclr") + ["temperature_equi"] * bool(cfg.equimod))
    tiny = [f"{name}={getattr(cfg, name):g}" for name in used if getattr(cfg, name) < TINY_TEMPERATURE]
    if tiny:
        return (f"The similarities are divided by {' and '.join(tiny)}, which overflows: "
                f"try a temperature between 0.1 and 0.5 (the presets use 0.2 to 0.5).")
    return f"Try a lower lr (now {cfg.lr}) or precision='fp32'."


class NonFiniteLossError(RuntimeError):
    """The loss or the parameters became NaN or infinite; the last finite checkpoint was kept."""


class TrainingError(RuntimeError):
    """Training stopped on an error (data, disk, I/O); the message names the cause and what was saved."""


class RunFolder:
    """A run's folder (``path``): checkpoint.pt, config.json, metrics.jsonl, environment.json.

    resume: continue the run there; overwrite: delete it and start over (exclusive). A fresh run
    refuses a folder that holds another run (RunFolderError), before any work and again under the lock.
    """

    def __init__(self, path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.resume, self.overwrite = resume, overwrite
        self._seen = None  # the checkpoint as this RunFolder last read or wrote it: (inode, size, mtime)
        self._prepared = False  # a second run of the same Trainer continues its own run
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run, or start it over")
        self._refuse_another_run()

    def _refuse_another_run(self) -> None:
        """RunFolderError if a fresh run (neither resume nor overwrite) would write over a run in the folder."""
        existing = [name for name in RUN_FILES if (self.path / name).exists() or (self.path / name).is_symlink()]
        if existing and not (self.resume or self.overwrite):
            raise RunFolderError(f"{self.path} already holds a run ({', '.join(existing)}): continue it with "
                                 f"--resume, start it over with --overwrite (deletes it), or choose another --out")

    def _checkpoint_identity(self):
        info = os.stat(self.checkpoint)
        return info.st_ino, info.st_size, info.st_mtime_ns

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
        """Under the lock: check the folder again, then delete the old run (overwrite) and temporary files of kills.

        A run written since the RunFolder looked (another process finished one there; another resume
        moved the checkpoint on) is refused, not replaced. Overwrite deletes the run's files and its
        evaluation (RUN_OUTPUTS); nothing else in the folder.
        """
        if not self._prepared:
            self._refuse_another_run()
        if self._seen is not None and (not self.checkpoint.exists() or self._checkpoint_identity() != self._seen):
            raise RunFolderError(f"{self.checkpoint} changed since this run read it (another training wrote "
                                 f"there meanwhile): nothing was written; start again with --resume to continue "
                                 f"from the new checkpoint")
        self.path.mkdir(parents=True, exist_ok=True)
        for path in self.path.glob(f"{TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)
        if self.overwrite and not self.resume:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            self._seen = None
            for name in RUN_OUTPUTS:
                output = self.path / name
                if output.is_dir() and not output.is_symlink():
                    shutil.rmtree(output)
                else:
                    output.unlink(missing_ok=True)
        self._prepared = True

    def write_json(self, name: str, values: dict) -> None:
        text = json.dumps(values, indent=2)
        atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def check_finite(self, record: dict, keys, step: int, cfg: TrainConfig) -> None:
        """NonFiniteLossError unless every entry of `record` named in `keys` is finite."""
        if not all(math.isfinite(v) for k, v in record.items() if k in keys):
            kept = (f"the last good checkpoint is kept: {self.checkpoint}" if self.checkpoint.exists()
                    else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"the loss became non-finite by step {step} ({record}); training stopped and {kept}. "
                + non_finite_advice(cfg))

    def save(self, state: dict, tensors, step: int, cfg: TrainConfig) -> None:
        """Write the checkpoint `state` after checking that `tensors` (weights, optimiser state) are finite."""
        if not all_finite(tensors):
            kept = (f"the last finite checkpoint is kept: {self.checkpoint}" if self.checkpoint.exists()
                    else "no checkpoint was written")
            raise NonFiniteLossError(f"the parameters became non-finite by step {step}; {kept}. "
                                     + non_finite_advice(cfg))
        try:
            save_checkpoint(self.checkpoint, state)
            self._seen = self._checkpoint_identity()
        except (OSError, RuntimeError) as error:
            raise TrainingError(f"could not write the checkpoint {self.checkpoint}: "
                                f"{os_error_reason(error, self.checkpoint)}") from None

    def load(self, cfg: TrainConfig, device) -> dict:
        """The checkpoint to resume from, after checking it was trained with ``cfg``'s settings.

        All settings are compared but ``RESUMABLE_CHANGES``; and the checkpoint's with the folder's
        config.json, so that a checkpoint copied in from another run is refused, not adopted.
        """
        if not self.checkpoint.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.checkpoint}")
        self._seen = self._checkpoint_identity()
        state = load_checkpoint(self.checkpoint, map_location=device)
        saved, now = TrainConfig.from_dict(state["config"]).to_dict(), cfg.to_dict()
        self._refuse_a_foreign_checkpoint(saved)
        changed = changed_settings(saved, cfg)
        if changed:
            first = changed[0]
            raise ValueError(f"--resume: the checkpoint was trained with {first}={saved.get(first)!r}, this config "
                             f"says {now[first]!r}" + (f" (and {len(changed) - 1} more changed settings: "
                                                       f"{', '.join(changed[1:])})" if len(changed) > 1 else "")
                             + ". A resumed run keeps its settings: start a new run (another --out) to change them")
        return state

    def _refuse_a_foreign_checkpoint(self, saved: dict) -> None:
        """ValueError if the folder's config.json records another run than the checkpoint's config ``saved``."""
        try:
            recorded = TrainConfig.from_dict(json.loads(read_run_file(self.path / "config.json")))
        except (OSError, ValueError, TypeError, RunFolderError):  # missing, damaged, a link: the checkpoint rules
            return
        differ = changed_settings(saved, recorded)
        if differ:
            first = differ[0]
            raise ValueError(f"--resume: {self.checkpoint} comes from another run: it was trained with "
                             f"{first}={saved.get(first)!r}, this folder's config.json says "
                             f"{getattr(recorded, first)!r}. Put this run's own checkpoint back, or resume the "
                             f"copied one in a copy of its own run folder")

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
