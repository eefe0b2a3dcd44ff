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


def test_merged_summary_sets_comparisons_side_by_side_and_never_overwrites_a_row():
    from equimod_edu.compare import merged_summary, table_markdown

    row = {"shape_acc": {"mean": 0.5, "std": 0.1, "n": 3}}
    live = {"summary": {"simclr": row, "random": {"shape_acc": {"mean": 0.3, "std": 0.0, "n": 3}}}}
    peers = {"summary": {"random": {"shape_acc": {"mean": 0.2, "std": 0.0, "n": 3}}, "augself": row}}
    merged = merged_summary((live, ["random", "simclr"]), (peers, ["augself"]))
    assert list(merged) == ["random", "simclr", "augself"] and merged["random"]["shape_acc"]["mean"] == 0.3
    assert list(merged_summary(live["summary"], {"augself": row})) == ["simclr", "random", "augself"]
    assert table_markdown(merged, ["shape_acc"]).splitlines()[-1] == "| augself | 0.500 ± 0.100 |"
    with pytest.raises(ValueError, match="'random' is in two comparisons"):
        merged_summary(live, peers)
    with pytest.raises(KeyError, match="no variant 'cassle'"):
        merged_summary((peers, ["cassle"]))


@pytest.mark.slow
def test_runs_trained_in_two_worker_processes_give_the_numbers_of_one_at_a_time(tmp_path):
    """``compare(..., jobs=2)`` (``make demo`` on two cores) trains each run in its own process, one thread each.

    The runs, their reports and the table are those of the same runs trained one after the other with one
    thread: only the wall time changes.
    """
    import torch

    from equimod_edu.compare import compare
    from equimod_edu.report import QUICK

    overrides = {"train_subset": 256, "epochs": 1, "batch_size": 64}
    logged = []
    kwargs = dict(preset="cpu-live", overrides=overrides, progress=False, eval_sizes=QUICK)
    assert torch.get_num_threads() == 1  # as each worker of two on a 2-core machine (os.cpu_count() // 2)
    if (os.cpu_count() or 1) // 2 != 1:
        pytest.skip("the workers' thread count differs from this process's on this machine")
    one = compare(["simclr", "equimod"], [0], tmp_path / "one", log=logged.append, **kwargs)
    two = compare(["simclr", "equimod"], [0], tmp_path / "two", jobs=2, log=logged.append, **kwargs)
    assert set(two["runs"]) == {"random", "simclr", "equimod"}
    for variant in ("random", "simclr", "equimod"):
        measured = {k: v for k, v in two["runs"][variant]["0"].items() if k != "train_seconds"}
        assert measured == {k: v for k, v in one["runs"][variant]["0"].items() if k != "train_seconds"}, variant
    assert any("worker process" in line for line in logged)
    with pytest.raises(ValueError, match="jobs"):
        compare(["simclr"], [0], tmp_path / "bad", jobs=0, **kwargs)
