"""Nothing lost, nothing cryptic: one test per failure kind of docs/reliability.md.

The run folder protects itself; a checkpoint called good is finite; an error during training saves
what it can and names its cause; every damaged file gets a one-line message naming it; every bad
value is refused before any work. CLI cases run in-process through `cli.main` (its one-line
`error:` on stderr and its exit code); the kill -9 and full-disk cases run real processes.
"""

import errno
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from equimod_edu import cli, run_folder
from equimod_edu import train as train_module
from equimod_edu.checkpoint import CheckpointError, all_finite, load_checkpoint
from equimod_edu.files import TEMP_PREFIX, RunFolderError, RunLock
from equimod_edu.run_folder import NonFiniteLossError, TrainingError
from equimod_edu.train import Trainer

REPO = Path(__file__).resolve().parent.parent
TINY_CLI = ["--preset", "cpu-live", "--train-subset", "64", "--batch-size", "16", "--epochs", "2",
            "--augment-overrides", "size=16", "--proj-hidden", "32", "--no-progress", "--log-every", "1"]


def run_cli(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of `equimod-edu argv`, in this process."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_clear_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "weights_only" not in err, err
    return lines[0]


# ---------------------------------------------------------------- the run folder protects itself
def test_a_new_run_refuses_a_folder_holding_a_run_unless_told(tmp_path, capsys, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        Trainer(tiny_config(tmp_path, base="byol"), dataset=tiny_dataset())
    Trainer(tiny_config(tmp_path, base="byol", max_steps=3), dataset=tiny_dataset(), overwrite=True).run()
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["base"] == "byol"
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2, 3]
    code, err = run_cli(capsys, "train", *TINY_CLI, "--dataset", "synthetic", "--out", run)
    assert code == 2 and "already holds a run" in one_clear_line(err)


@pytest.mark.parametrize("flag,value", [("optimizer", "sgd"), ("train_subset", 32), ("z_dim", 8), ("lr", 0.1)])
def test_resume_refuses_a_setting_that_changes_the_run(tmp_path, flag, value, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    config = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError, match=f"trained with {flag}="):
        Trainer(tiny_config(tmp_path, **{flag: value}), dataset=tiny_dataset(), resume=True)
    assert (tmp_path / "run" / "config.json").read_text() == config  # the run's record is untouched
    resumed = Trainer(tiny_config(tmp_path, log_every=1), dataset=tiny_dataset(), resume=True)  # harmless change
    resumed.run()
    assert resumed.step == 8


def test_a_second_process_cannot_train_into_a_folder_in_use(tmp_path, tiny_config, tiny_dataset):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from equimod_edu.files import RunLock\n"
                               f"with RunLock({str(folder)!r}):\n print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match="in use"):
            Trainer(tiny_config(tmp_path), dataset=tiny_dataset()).run()
        assert not (folder / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(folder):  # the holder died: its lock went with it
        pass


def test_run_files_never_write_through_a_symbolic_link(tmp_path, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    run, outside = tmp_path / "run", tmp_path / "precious.txt"
    outside.write_text("keep me")
    for name in ("config.json", "metrics.jsonl"):
        (run / name).unlink()
        (run / name).symlink_to(outside)
    Trainer(tiny_config(tmp_path), dataset=tiny_dataset(), resume=True).run()
    assert outside.read_text() == "keep me"
    assert not (run / "config.json").is_symlink() and not (run / "metrics.jsonl").is_symlink()


def test_temporary_files_of_killed_writes_are_removed_at_the_next_start(tmp_path, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    stale = tmp_path / "run" / f"{TEMP_PREFIX}checkpoint.pt.abc123"
    stale.write_bytes(b"x" * 1000)  # what a kill -9 during a write leaves
    Trainer(tiny_config(tmp_path), dataset=tiny_dataset(), resume=True).run()
    assert not stale.exists()


# ---------------------------------------------------------------- runs reused, replaced and resumed only as asked
def test_compare_reuses_a_finished_run_only_with_the_same_settings(tmp_path, monkeypatch, capsys, tiny_dataset):
    """The issue's `compare --overrides ...,lr=0.05` reused the lr-0.002 run; a shorter max_steps run too."""
    import functools

    from helpers import TINY

    from equimod_edu import compare

    monkeypatch.setattr(compare, "Trainer", functools.partial(Trainer, dataset=tiny_dataset()))
    tiny = dict(TINY, device="cpu", max_steps=2)

    def train(**changes):
        return load_checkpoint(compare.train_variant("simclr", 0, tmp_path, "cpu-live", {**tiny, **changes}, False))

    first = train()
    assert train()["train_seconds"] == first["train_seconds"]  # the same settings: reused, not trained again
    assert train(lr=0.05)["config"]["lr"] == 0.05  # another lr: trained again, with it
    assert "trained with lr=" in capsys.readouterr().out
    assert train(lr=0.05, max_steps=None)["step"] == 8  # a 2-step run is not the full run


def test_demo_quick_keeps_its_models_out_of_the_real_demo_folder(scratch_working_folder, monkeypatch, capsys):
    """`demo --quick; demo` published the 8-step quick models as the real ones (the same runs/demo)."""
    from equimod_edu import compare

    folders = []

    def record_and_stop(variants, seeds, out_dir, **options):
        folders.append(Path(out_dir))
        raise KeyboardInterrupt("stopped by the test")

    monkeypatch.setattr(cli, "cmd_gallery", lambda args: 0)
    monkeypatch.setattr(compare, "compare", record_and_stop)
    assert cli.main(["demo", "--quick"]) == 130 and cli.main(["demo"]) == 130
    assert folders == [Path("runs/demo-quick"), Path("runs/demo")]


def test_a_run_started_earlier_cannot_replace_a_run_finished_meanwhile(tmp_path, tiny_config, tiny_dataset):
    """Two trainings into one empty folder: the one that checked first but locks last is refused, under the lock."""
    run = tmp_path / "run"
    early = Trainer(tiny_config(tmp_path), dataset=tiny_dataset())  # the folder was empty when it looked
    Trainer(tiny_config(tmp_path, seed=1, max_steps=2), dataset=tiny_dataset()).run()
    finished = {name: (run / name).read_bytes() for name in run_folder.RUN_FILES}
    with pytest.raises(RunFolderError, match="already holds a run"):
        early.run()
    assert {name: (run / name).read_bytes() for name in run_folder.RUN_FILES} == finished
    # the same for a resume that loaded the checkpoint before another resume moved it on
    stale = Trainer(tiny_config(tmp_path, seed=1), dataset=tiny_dataset(), resume=True)
    Trainer(tiny_config(tmp_path, seed=1, max_steps=6), dataset=tiny_dataset(), resume=True).run()
    with pytest.raises(RunFolderError, match="checkpoint.pt changed .*--resume"):
        stale.run()
    assert load_checkpoint(run)["step"] == 6
    own = Trainer(tiny_config(tmp_path / "own", max_steps=2), dataset=tiny_dataset())
    own.run()
    own.run()  # a second run of the same Trainer (a notebook cell run again) continues its own run


def test_overwrite_deletes_the_old_runs_evaluation_too(tmp_path, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    report = tmp_path / "run" / "eval" / "report.md"
    report.parent.mkdir()
    report.write_text("# Evaluation: simclr+equimod")
    Trainer(tiny_config(tmp_path, base="byol", max_steps=2), dataset=tiny_dataset(), overwrite=True).run()
    assert not report.parent.exists()


def test_a_log_line_that_failed_to_write_is_restored_at_the_resume(tmp_path, monkeypatch, tiny_config, tiny_dataset):
    """A refused write at step 7 (checkpoint saved at 7): the resumed log holds step 7, from the checkpoint."""
    log = train_module.MetricsLog.log

    def refused_at_step_7(self, t, metrics):
        if t.step == 7:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        log(self, t, metrics)

    with monkeypatch.context() as patch:
        patch.setattr(train_module.MetricsLog, "log", refused_at_step_7)
        with pytest.raises(TrainingError):
            Trainer(tiny_config(tmp_path, checkpoint_every=100, log_every=1), dataset=tiny_dataset()).run()
    Trainer(tiny_config(tmp_path, log_every=1), dataset=tiny_dataset(), resume=True).run()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert lines[:7] == load_checkpoint(tmp_path / "run")["metrics"][:7]


def test_resume_refuses_a_checkpoint_copied_in_from_another_run(tmp_path, tiny_config, tiny_dataset):
    import shutil

    Trainer(tiny_config(tmp_path / "a", max_steps=2), dataset=tiny_dataset()).run()
    Trainer(tiny_config(tmp_path / "b", seed=1, max_steps=2), dataset=tiny_dataset()).run()
    run = tmp_path / "b" / "run"
    shutil.copy(tmp_path / "a" / "run" / "checkpoint.pt", run / "checkpoint.pt")
    kept = {name: (run / name).read_bytes() for name in ("config.json", "metrics.jsonl", "environment.json")}
    with pytest.raises(ValueError, match=r"another run.*seed=0.*config.json says 1") as error:
        Trainer(tiny_config(tmp_path / "b"), dataset=tiny_dataset(), resume=True)  # the copied checkpoint's settings
    assert "\n" not in str(error.value)
    assert {name: (run / name).read_bytes() for name in kept} == kept


def test_a_callback_failing_at_the_start_leaves_ctrl_c_working(tmp_path, tiny_config, tiny_dataset):
    """Ctrl-C was swallowed for the rest of a notebook session after a Trainer failed to start."""
    import signal

    class FailsAtTheStart:
        def attach(self, trainer):
            trainer.add_callback("on_train_begin", self.begin)

        def begin(self, trainer, metrics):
            raise RuntimeError("the callback failed")

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(RuntimeError, match="the callback failed"):
        Trainer(tiny_config(tmp_path), callbacks=[FailsAtTheStart()], dataset=tiny_dataset()).run()
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_max_steps_none_at_a_resume_trains_to_the_end(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", *TINY_CLI, "--dataset", "synthetic", "--max-steps", "2", "--out", out)
    assert code == 0, err
    code, err = run_cli(capsys, "train", "--out", out, "--resume", "--max-steps", "none")
    assert code == 0, err
    assert load_checkpoint(out)["step"] == 8


def test_a_non_finite_loss_names_a_tiny_temperature_not_the_lr(tmp_path, capsys):
    code, err = run_cli(capsys, "train", *TINY_CLI, "--dataset", "synthetic", "--temperature-inv", "1e-30",
                        "--out", tmp_path / "run")
    line = one_clear_line(err)
    assert code == 3 and "temperature_inv" in line and "lower lr" not in line


@pytest.mark.parametrize("target", ["a file", "nothing (a dangling link)"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys, target, tiny_config,
                                                                   tiny_dataset):
    run, notes = tmp_path / "run", tmp_path / "notes.txt"
    run.mkdir()
    if target == "a file":
        notes.write_text("my notes")
    (run / ".lock").symlink_to(notes)
    with pytest.raises(RunFolderError, match=r"\.lock is a symbolic link"):
        Trainer(tiny_config(tmp_path), dataset=tiny_dataset()).run()
    code, err = run_cli(capsys, "train", *TINY_CLI, "--dataset", "synthetic", "--out", run)
    assert code == 2 and str(run / ".lock") in one_clear_line(err)
    assert (notes.read_text() == "my notes") if target == "a file" else not notes.exists()
    assert not (run / "checkpoint.pt").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["a FIFO", "a link to /dev/zero", "too large"])
def test_run_files_that_are_not_plain_files_are_never_read(tmp_path, capsys, kind, tiny_config, tiny_dataset):
    """A FIFO would hang a resume (and swallow Ctrl-C), /dev/zero or a huge file would fill the memory."""
    from equimod_edu.files import read_run_file

    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    run = tmp_path / "run"

    def replace_with_the_bad_kind(path):
        path.unlink()
        if kind == "a FIFO":
            os.mkfifo(path)
        elif kind == "a link to /dev/zero":
            path.symlink_to("/dev/zero")
        else:
            with open(path, "wb") as f:
                f.truncate(2**40)  # a sparse terabyte

    for name in ("metrics.jsonl", "config.json", "environment.json"):
        replace_with_the_bad_kind(run / name)
        refused = f"{name} is (a symbolic link|not a plain file|.* larger than)"
        with pytest.raises(RunFolderError, match=refused) as error:
            read_run_file(run / name)
        assert str(run / name) in str(error.value) and len(str(error.value).splitlines()) == 1
    Trainer(tiny_config(tmp_path), dataset=tiny_dataset(), resume=True).run()  # replaced, never read
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 8
    assert all((run / name).is_file() and not (run / name).is_symlink() for name in ("metrics.jsonl", "config.json"))
    if kind != "too large":  # (a huge checkpoint is legitimate: torch reads it as a stream)
        replace_with_the_bad_kind(run / "checkpoint.pt")
        with pytest.raises(CheckpointError, match="not a plain file"):
            load_checkpoint(run)
        code, err = run_cli(capsys, "train", "--out", run, "--resume")
        assert code == 2 and str(run / "checkpoint.pt") in one_clear_line(err)


def test_files_are_created_with_the_users_umask(tmp_path, tiny_config, tiny_dataset):
    """A teaching assistant reads a student's run; a second user of a shared EQUIMOD_DATA reads the cache."""
    from equimod_edu import data
    from equimod_edu.files import append_line, atomic_write

    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        previous = os.umask(umask)
        try:
            folder = tmp_path / f"u{umask:o}"
            atomic_write(folder / "a.json", lambda f: f.write(b"{}"))
            append_line(folder / "b.jsonl", "{}")
            with RunLock(folder):
                pass
            data.synthetic("test", root=folder, n_test=8, size=8)
            if umask == 0o022:
                Trainer(tiny_config(folder, max_steps=1), dataset=tiny_dataset()).run()
        finally:
            os.umask(previous)
        made = [p for p in folder.rglob("*") if p.is_file()]
        assert len(made) >= 4 and {p.stat().st_mode & 0o777 for p in made} == {mode}, made


@pytest.mark.slow
def test_kill_9_at_random_moments_never_loses_the_run(tmp_path):
    """Three kills at random times (checkpoints every step, so some land inside a write).

    Every time the checkpoint loads, the resumed run ends with each step logged once and no temporary file.
    """
    from equimod_edu import data
    data.synthetic("train")  # built once here, not inside the killed processes
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "run"
    args = [sys.executable, "-m", "equimod_edu.cli", "train", *TINY_CLI, "--dataset", "synthetic",
            "--out", str(out), "--checkpoint-every", "1", "--epochs", "50", "--max-steps", "40"]
    rng = random.Random(0)
    for attempt in range(3):
        proc = subprocess.Popen(args + (["--resume"] if attempt else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        assert load_checkpoint(out)["step"] >= 1
    done = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))
    assert not list(out.glob(f"{TEMP_PREFIX}*"))


# ---------------------------------------------------------------- a checkpoint called good is good
def test_weights_that_become_non_finite_are_never_saved(tmp_path, capsys):
    """The issue's case: SGD at lr 1e8 breaks the weights in the update after a finite loss."""
    out = tmp_path / "run"
    code, err = run_cli(capsys, "train", *TINY_CLI, "--dataset", "synthetic", "--optimizer", "sgd",
                        "--warmup-epochs", "0", "--lr", "1e8", "--checkpoint-every", "1", "--out", out)
    assert code == 3 and "non-finite" in err
    if (out / "checkpoint.pt").exists():
        state = load_checkpoint(out)
        assert all_finite(state["model"].values())


def test_a_non_finite_parameter_stops_before_the_save(tmp_path, monkeypatch, tiny_config, tiny_dataset):
    trainer = Trainer(tiny_config(tmp_path, checkpoint_every=100), dataset=tiny_dataset())
    real = trainer.train_step

    def breaks_after_the_last_loss(step, batch):
        metrics = real(step, batch)
        if step == 7:  # the last update: its loss was finite, its weights are not
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))
        return metrics

    monkeypatch.setattr(trainer, "train_step", breaks_after_the_last_loss)
    with pytest.raises(NonFiniteLossError, match="parameters became non-finite"):
        trainer.run()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ---------------------------------------------------------------- errors during training
def test_an_error_during_training_saves_a_checkpoint_and_names_the_file(tmp_path, monkeypatch,
                                                                        tiny_config, tiny_dataset):
    log = train_module.MetricsLog.log

    def unwritable(self, t, metrics):
        if t.step == 3:
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        log(self, t, metrics)

    monkeypatch.setattr(train_module.MetricsLog, "log", unwritable)
    trainer = Trainer(tiny_config(tmp_path, checkpoint_every=100, log_every=1), dataset=tiny_dataset())
    with pytest.raises(TrainingError) as error:
        trainer.run()
    message = str(error.value)
    assert "permission denied" in message and "metrics.jsonl" in message and "--resume" in message
    assert load_checkpoint(tmp_path / "run")["step"] == 3


def test_a_damaged_image_stops_training_with_its_name_and_a_checkpoint(tmp_path, tiny_config):
    from PIL import Image

    folder = tmp_path / "images" / "train"
    for k in range(16):
        (folder / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (k * 10, 50, 200)).save(folder / f"c{k % 2}" / f"{k}.png")
    bad = folder / "c0" / "8.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    cfg = tiny_config(tmp_path, dataset=f"folder:{tmp_path / 'images'}", augment="cifar10", batch_size=4,
                      num_workers=0, checkpoint_every=100)
    with pytest.raises(TrainingError, match="cannot read the image .*8.png") as error:
        Trainer(cfg).run()
    step = load_checkpoint(cfg.out_dir)["step"]
    assert f"step {step}:" in str(error.value) and step < 8


def test_a_full_disk_says_so_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, tiny_config, tiny_dataset):
    trainer = Trainer(tiny_config(tmp_path), dataset=tiny_dataset())
    real = run_folder.save_checkpoint
    calls = {"n": 0}

    def disk_fills(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, state)

    monkeypatch.setattr(run_folder, "save_checkpoint", disk_fills)
    with pytest.raises(TrainingError, match="the disk is full"):
        trainer.run()
    assert load_checkpoint(tmp_path / "run")["step"] == 2 and not list((tmp_path / "run").glob(f"{TEMP_PREFIX}*"))


def test_a_really_full_file_system(tmp_path, tiny_config, tiny_dataset):
    """A 3 MB tmpfs (where this machine lets us mount one): the checkpoint does not fit."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        cfg = tiny_config(tmp_path, out_dir=str(mount / "run"), proj_hidden=512, byol_hidden=512)
        with pytest.raises(TrainingError, match="disk is full"):
            Trainer(cfg, dataset=tiny_dataset()).run()
        assert not list((mount / "run").glob(f"{TEMP_PREFIX}*"))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# ---------------------------------------------------------------- damaged files: one line naming them
@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "a folder", "a pickled object"])
def test_a_damaged_checkpoint_gets_one_line_naming_it(tmp_path, capsys, damage, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    path = tmp_path / "run" / "checkpoint.pt"
    whole = path.read_bytes()
    path.unlink()
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "a folder":
        path.mkdir()
    else:
        torch.save({"model": {}, "danger": Path("x")}, path)  # a class: weights_only refuses it
    with pytest.raises(CheckpointError, match="checkpoint") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "weights_only" not in str(error.value)
    code, err = run_cli(capsys, "evaluate", tmp_path / "run", "--fast")
    assert code == 2 and str(path) in one_clear_line(err)
    code, err = run_cli(capsys, "train", "--out", tmp_path / "run", "--resume")
    assert code == 2 and str(tmp_path / "run") in one_clear_line(err)


def test_a_damaged_dataset_cache_is_rebuilt(tmp_path):
    from equimod_edu import data

    first = data.synthetic("test", root=tmp_path, n_test=40, size=16)
    cache = next((tmp_path / "cache").glob("synthetic_test_*.pt"))
    cache.write_bytes(b"not a cache")
    with pytest.warns(UserWarning, match="damaged; rebuilding"):
        again = data.synthetic("test", root=tmp_path, n_test=40, size=16)
    assert torch.equal(first.images, again.images) and data.synthetic("test", root=tmp_path, n_test=40, size=16)


def test_an_unwritable_or_full_dataset_cache_only_warns(tmp_path, monkeypatch):
    """It is only a cache: the data is built, training goes on without it."""
    from equimod_edu import data

    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    if os.access(cache, os.W_OK):  # root writes anywhere: the refusal is simulated

        def refused(path, write):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(data, "atomic_write", refused)
    try:
        with pytest.warns(UserWarning, match=f"could not write the dataset cache {cache}.*permission denied"):
            ds = data.synthetic("test", root=tmp_path, n_test=8, size=8)
        assert len(ds) == 8
    finally:
        cache.chmod(0o700)
        monkeypatch.undo()

    def disk_full(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(data.torch, "save", disk_full)
    with pytest.warns(UserWarning, match=r"the disk is full \(\d+ MB free\)") as record:
        assert len(data.synthetic("test", root=tmp_path, n_test=8, size=8)) == 8
    assert "enforce fail" not in str(record[0].message) and not list(cache.glob(f"{TEMP_PREFIX}*"))


def test_stale_temporary_files_of_the_dataset_cache_are_removed(tmp_path):
    """A kill during a cache write leaves a hidden temporary file: removed at the next build, unless recent."""
    from equimod_edu import data

    cache = tmp_path / "cache"
    cache.mkdir()
    stale, busy = cache / f"{TEMP_PREFIX}synthetic_test_x.pt.abc", cache / f"{TEMP_PREFIX}synthetic_test_y.pt.def"
    stale.write_bytes(b"x" * 1000)
    busy.write_bytes(b"y" * 1000)  # a concurrent writer's file: written to a moment ago
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    data.synthetic("test", root=tmp_path, n_test=8, size=8)
    assert not stale.exists() and busy.exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_batches_are_read_without_running_code(tmp_path, capsys):
    """check_integrity=False was the advice for files that failed their md5: it must not unpickle a payload."""
    import pickle

    import numpy as np

    from equimod_edu.data import cifar10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    ran = tmp_path / "payload-ran"
    payload = _RunsCode()
    payload.marker = ran
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"labels": [0], "data": np.zeros((1, 3072), np.uint8), "x": payload}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["a"]}, f)
    for split in ("train", "test"):
        with pytest.raises(ValueError, match="(data_batch_1|test_batch) holds posix.system") as error:
            cifar10(split, root=tmp_path, check_integrity=False)
        assert len(str(error.value).splitlines()) == 1 and "download" in str(error.value)
    with pytest.raises(ValueError, match="md5"):
        cifar10("train", root=tmp_path)
    assert not ran.exists()


def test_a_decompression_bomb_image_is_named(tmp_path, monkeypatch, tiny_config):
    from PIL import Image

    from equimod_edu.data import image_folder
    from equimod_edu.loader import FolderCrops

    for k in range(4):
        (tmp_path / "ds" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8) if k else (64, 64)).save(tmp_path / "ds" / f"c{k % 2}" / f"{k}.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 = 4096 pixels: over twice the limit
    bomb = str(tmp_path / "ds" / "c0" / "0.png")
    with pytest.raises(ValueError, match=f"cannot read the image {bomb}.*MAX_IMAGE_PIXELS"):
        image_folder(tmp_path / "ds", size=8)
    cfg = tiny_config(tmp_path)
    with pytest.raises(ValueError, match=f"cannot read the image {bomb}"):
        FolderCrops(tmp_path / "ds", cfg.augmentation())[0]


def test_a_symbolic_link_loop_in_a_folder_dataset_is_refused(tmp_path, tiny_config):
    """`ln -s .. ds/loop/a/up` made ImageFolder read the images about 40 times, silently."""
    from PIL import Image

    from equimod_edu.data import image_folder
    from equimod_edu.loader import FolderCrops

    for k in range(4):
        (tmp_path / "ds" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "ds" / f"c{k % 2}" / f"{k}.png")
    (tmp_path / "ds" / "c1" / "sub").mkdir()
    (tmp_path / "ds" / "c1" / "sub" / "up").symlink_to("..")
    (tmp_path / "shared").mkdir()  # a link to a folder outside, not a loop: followed as before
    Image.new("RGB", (8, 8)).save(tmp_path / "shared" / "s.png")
    (tmp_path / "ds" / "c0" / "more").symlink_to(tmp_path / "shared")
    up = tmp_path / "ds" / "c1" / "sub" / "up"
    with pytest.raises(ValueError, match=f"{up} is a symbolic link to a folder above it.*Remove the link"):
        image_folder(tmp_path / "ds")
    with pytest.raises(ValueError, match=f"{up} is a symbolic link"):
        FolderCrops(tmp_path / "ds", tiny_config(tmp_path).augmentation())
    up.unlink()
    assert len(image_folder(tmp_path / "ds")) == 5


def test_mixed_image_sizes_advise_what_the_command_line_can_do(tmp_path):
    from PIL import Image

    from equimod_edu.data import load_dataset

    for k, side in enumerate((8, 12)):
        (tmp_path / "ds" / "train" / f"c{k}").mkdir(parents=True)
        Image.new("RGB", (side, side)).save(tmp_path / "ds" / "train" / f"c{k}" / "0.png")
    with pytest.raises(ValueError, match="differ in size") as error:
        load_dataset(f"folder:{tmp_path / 'ds'}", "train")
    message = str(error.value)
    assert "No command-line flag" in message and "--stream" in message and "size=" in message
    assert len(load_dataset(f"folder:{tmp_path / 'ds'}", "train", size=8)) == 2


@pytest.mark.parametrize("text", ["{not json", '{"checkpoints": {"a": {"file": "a.pt"}}}', "[]"])
def test_a_broken_manifest_says_how_to_restore_it(tmp_path, text):
    from equimod_edu.pretrained import PretrainedError, load_pretrained

    (tmp_path / "MANIFEST.json").write_text(text)
    with pytest.raises(PretrainedError, match="git checkout"):
        load_pretrained("a", tmp_path)


# ---------------------------------------------------------------- bad values, refused before any work
@pytest.mark.parametrize("flags,field", [
    (["--lr", "inf"], "lr"),
    (["--lr", "nan"], "lr"),
    (["--augment-overrides", "brightness=Infinity"], "brightness"),
    (["--augment-overrides", "blur_kernel=99,blur_p=0.5"], "blur_kernel"),
    (["--augment-overrides", "crop_scale=0.5"], "crop_scale"),
    (["--augment-overrides", "hue=abc"], "hue"),
    (["--batch-size", "1"], "batch_size"),
    (["--seed", str(2**64)], "seed"),
    (["--dataset", "folder:"], "dataset"),
    (["--stream"], "stream"),
])
def test_a_bad_value_is_refused_in_one_line_naming_the_field(tmp_path, capsys, flags, field):
    code, err = run_cli(capsys, "train", *TINY_CLI, "--dataset", "synthetic", *flags, "--out", tmp_path / "run")
    assert code == 2 and field in one_clear_line(err)
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize("argv", [["compare", "--variants", "nope"], ["compare", "--seeds", "a,b"],
                                  ["demo", "--overrides", "lr=-1", "--quick"], ["label-efficiency", "--runs", ""]])
def test_compare_and_demo_give_one_line_on_bad_input(tmp_path, capsys, argv):
    code, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2 and one_clear_line(err)


def test_evaluation_refuses_to_test_on_the_training_images(tmp_path):
    from PIL import Image

    from equimod_edu.data import load_dataset

    for k in range(4):
        (tmp_path / "imgs" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / f"c{k % 2}" / f"{k}.png")
    assert len(load_dataset(f"folder:{tmp_path / 'imgs'}", "train")) == 4
    with pytest.raises(ValueError, match="no test/"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", "test")


def test_the_explorers_refuse_values_their_sliders_would_clamp(tmp_path, tiny_dataset):
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    from equimod_edu.augment import AugmentationConfig
    from equimod_edu.widgets import AugmentationExplorer

    explorer = AugmentationExplorer(tiny_dataset(4, size=16).images, AugmentationConfig.synthetic(size=16))
    for bad, match in ((dict(hue=float("nan")), "finite"), (dict(hue=0.9), "outside"),
                       (dict(flip="yes"), "True or False"), (dict(order=(0, 0, 1, 2)), "orders")):
        with pytest.raises(ValueError, match=match):
            explorer.set(**bad)
    assert explorer.set(hue=0.25)["params"].hue[0] == pytest.approx(0.25)  # still works afterwards
    assert math.isfinite(float(explorer.result["encoded"].sum()))


def test_evaluation_creates_nothing_where_a_checkpoint_points_its_data_root(tmp_path, tiny_config, tiny_dataset):
    from equimod_edu.report import evaluate_run

    nowhere = tmp_path / "elsewhere" / "data"
    Trainer(tiny_config(tmp_path, data_root=str(nowhere), max_steps=1), dataset=tiny_dataset()).run()
    with pytest.raises(FileNotFoundError, match="data_root"):
        evaluate_run(tmp_path / "run", fast=True)
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------- issue 24 (R3): evaluate, overrides, shipped files
@pytest.mark.parametrize("damage", ["a pickled object", "truncated", "no config"])
def test_a_damaged_or_hostile_shipped_checkpoint_gets_one_line_naming_it(tmp_path, damage):
    from equimod_edu.pretrained import MANIFEST_NAME, PretrainedError, load_pretrained, sha256_of

    path = tmp_path / "bad.pt"
    if damage == "a pickled object":
        torch.save({"model": {}, "danger": Path("x")}, path)  # a class: weights_only refuses it
    elif damage == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:600])
    else:
        torch.save({"model": {}}, path)
    entry = {"file": path.name, "sha256": sha256_of(path)}  # the manifest agrees: only the loader can refuse
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"checkpoints": {"bad": entry}}))
    with pytest.raises(PretrainedError, match="bad.pt") as error:
        load_pretrained("bad", tmp_path)
    assert "weights_only" not in str(error.value) and "git checkout" in str(error.value)


def test_evaluate_checks_that_it_can_write_before_any_work(tmp_path, capsys, monkeypatch, tiny_config, tiny_dataset):
    from equimod_edu import report

    def evaluated(*args, **kwargs):
        raise AssertionError("evaluated before checking that the report can be written")

    monkeypatch.setattr(report, "evaluate_run", evaluated)
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    code, err = run_cli(capsys, "evaluate", tmp_path / "run", "--fast", "--out", blocked / "eval")
    line = one_clear_line(err)
    assert code == 4 and str(blocked / "eval") in line and "--out" in line
    mount = tmp_path / "mount"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        Trainer(tiny_config(tmp_path, out_dir=str(mount / "run"), max_steps=1), dataset=tiny_dataset()).run()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, err = run_cli(capsys, "evaluate", mount / "run", "--fast")
        line = one_clear_line(err)
        assert code == 4 and str(mount / "run" / "eval") in line and "read-only" in line and "--out" in line
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_report_that_does_not_fit_on_the_disk_keeps_the_old_one_whole(tmp_path):
    """A 1 MB tmpfs, filled up after a first report: the second one fails, the first stays, nothing half-written."""
    from equimod_edu.report import write_report

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs is not allowed here")
    try:
        report = {"target": "label", "labels": {}, "meta": {"run_dir": "the first run"},
                  "augmentation_probes": {"hue": {"metric": "r2", "value": 0.5, "chance": 0.0}}}
        write_report(report, mount / "eval")
        before = {p.name: p.read_bytes() for p in (mount / "eval").iterdir()}
        assert set(before) == {"report.json", "report.md", "augmentation_probes.png"}
        try:
            with open(mount / "filler", "wb", buffering=0) as f:  # fill the disk
                while True:
                    f.write(b"\0" * 4096)
        except OSError:
            pass
        with pytest.raises(OSError, match="disk is full") as error:
            write_report({**report, "meta": {"run_dir": "the second run " + "x" * 20_000}}, mount / "eval")
        assert str(mount / "eval") in str(error.value)
        assert {p.name: p.read_bytes() for p in (mount / "eval").iterdir()} == before  # no temporary file left
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_evaluate_on_a_file_of_a_run_says_to_pass_the_run_folder(tmp_path, capsys, name, tiny_config, tiny_dataset):
    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    run = tmp_path / "run"
    code, err = run_cli(capsys, "evaluate", run / name, "--fast")
    line = one_clear_line(err)
    assert code == 2 and f"pass the run folder {run}" in line and "--overwrite" not in line
    assert not (run / "eval").exists()


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_an_unknown_override_is_refused_in_one_line_naming_it(tmp_path, capsys, command):
    code, err = run_cli(capsys, command, "--overrides", "nosuch=1", "--out", tmp_path / "out")
    assert code == 2 and "nosuch" in one_clear_line(err)
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("edited", ["5", "[1, 2]", '"step"', '{"loss": 1.0}', '{"step": "seven"}'])
def test_a_hand_edited_metrics_line_does_not_stop_a_resume(tmp_path, edited, tiny_config, tiny_dataset):
    """The log is never read back: a resume rewrites it from the checkpoint's history, each step once."""
    Trainer(tiny_config(tmp_path, max_steps=4), dataset=tiny_dataset()).run()
    log = tmp_path / "run" / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], edited, *lines[1:]]) + "\n")
    Trainer(tiny_config(tmp_path, max_steps=6), dataset=tiny_dataset(), resume=True).run()
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4, 6]


