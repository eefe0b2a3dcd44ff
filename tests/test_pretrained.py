"""Shipped checkpoints and the files in data/pretrained/ themselves (read only).

Export, SHA-256 verification, clear messages when a file is missing or altered, a load that gives back the trained
model.
"""

import json
import shutil

import pytest
import torch

from equimod_edu import pretrained
from equimod_edu.checkpoint import load_model
from equimod_edu.config import TrainConfig
from equimod_edu.pretrained import (
    PRETRAINED_DIR,
    PretrainedError,
    available,
    export_pretrained,
    load_pretrained,
    manifest,
    sha256_of,
    verify,
)
from equimod_edu.report import EvalSizes, evaluate_run, headline, write_report
from equimod_edu.train import Trainer

TINY_EVAL = EvalSizes(n_train=128, n_test=64, equi_images=8, gallery_size=4, posthoc_images=64, posthoc_pairs=1,
                      posthoc_epochs=1, param_train=64, param_test=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished, evaluated EquiMod run (4 steps on 128 images) in a temporary folder."""
    out = tmp_path_factory.mktemp("runs") / "equimod-s0"
    cfg = TrainConfig.preset("cpu-live", train_subset=128, epochs=1, batch_size=32, warmup_epochs=0.5,
                             proj_hidden=64, y_dim=32, z_dim=32, param_embed_dim=16, out_dir=str(out), progress=False)
    Trainer(cfg).run()
    write_report(evaluate_run(out, sizes=TINY_EVAL, fast=True), out / "eval")
    return out


@pytest.fixture
def exported(run_dir, tmp_path):
    """The run exported as 'tiny' into a temporary data/pretrained folder: (folder, manifest entry)."""
    folder = tmp_path / "pretrained"
    return folder, export_pretrained(run_dir, "tiny", out_dir=folder, command="equimod-edu compare --test")


# ---------------------------------------------------------------- export
def test_export_writes_a_weights_only_fp32_file_and_a_manifest_entry(run_dir, exported):
    folder, entry = exported
    payload = torch.load(folder / "tiny.pt", weights_only=True)
    assert set(payload) == {"model", "config", "model_config", "augmentation", "metrics", "name", "objective",
                            "version"}  # no optimiser, no schedule
    assert all(v.dtype == torch.float32 for v in payload["model"].values() if v.is_floating_point())
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert payload["metrics"] == headline(report) == entry["metrics"]
    listed = manifest(folder)["checkpoints"]["tiny"]
    assert listed["sha256"] == sha256_of(folder / "tiny.pt") and len(listed["sha256"]) == 64
    assert listed["bytes"] == (folder / "tiny.pt").stat().st_size
    assert listed["command"] == "equimod-edu compare --test"
    assert listed["config"]["equimod"] is True and listed["training"]["steps"] == 4
    assert json.loads((folder / "tiny.report.json").read_text()) == report
    assert available(folder) == ["tiny"]


def test_export_refuses_a_run_that_was_not_evaluated_or_did_not_finish(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "eval")
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        export_pretrained(copy, "x", out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="plain file stem"):
        export_pretrained(run_dir, "../x", out_dir=tmp_path / "out")


# ---------------------------------------------------------------- load and verify
def test_load_round_trip_gives_the_trained_model(run_dir, exported):
    folder, _ = exported
    model, cfg, metrics = load_pretrained("tiny", folder)
    original, original_cfg = load_model(run_dir)
    assert not model.training and cfg == original_cfg and metrics == exported[1]["metrics"]
    x = torch.randn(4, 3, 32, 32)
    t = torch.randn(4, cfg.augmentation().encoded_dim)
    with torch.no_grad():
        for a, b in zip(model.embed(x), original.embed(x)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(model.predict(model.embed(x)[2], t), original.predict(original.embed(x)[2], t))


def test_byol_files_leave_out_the_ema_target_and_loading_restores_it(tmp_path):
    out = tmp_path / "byol"
    cfg = TrainConfig.preset("cpu-live", base="byol", train_subset=64, epochs=1, batch_size=32, warmup_epochs=0.5,
                             proj_hidden=32, y_dim=16, byol_hidden=32, param_embed_dim=8,
                             out_dir=str(out), progress=False)
    Trainer(cfg).run()
    write_report(evaluate_run(out, sizes=TINY_EVAL, fast=True), out / "eval")
    export_pretrained(out, "byol", out_dir=tmp_path / "pre", command="test")
    shipped = torch.load(tmp_path / "pre" / "byol.pt", weights_only=True)["model"]
    assert shipped and not any(key.startswith(pretrained.TRAINING_ONLY) for key in shipped)
    model, _, _ = load_pretrained("byol", tmp_path / "pre")
    original, _ = load_model(out)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model.embed(x), original.embed(x)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(model.target_backbone(x), model.backbone(x))  # the target is the online copy


def test_a_missing_file_says_so_and_how_to_rebuild_it(exported):
    folder, _ = exported
    (folder / "tiny.pt").unlink()
    with pytest.raises(PretrainedError) as error:
        load_pretrained("tiny", folder)
    message = str(error.value)
    assert "missing" in message and str(folder / "tiny.pt") in message
    assert "equimod-edu compare --test" in message            # the command that trained it
    assert "export_pretrained(" in message and "'tiny'" in message


def test_an_altered_file_is_refused_with_both_hashes(exported):
    folder, entry = exported
    with open(folder / "tiny.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(PretrainedError) as error:
        verify("tiny", folder)
    message = str(error.value)
    assert "altered" in message and entry["sha256"][:16] in message and "export_pretrained(" in message


def test_an_unknown_name_lists_the_available_ones(exported):
    folder, _ = exported
    with pytest.raises(PretrainedError, match=r"no shipped checkpoint named 'nope'.*available: tiny"):
        load_pretrained("nope", folder)


# ---------------------------------------------------------------- the shipped files (never modified here)
def test_the_shipped_matched_pair_is_there_and_intact():
    names = available()
    assert {"simclr", "equimod"} <= set(names), f"data/pretrained/ lists {names}"
    entries = manifest()["checkpoints"]
    for name in names:
        path = verify(name)          # the SHA-256 of the file matches the manifest
        assert path.parent == PRETRAINED_DIR
        assert path.stat().st_size < 10_000_000, f"{name}: keep shipped checkpoints a few MB"
        assert entries[name]["command"].startswith("equimod-edu ") and entries[name]["metrics"]["shape_acc"] > 0
    total = sum(path.stat().st_size for path in PRETRAINED_DIR.iterdir())
    assert total < 40_000_000, f"data/pretrained/ holds {total / 1e6:.1f} MB; keep it under 40 MB"
    simclr, equimod = entries["simclr"]["config"], entries["equimod"]["config"]
    differ = {k for k in simclr if simclr[k] != equimod.get(k)}
    assert differ <= {"equimod", "out_dir"}, f"the pair is not matched: {sorted(differ)} differ"
    assert simclr["equimod"] is False and equimod["equimod"] is True


@pytest.mark.parametrize("name", available())
def test_each_shipped_checkpoint_loads_in_eval_mode_with_its_metrics(name):
    model, cfg, metrics = load_pretrained(name)
    assert not model.training
    assert metrics == manifest()["checkpoints"][name]["metrics"]
    x = cfg.augmentation().original(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with torch.no_grad():
        h, z, y = model.embed(x)
    assert torch.isfinite(h).all() and (y is not None) == cfg.equimod
