"""supervised.py: the supervised reference trains, resumes and reads back like any run; label efficiency."""

import dataclasses

import pytest
import torch
from helpers import TINY

from equimod_edu.checkpoint import load_checkpoint, load_model
from equimod_edu.config import TrainConfig
from equimod_edu.models import EquiModModel
from equimod_edu.objectives import supervised_augmentation
from equimod_edu.supervised import label_efficiency, per_class_subset, train_supervised

pytestmark = pytest.mark.usefixtures("one_thread")


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
    # a finished run of other settings is not reused: refused, or (overwrite=True, compare's folders) trained again
    with pytest.raises(ValueError, match="trained with lr=0.003, this one asks for 0.001.*overwrite=True"):
        train_supervised(dataclasses.replace(cfg, lr=1e-3), shapes16)
    _, other = train_supervised(dataclasses.replace(cfg, lr=1e-3, epochs=1), shapes16, overwrite=True, log=print)
    assert other["steps"] == 96 // 16 and load_checkpoint(tmp_path / "sup")["config"]["lr"] == 1e-3
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


@pytest.mark.parametrize("per_class", [(), (0,), (1, -2), (2.5,)])
def test_label_efficiency_refuses_labels_per_class_below_one(per_class, shapes16):
    with pytest.raises(ValueError, match="per_class"):
        label_efficiency({}, shapes16, shapes16, per_class=per_class, log=lambda *_: None)