@pytest.mark.parametrize("flag,value", [("--per-class", "0"), ("--per-class", "1,0,10"), ("--n-train", "0"),
                                        ("--n-test", "-5"), ("--scratch-steps", "-1")])
def test_label_efficiency_refuses_counts_below_one(tmp_path, capsys, flag, value):
    code, err = run_cli(capsys, "label-efficiency", "--runs", f"a={tmp_path / 'no run'}", flag, value,
                        "--out", tmp_path / "le.json")
    assert code == 2 and flag in one_clear_line(err)  # before looking for the run


@pytest.mark.parametrize("poison", ["nan weights", "overflowing weights"])
def test_evaluating_a_model_that_is_not_finite_says_so_naming_the_run(tmp_path, capsys, monkeypatch, poison,
                                                                      tiny_config, tiny_dataset):
    from equimod_edu import report
    from equimod_edu.checkpoint import save_checkpoint

    Trainer(tiny_config(tmp_path, max_steps=2), dataset=tiny_dataset()).run()
    run = tmp_path / "run"
    state = load_checkpoint(run)
    weight = next(k for k, v in state["model"].items() if k.startswith("backbone.") and v.dim() == 4)
    state["model"][weight].fill_(float("nan") if poison == "nan weights" else 3e38)
    save_checkpoint(run / "checkpoint.pt", state)
    monkeypatch.setattr(report, "_splits", lambda cfg, dataset, seed: (tiny_dataset(64), tiny_dataset(32, seed=1)))
    code, err = run_cli(capsys, "evaluate", run, "--fast")
    line = one_clear_line(err)
    assert code == 3 and str(run) in line and "not finite" in line and "impute" not in err.lower()
    assert not (run / "eval").exists()


def test_ctrl_c_during_evaluate_says_what_was_written(tmp_path, capsys, monkeypatch, tiny_config, tiny_dataset):
    from equimod_edu import report

    Trainer(tiny_config(tmp_path, max_steps=1), dataset=tiny_dataset()).run()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "evaluate_run", interrupted)
    code, err = run_cli(capsys, "evaluate", tmp_path / "run", "--fast")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130 and len(lines) == 1 and "interrupted" in lines[0] and "nothing written" in lines[0], err
    assert not (tmp_path / "run" / "eval").exists()
