"""run_folder.py: which files make a run, cleaning before a start, finite checkpoints, a checked resume.

Direct tests of RunFolder's API on hand-made folders (no training). The same behaviour through the
Trainer and the CLI, one test per failure kind, is in test_reliability.py.
"""

import errno
import json
import math

import pytest
import torch

from equimod_edu.checkpoint import save_checkpoint
from equimod_edu.files import TEMP_PREFIX, RunFolderError
from equimod_edu.run_folder import (
    RESUMABLE_CHANGES,
    REUSABLE_CHANGES,
    RUN_FILES,
    NonFiniteLossError,
    RunFolder,
    changed_settings,
    non_finite_advice,
)


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_fresh_run_refuses_a_folder_holding_any_run_file_unless_resumed_or_overwritten(tmp_path, name):
    RunFolder(tmp_path / "new")  # a folder that does not exist yet, or holds no run, is free
    (tmp_path / name).write_text("x")
    with pytest.raises(RunFolderError, match=f"already holds a run \\({name}\\).*--resume.*--overwrite"):
        RunFolder(tmp_path)
    RunFolder(tmp_path, resume=True)
    RunFolder(tmp_path, overwrite=True)
    with pytest.raises(ValueError, match="exclude each other"):
        RunFolder(tmp_path, resume=True, overwrite=True)


def test_a_dangling_symbolic_link_named_like_a_run_file_counts_as_a_run(tmp_path):
    (tmp_path / "config.json").symlink_to(tmp_path / "gone.json")
    with pytest.raises(RunFolderError, match="config.json"):
        RunFolder(tmp_path)


def test_prepare_removes_temporary_files_and_with_overwrite_the_old_run(tmp_path):
    RunFolder(tmp_path / "a" / "run").prepare()
    assert (tmp_path / "a" / "run").is_dir()  # made, parents included
    for name in (*RUN_FILES, f"{TEMP_PREFIX}checkpoint.pt.abc", "notes.txt"):
        (tmp_path / name).write_text("x")
    RunFolder(tmp_path, resume=True).prepare()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted([*RUN_FILES, "notes.txt"])
    RunFolder(tmp_path, overwrite=True).prepare()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["notes.txt"]  # only the run's files go


def test_check_finite_checks_the_named_entries_and_says_what_was_kept(tmp_path, tiny_config):
    folder, cfg = RunFolder(tmp_path), tiny_config(tmp_path, lr=0.1)
    folder.check_finite({"loss": 1.0, "images_per_s": math.nan}, ("loss",), 5, cfg)  # unchecked entries pass
    with pytest.raises(NonFiniteLossError, match="by step 5.*no checkpoint was written yet.*lower lr \\(now 0.1\\)"):
        folder.check_finite({"loss": math.inf}, ("loss",), 5, cfg)
    folder.checkpoint.write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match="last good checkpoint is kept"):
        folder.check_finite({"loss": 1.0, "equi": math.nan}, ("loss", "equi"), 6, cfg)


def test_save_writes_a_finite_checkpoint_and_keeps_it_when_the_tensors_are_not_finite(tmp_path, tiny_config):
    folder, cfg = RunFolder(tmp_path), tiny_config(tmp_path, lr=0.1)
    folder.save({"model": {}, "step": 1}, [torch.ones(3), torch.arange(3)], 1, cfg)
    assert torch.load(folder.checkpoint, weights_only=True)["step"] == 1
    with pytest.raises(NonFiniteLossError, match="by step 2; the last finite checkpoint is kept"):
        folder.save({"model": {}, "step": 2}, [torch.tensor([1.0, math.nan])], 2, cfg)
    assert torch.load(folder.checkpoint, weights_only=True)["step"] == 1
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        RunFolder(tmp_path / "b").save({"model": {}}, [torch.tensor(math.inf)], 1, cfg)


@pytest.mark.parametrize("changes,named", [(dict(temperature_inv=1e-30), "temperature_inv=1e-30"),
                                           (dict(temperature_equi=1e-5), "temperature_equi=1e-05"),
                                           (dict(temperature_inv=1e-30, base="byol"), "lower lr"),  # BYOL: none
                                           (dict(lr=3.0), "lower lr (now 3.0)")])
def test_the_non_finite_advice_names_a_tiny_temperature_the_objective_uses_else_the_lr(tmp_path, tiny_config,
                                                                                      changes, named):
    assert named in non_finite_advice(tiny_config(tmp_path, **changes))


def test_changed_settings_ignores_the_given_fields_and_tuples_against_lists(tmp_path, tiny_config):
    groups = ("crop", "hue")
    saved = json.loads(json.dumps(tiny_config(tmp_path, param_groups=groups).to_dict()))  # as config.json: lists
    assert changed_settings(saved, tiny_config(tmp_path / "moved", param_groups=groups, max_steps=3)) == []
    changed = changed_settings(saved, tiny_config(tmp_path, param_groups=groups, max_steps=3, lr=1.0), REUSABLE_CHANGES)
    assert changed == ["lr", "max_steps"]


def test_load_refuses_changed_settings_but_the_resumable_ones(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path)
    folder = RunFolder(tmp_path / "run", resume=True)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        folder.load(cfg, "cpu")
    save_checkpoint(folder.checkpoint, {"model": {}, "config": cfg.to_dict(), "step": 4})
    assert folder.load(cfg, "cpu")["step"] == 4
    harmless = tiny_config(tmp_path / "elsewhere", log_every=1, max_steps=3, checkpoint_every=1, progress=True)
    assert folder.load(harmless, "cpu")["step"] == 4
    assert {"out_dir", "log_every", "max_steps", "checkpoint_every", "progress"} <= set(RESUMABLE_CHANGES)
    with pytest.raises(ValueError, match="trained with lr=0.5, this config says 0.1. A resumed run keeps"):
        folder.load(tiny_config(tmp_path, lr=0.1), "cpu")
    with pytest.raises(ValueError, match="and 1 more changed settings: seed"):
        folder.load(tiny_config(tmp_path, lr=0.1, seed=3), "cpu")


def test_stopped_by_names_the_step_the_cause_and_what_was_saved(tmp_path):
    folder = RunFolder(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    message = folder.stopped_by(full, 7, save=lambda: None)
    assert message.startswith("training stopped at step 7: the disk is full")
    assert f"({tmp_path / 'metrics.jsonl'})" in message and message.endswith(
        "a checkpoint at step 7 was saved: fix the cause, then --resume")

    def save_fails():
        raise NonFiniteLossError("weights")

    assert folder.stopped_by(RuntimeError("bad batch"), 3, save_fails) == (
        "training stopped at step 3: bad batch; no checkpoint was written")
    folder.checkpoint.write_bytes(b"x")
    assert folder.stopped_by(RuntimeError("bad batch"), 3, save_fails).endswith(
        f"the last checkpoint ({folder.checkpoint}) is kept")
