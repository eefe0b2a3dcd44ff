"""compare.py: variant configs and report reuse (the supervised reference: test_supervised.py)."""

import dataclasses
import json
import os
import time

import pytest
from helpers import TINY

from equimod_edu.compare import NO_COLOUR, TIME_MATCH, VARIANTS, cached_report, training_summary, variant_config
from equimod_edu.config import TrainConfig
from equimod_edu.report import EvalSizes
from equimod_edu.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_variants_are_controlled_changes_of_one_config():
    simclr, no_colour = variant_config("simclr", 1, "cpu-live"), variant_config("simclr-no-colour", 1, "cpu-live")
    differ = {k for k, v in simclr.to_dict().items() if no_colour.to_dict()[k] != v}
    assert differ == {"augment_overrides"}  # only the colour augmentations change
    aug = no_colour.augmentation()
    assert (aug.hue, aug.saturation, aug.gray_p) == (0.0, 0.0, 0.0)
    assert aug.brightness == simclr.augmentation().brightness
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


def test_a_report_is_reused_only_for_the_same_checkpoint_sizes_and_seed(tmp_path, shapes16):
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", backbone="convnet", device="cpu",
                      out_dir=str(tmp_path / "run"), **TINY)
    Trainer(cfg, dataset=shapes16).run()
    assert training_summary(tmp_path / "run")["train_seconds"] > 0
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
