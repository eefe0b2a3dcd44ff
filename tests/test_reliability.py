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
