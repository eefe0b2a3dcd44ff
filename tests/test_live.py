"""live.py: LiveCurves records every log line headless, draws chance lines, and works as a Trainer callback."""

import math

import pytest
import torch

from equimod_edu.config import TrainConfig
from equimod_edu.dataset import ImageDataset
from equimod_edu.live import LiveCurves
from equimod_edu.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_live_curves_record_every_log_line():
    curves = LiveCurves()
    curves.log(None, {"loss": 3.0, "inv": 2.0, "equi": 1.0, "gain": 0.1, "step": 10})
    curves.log(None, {"loss": 2.5, "inv": 1.8, "equi": 0.7, "gain": 0.2, "step": 20})
    curves.log(None, {"loss": 2.0, "inv": 2.0, "step": 30})                # a baseline: no equi, no gain
    curves.end(None, {"step": 30, "stop_reason": "finished"})               # on_train_end adds no point
    assert curves.steps == [10, 20, 30] and curves.history["loss"] == [3.0, 2.5, 2.0]
    assert curves.history["gain"][:2] == [0.1, 0.2] and math.isnan(curves.history["gain"][2])
    assert curves.redraws == 0                                             # headless: records only
    fig = curves.figure()
    assert [ax.get_label() for ax in fig.axes] == ["loss", "inv", "equi", "gain"]


def test_live_curves_draw_the_chance_lines_the_trainer_logs():
    curves = LiveCurves()
    curves.log(None, {"loss": 4.0, "inv": 4.0, "inv_top1": 0.2, "inv_chance": math.log(127), "step": 1})
    assert curves.chance["inv"] == pytest.approx(math.log(127)) and curves.chance["inv_top1"] == pytest.approx(1 / 127)
    panels = {ax.get_label(): ax for ax in curves.figure().axes}
    assert set(panels) == {"loss", "inv", "inv_top1"}
    chance_line = [line for line in panels["inv"].get_lines() if line.get_label() == "chance"]
    assert chance_line and chance_line[0].get_ydata()[0] == pytest.approx(math.log(127))
    assert not [line for line in panels["loss"].get_lines() if line.get_label() == "chance"]


def test_live_curves_as_a_trainer_callback(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (16, 3, 16, 16), generator=g, dtype=torch.uint8),
                        {"label": torch.arange(16) % 2}, {"label": ["a", "b"]}, "label")
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", augment_overrides={"size": 16}, backbone="convnet",
                      proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, batch_size=8, epochs=1, warmup_epochs=0,
                      lr=0.1, device="cpu", log_every=1, checkpoint_every=100, max_steps=2,
                      out_dir=str(tmp_path / "run"), progress=False)
    curves = LiveCurves()
    trainer = Trainer(cfg, callbacks=[curves], dataset=data)
    trainer.run()
    assert curves.steps == [1.0, 2.0]
    assert all(len(curves.history[k]) == 2 and all(map(math.isfinite, curves.history[k]))
               for k in ("loss", "inv", "equi", "gain", "inv_top1", "equi_top1"))
    assert set(curves.chance) == {"inv", "equi", "inv_top1", "equi_top1"}
