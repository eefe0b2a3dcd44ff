"""report.py: a tiny run evaluated end to end (every section of the report), and the random-init baseline."""

import json

import pytest

from equimod_edu import report
from equimod_edu.augment import AugmentationConfig
from equimod_edu.config import TrainConfig
from equimod_edu.synthetic import make_synthetic
from equimod_edu.train import Trainer

AUG = AugmentationConfig.synthetic(size=16)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


TINY = report.EvalSizes(n_train=64, n_test=32, knn_k=20, equi_images=12, gallery_size=4, sensitivity_views=2,
                    posthoc_images=64, posthoc_pairs=1, posthoc_epochs=2, param_train=64, param_test=32)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    data = make_synthetic(96, size=16, seed=0)
    cfg = TrainConfig(dataset="synthetic", augment="synthetic", augment_overrides={"size": 16}, backbone="convnet",
                      proj_hidden=32, z_dim=16, y_dim=16, param_embed_dim=8, batch_size=16, epochs=1,
                      warmup_epochs=0, train_subset=64, device="cpu", out_dir=str(out / "run"), progress=False)
    Trainer(cfg, dataset=data.subset(slice(0, 64))).run()
    return out, cfg, (data.subset(slice(0, 64)), data.subset(slice(64, 96)))


def test_evaluate_run_end_to_end_writes_the_report(tiny_run):
    out, _, data = tiny_run
    result = report.evaluate_run(out / "run", dataset=data, sizes=TINY)
    assert result["target"] == "shape" and list(result["labels"])[:2] == ["shape", "colour"]
    assert result["labels"]["x"]["metric"] == "r2" and set(result["knn"]) == {"shape", "colour"}
    for key in ("equivariance", "equivariance_posthoc"):
        assert {"gain", "relative_gain", "retrieval", "retrieval_within_image", "per_augmentation"} <= set(result[key])
    assert result["equivariance"]["space"] == "y" and result["equivariance_posthoc"]["space"] == "h"
    assert set(result["sensitivity"]) == set(AUG.encoded_groups()) == set(result["sensitivity_posthoc"])
    assert result["augmentation_probes"]["brightness"]["metric"] == "r2"
    assert result["meta"]["run_dir"] == str(out / "run") and result["meta"]["equimod"]

    paths = report.write_report(result, out / "eval")
    for name in ("report.json", "report.md", "sensitivity.png", "per_augmentation.png", "augmentation_probes.png"):
        assert (out / "eval" / name).stat().st_size > 0
    saved = json.loads((out / "eval" / "report.json").read_text())
    assert set(saved) >= {"labels", "knn", "equivariance", "equivariance_posthoc", "sensitivity",
                          "augmentation_probes", "meta"}
    assert "Equivariance" in paths["markdown"].read_text()


def test_evaluate_random_init_baseline_has_only_the_posthoc_predictor(tiny_run, tmp_path):
    _, cfg, data = tiny_run
    baseline = TrainConfig.from_dict({**cfg.to_dict(), "equimod": False})
    result = report.evaluate_random_init(baseline, dataset=data, sizes=TINY)
    assert result["equivariance"] is None and result["sensitivity"] is None
    assert result["equivariance_posthoc"]["retrieval"]["gallery"] == TINY.equi_images * TINY.gallery_size
    assert result["meta"]["random_init"] and not result["meta"]["equimod"]
    report.write_report(result, tmp_path)
    assert "random init" in (tmp_path / "report.md").read_text()
