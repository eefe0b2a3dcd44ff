"""Comparisons: variant configs, the supervised reference, label efficiency, report reuse."""

import dataclasses
import json
import os
import time

import pytest
import torch

from equimod_edu.compare import NO_COLOUR, TIME_MATCH, VARIANTS, cached_report, train_seconds, variant_config
from equimod_edu.data import make_synthetic
from equimod_edu.evaluate import EvalSizes
from equimod_edu.models import EquiModModel
from equimod_edu.supervised import label_efficiency, per_class_subset, supervised_augmentation, train_supervised
from equimod_edu.train import TrainConfig, Trainer, load_checkpoint, load_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(augment_overrides={"size": 16}, proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, byol_hidden=32,
            batch_size=16, epochs=2, warmup_epochs=1, log_every=2, progress=False)


@pytest.fixture(scope="module")
def shapes16():
    return make_synthetic(96, size=16, seed=3)


def test_presets_of_the_cpu_recipe_and_the_old_name():
    live, reference = TrainConfig.preset("cpu-live"), TrainConfig.preset("cpu-reference")
    assert (live.batch_size, live.epochs, live.train_subset, live.optimizer) == (64, 6, 8000, "adamw")
    assert reference.train_subset == live.train_subset and reference.epochs == 2 * live.epochs  # 2x the compute
    assert TrainConfig.preset("cpu-demo") == live  # the name used before keeps working
    assert live.augmentation().hue == 0.5  # the synthetic preset's hue jitter covers the colour circle


def test_variants_are_controlled_changes_of_one_config():
    simclr, no_colour = variant_config("simclr", 1, "cpu-live"), variant_config("simclr-no-colour", 1, "cpu-live")
    differ = {k for k, v in simclr.to_dict().items() if no_colour.to_dict()[k] != v}
    assert differ == {"augment_overrides"}  # only the colour augmentations change
    aug = no_colour.augmentation()
    assert (aug.hue, aug.saturation, aug.gray_p) == (0.0, 0.0, 0.0) and aug.brightness == simclr.augmentation().brightness
    # a caller's augmentation override is kept, the variant's win where they meet
    cfg = variant_config("simclr-no-colour", 0, "cpu-live", {"augment_overrides": {"flip_p": 0.0, "hue": 0.3}})
    assert cfg.augment_overrides == {"flip_p": 0.0, **NO_COLOUR}
    # time-matched baselines train more epochs, nothing else
    timed = variant_config("simclr-time", 0, "cpu-live")
    assert timed.epochs == round(simclr.epochs * TIME_MATCH["simclr-time"]) > simclr.epochs
    assert variant_config("equimod", 2, "cpu-live").seed == 2
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("simclr-plus", 0, "cpu-live")
    assert set(TIME_MATCH) <= set(VARIANTS)


def test_supervised_training_learns_the_labels_and_resumes(tmp_path, shapes16):
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", backbone="convnet", optimizer="adamw", lr=3e-3,
                      device="cpu", out_dir=str(tmp_path / "sup"), **{**TINY, "epochs": 6})
    model, info = train_supervised(cfg, shapes16)
    assert info["steps"] == 6 * (96 // 16) and info["train_acc"] > 1 / 8  # above chance on 8 shapes
    state = load_checkpoint(tmp_path / "sup")
    assert state["stop_reason"] == "finished" and state["objective"] == "supervised" and state["train_seconds"] > 0
    loaded, loaded_cfg = load_model(tmp_path / "sup")  # read back like any run (for evaluate_run)
    assert loaded_cfg.equimod is False
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(loaded.features(x), model.features(x))
    # an existing finished checkpoint is continued, not retrained
    _, again = train_supervised(cfg, shapes16)
    assert again["steps"] == info["steps"]
    aug = supervised_augmentation(cfg.augmentation())
    assert aug.jitter_p == 0 and aug.gray_p == 0 and aug.crop_scale == cfg.augmentation().crop_scale


def test_per_class_subset_and_label_efficiency(tmp_path, shapes16):
    few = per_class_subset(shapes16, 2, seed=0)
    assert len(few) == 16 and torch.bincount(few.targets).tolist() == [2] * 8
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", backbone="convnet", device="cpu",
                      out_dir=str(tmp_path / "x"), **TINY)
    torch.manual_seed(0)
    model = EquiModModel(cfg.model_config()).eval()
    train, test = shapes16.subset(slice(0, 64)), shapes16.subset(slice(64, 96))
    result = label_efficiency({"random": (model, cfg)}, train, test, per_class=(1, 4), scratch=cfg,
                              scratch_steps=2, log=lambda *_: None)
    assert result["per_class"] == [1, 4] and set(result["curves"]) == {"random", "supervised from scratch"}
    assert all(0 <= a <= 1 for curve in result["curves"].values() for a in curve)
    assert result["chance"] == pytest.approx(1 / 8) and result["n_test"] == 32


def test_a_report_is_reused_only_for_the_same_checkpoint_sizes_and_seed(tmp_path, shapes16):
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", backbone="convnet", device="cpu",
                      out_dir=str(tmp_path / "run"), **TINY)
    Trainer(cfg, dataset=shapes16).run()
    assert train_seconds(tmp_path / "run") > 0
    sizes = EvalSizes(n_train=8)
    assert cached_report(tmp_path / "run", sizes, 0) is None
    (tmp_path / "run" / "eval").mkdir()
    report = {"meta": {"sizes": dataclasses.asdict(sizes), "seed": 0}}
    (tmp_path / "run" / "eval" / "report.json").write_text(json.dumps(report))
    assert cached_report(tmp_path / "run", sizes, 0) == report
    assert cached_report(tmp_path / "run", sizes, 1) is None
    assert cached_report(tmp_path / "run", EvalSizes(n_train=9), 0) is None
    later = time.time() + 5
    os.utime(tmp_path / "run" / "checkpoint.pt", (later, later))  # a newer checkpoint: the report is stale
    assert cached_report(tmp_path / "run", sizes, 0) is None
