"""Compatibility: the evaluation names of earlier releases, now in four modules of one idea each.

    probes.py        features, linear / ridge / label probes, kNN, SGD linear evaluation,
                     augmentation-parameter probes
    equivariance.py  view embeddings, prediction quality, retrieval, sensitivity, the post-hoc
                     predictor, invariance distances
    report.py        evaluation sizes, evaluate_model / evaluate_run / evaluate_random_init, markdown,
                     figures, writing
    views.py         the recipes of augmentation parameters (K views per image, one at a time, ...)

``from equimod_edu.evaluate import linear_probe`` keeps working; new code imports from the
modules above.
"""

from .dataset import shuffled_subset  # noqa: F401
from .equivariance import (PosthocPredictor, ViewEmbeddings, chance_of_ranking, embed_views,  # noqa: F401
                           equivariance_metrics, equivariance_scores, fit_posthoc_predictor, prediction_quality,
                           predictor_sensitivity, retrieval_metrics, scorer, sensitivity_from_embeddings)
from .models import model_device  # noqa: F401
from .probes import (augmentation_probes, extract_features, knn_accuracy, label_probes, linear_eval_sgd,  # noqa: F401
                     linear_probe, ridge_probe)
from .report import (FAST, FULL, QUICK, EvalSizes, evaluate_model, evaluate_random_init, evaluate_run,  # noqa: F401
                     report_figures, report_markdown, write_report)
from .views import (ONE_AUGMENTATION_FIELDS, centre_crop_params, linear_eval_augmentation,  # noqa: F401
                    one_at_a_time_groups, parameter_targets, sample_one_augmentation, sample_views)
