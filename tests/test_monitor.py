"""monitor.py: detached h only, accuracy before the update, kNN, records, live panel, training unchanged.

The online probe learns from detached h only and measures each batch before it learns from it; the kNN
on a hand-made bank; the records and the live panel; training is bit-identical with and without it.

Resume: the monitor restarts (fresh classifiers, not checkpointed), as its docstring says.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import params_of, tiny_model

from equimod_edu.augment import AugmentationConfig
from equimod_edu.dataset import ImageDataset
from equimod_edu.live import LiveCurves
from equimod_edu.monitor import OnlineClassifier, OnlineMonitor, original_features
from equimod_edu.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_the_classifier_learns_from_detached_features_only():
    layer = torch.nn.Linear(4, 6)
    h = layer(torch.randn(8, 4))                      # features with a graph back to a "model"
    head = OnlineClassifier(6, 3, lr=0.1)
    head.step(h, torch.arange(8) % 3)
    assert layer.weight.grad is None and layer.bias.grad is None
    assert head.linear.weight.abs().sum() > 0         # the classifier itself did learn


def test_the_accuracy_is_measured_before_the_update_on_the_batch():
    h, y = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 2.0]]), torch.tensor([1, 1, 0, 0])
    head = OnlineClassifier(2, 2, lr=1.0)
    # zero weights: every logit 0, argmax class 0 -> right on the two images of class 0 only
    assert head.step(h, y).item() == 0.5
    assert head.step(h, y).item() == 1.0              # after one update on this batch it separates it


def test_the_memory_keeps_the_latest_pairs():
    monitor = OnlineMonitor(memory=5)
    monitor.memory_h, monitor.memory_rows, monitor.remembered = None, None, 0
    for start in (0, 3):
        rows = torch.arange(start, start + 3)
        h, kept = monitor._remember(rows[:, None].float().repeat(1, 2), rows)
    assert sorted(kept.tolist()) == [1, 2, 3, 4, 5] and torch.equal(h[:, 0].long(), kept)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _hand_made_monitor() -> OnlineMonitor:
    """A 1-NN monitor, bank of 6 images labelled 0 1 2 0 1 2; queries: the bank's first four, labelled 0 1 0 0.

    A query's nearest neighbour is itself (cosine 1), so 3 of the 4 carry their neighbour's label.
    """
    images = _images(6, 0)
    monitor = OnlineMonitor(columns=["label"], k=1)
    monitor.columns = ["label"]
    monitor.bank = ImageDataset(images, {"label": torch.tensor([0, 1, 2, 0, 1, 2])}, {"label": list("abc")}, "label")
    monitor.test = ImageDataset(images[:4], {"label": torch.tensor([0, 1, 0, 0])}, {"label": list("abc")}, "label")
    return monitor


def test_knn_on_a_hand_made_bank_in_eval_mode_and_the_modes_are_restored():
    monitor = _hand_made_monitor()
    model = tiny_model(equimod=False).train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    aug = AugmentationConfig.synthetic().replace(size=16)
    assert monitor.knn(model, aug) == {"label": 0.75}   # 3 of 4 queries carry their neighbour's label
    assert all(m.training for m in model.modules())
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert len(monitor.knn_seconds) == 1


def test_the_epoch_end_scores_each_online_classifier_on_the_held_out_images():
    monitor = _hand_made_monitor()
    model, aug = tiny_model(equimod=False).train(), AugmentationConfig.synthetic().replace(size=16)
    assert "heldout_label_acc" not in monitor.epoch_end(model, aug)   # no classifier before the first step
    test_h = original_features(model, aug.original(monitor.test.images))
    monitor.heads = {"label": OnlineClassifier(test_h.shape[1], 3)}   # zero weights: it answers class 0 for all
    record = monitor.epoch_end(model, aug)
    assert record["heldout_label_acc"] == 0.75 and record["knn_label_acc"] == 0.75   # 3 of 4 test labels are 0


def _run(tmp_path, tiny_config, data, callbacks, **overrides):
    trainer = Trainer(tiny_config(tmp_path, log_every=1, **overrides), dataset=data, callbacks=callbacks)
    trainer.run()
    records = [json.loads(line) for line in (Path(trainer.cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    return trainer, records


def test_training_is_the_same_with_and_without_the_monitor_and_the_records_hold_its_keys(tmp_path, tiny_config,
                                                                                         tiny_dataset):
    data = tiny_dataset()
    plain, plain_records = _run(tmp_path / "plain", tiny_config, data, [])
    monitor, curves = OnlineMonitor(test_set=tiny_dataset(n=32, seed=1), bank=32, test=16, k=5), LiveCurves()
    watched, records = _run(tmp_path / "watched", tiny_config, data, [monitor, curves])
    assert torch.equal(params_of(plain.model), params_of(watched.model))
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                 watched.model.state_dict().values()))
    losses = ("loss", "inv", "equi", "gain", "inv_top1", "equi_top1")
    assert [[r[k] for k in losses] for r in records] == [[r[k] for k in losses] for r in plain_records]
    assert all(0 <= r["online_label_acc"] <= 1 and r["label_chance"] == 0.25 for r in records)
    epoch_ends = [r for r in records if "knn_label_acc" in r]
    assert [r["step"] for r in epoch_ends] == [4, 8] and all(0 <= r["knn_label_acc"] <= 1 for r in epoch_ends)
    assert [r["step"] for r in records if "heldout_label_acc" in r] == [4, 8]
    assert not any(k.startswith(("online_", "heldout_", "knn_")) for r in plain_records for k in r)
    # the live panel: online lines, held-out squares, kNN dots, the chance level and the offline probe's dashed line
    assert len(curves.probes["online_label_acc"]) == 8 and len(curves.probes["knn_label_acc"]) == 2
    assert len(curves.probes["heldout_label_acc"]) == 2
    curves.offline = {"label": 0.5}
    panel = {ax.get_label(): ax for ax in curves.figure().axes}["what h is for"]
    styles = sorted(line.get_linestyle() for line in panel.get_lines())
    assert styles == ["-", "--", ":", "None", "None"]
    assert sorted(line.get_marker() for line in panel.get_lines() if line.get_linestyle() == "None") == ["o", "s"]


def test_the_eval_mode_forward_leaves_the_batchnorm_buffers_the_modes_and_the_rng_untouched():
    model = tiny_model(equimod=False).train()
    model.projector.eval()                            # a mixed state: each module's own mode comes back
    modes = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6, 3, 16, 16)
    rng = torch.random.get_rng_state()
    h = original_features(model, x, batch_size=4)
    assert h.shape == (6, model.feature_dim) and not h.requires_grad
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), rng)
    with torch.no_grad():
        assert torch.allclose(h, model.eval().features(x), atol=1e-6)   # eval mode: the running statistics


def _count_feature_calls(trainer) -> list:
    """Wraps trainer.model.features to record the number of images of each call (the list returned)."""
    calls, features = [], trainer.model.features
    trainer.model.features = lambda x: calls.append(x.shape[0]) or features(x)
    return calls


@pytest.mark.parametrize("equimod", [True, False])
def test_the_monitor_reads_the_originals_h_with_no_extra_forward_where_the_batch_holds_it(
        tmp_path, tiny_config, tiny_dataset, equimod, monkeypatch):
    """EquiMod: out.h[:N] (x_o's rows) reused, no extra forward. SimCLR: one eval forward of `rows` originals."""
    data, seen, rows = tiny_dataset(), [], []
    accuracy = OnlineClassifier.accuracy
    monkeypatch.setattr(OnlineClassifier, "accuracy", lambda head, h, y: seen.append(h) or accuracy(head, h, y))
    trainer = Trainer(tiny_config(tmp_path, equimod=equimod), dataset=data, callbacks=[OnlineMonitor(rows=8, test=0)])
    trainer.add_callback("on_step", lambda t, event: rows.append(event["indices"][:8]))
    calls = _count_feature_calls(trainer)
    trainer.run()
    n = trainer.cfg.batch_size
    assert calls == ([3 * n] if equimod else [2 * n, 8]) * 8        # the step's forward (+ SimCLR's 8 originals)
    assert len(seen) == 8 and all(h.shape == (8, trainer.model.feature_dim) for h in seen)  # one column: "label"
    if not equimod:  # the last step's h: the final model, in eval mode, on x_o of the step's first 8 images
        x_o = trainer.augmenter.original(data.images[rows[-1]])
        assert torch.equal(seen[-1], original_features(trainer.model, x_o, trainer.bf16))


def test_simclr_training_and_its_batchnorm_buffers_are_the_same_with_and_without_the_monitor(tmp_path, tiny_config,
                                                                                            tiny_dataset):
    data = tiny_dataset()
    plain, plain_records = _run(tmp_path / "plain", tiny_config, data, [], equimod=False)
    monitor = OnlineMonitor(test_set=tiny_dataset(n=32, seed=1), bank=32, test=16, k=5, rows=8)
    watched, records = _run(tmp_path / "watched", tiny_config, data, [monitor], equimod=False)
    plain_state, watched_state = plain.model.state_dict(), watched.model.state_dict()
    assert any("running_mean" in k for k in plain_state)
    assert all(torch.equal(plain_state[k], watched_state[k]) for k in plain_state)   # weights and BN buffers
    assert [r["loss"] for r in records] == [r["loss"] for r in plain_records]
    assert all(m.training for m in watched.model.modules())
    assert all(0 <= r["online_label_acc"] <= 1 for r in records)


def test_resume_restarts_the_monitor(tmp_path, tiny_config, tiny_dataset):
    data, test_set = tiny_dataset(), tiny_dataset(n=32, seed=1)
    _run(tmp_path, tiny_config, data, [OnlineMonitor(test_set=test_set, bank=32, test=16, k=5)], max_steps=3)
    monitor = OnlineMonitor(test_set=test_set, bank=32, test=16, k=5)
    trainer = Trainer(tiny_config(tmp_path, log_every=1), dataset=data, callbacks=[monitor], resume=True)
    assert monitor.heads == {}                        # fresh classifiers
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(math.isfinite(r["online_label_acc"]) for r in records)


def test_the_monitor_refuses_an_objective_without_features_and_a_missing_column(tmp_path, tiny_config, tiny_dataset):
    with pytest.raises(ValueError, match="does not expose h"):
        Trainer(tiny_config(tmp_path / "a", objective="supervised"), dataset=tiny_dataset(),
                callbacks=[OnlineMonitor(test=0)])
    with pytest.raises(ValueError, match="not a class column"):
        Trainer(tiny_config(tmp_path / "b"), dataset=tiny_dataset(), callbacks=[OnlineMonitor(columns=["colour"])])
