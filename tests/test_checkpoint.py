"""checkpoint.py: a checkpoint describes its model and augmentation.

build_model rebuilds the model from a run's file, an older file, or a shipped one without the BYOL target.
(Damaged files: test_reliability.py.)
"""

import pytest
import torch
from helpers import params_of

from equimod_edu.checkpoint import load_checkpoint
from equimod_edu.train import Trainer


def test_a_checkpoint_describes_its_model_and_build_model_rebuilds_it(tmp_path, tiny_config, tiny_dataset):
    from equimod_edu.checkpoint import augmentation_of, build_model, model_config_of

    cfg = tiny_config(tmp_path, base="byol", param_groups=("crop", "hue"), max_steps=2)
    trainer = Trainer(cfg, dataset=tiny_dataset())
    trainer.run()
    state = load_checkpoint(cfg.out_dir)
    assert model_config_of(state) == cfg.model_config() and augmentation_of(state) == cfg.augmentation()
    model = build_model(state)
    assert torch.equal(params_of(model), params_of(trainer.model)) and not model.training
    legacy = {k: v for k, v in state.items() if k not in ("model_config", "augmentation")}  # older files
    assert torch.equal(params_of(build_model(legacy)), params_of(model))
    online_only = {**state, "model": {k: v for k, v in state["model"].items() if not k.startswith("target_")}}
    with pytest.raises(ValueError, match="target_"):
        build_model(online_only)
    rebuilt = build_model(online_only, missing_ok=("target_",))  # the shipped BYOL files leave the target out
    assert torch.equal(rebuilt.target_projector.layers[0].weight, rebuilt.projector.layers[0].weight)
