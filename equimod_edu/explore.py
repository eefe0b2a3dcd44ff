"""Compatibility: the figure and explorer names of earlier releases, now in four modules.

    figures.py   static figures (views_gallery, sweep_figure, invariance_curves, grouped bars, PCAMap)
    widgets.py   the ipywidgets explorers and LiveCurves
    notebook.py  notebook plumbing (setup, enable_colab_widgets, in_notebook)
    views.py     slider values -> parameters -> words (params_from_values, crop_box, describe_params)

``from equimod_edu.explore import DisplacementExplorer`` keeps working; new code imports from the
modules above. ``column_names(config)`` is now ``config.column_names()``.
"""

from .equivariance import invariance_distances  # noqa: F401
from .figures import (PCAMap, grouped_bars, invariance_curves, sweep_data, sweep_figure, to_numpy_image,  # noqa: F401
                      use_headless_backend, views_gallery)
from .notebook import enable_colab_widgets, in_notebook  # noqa: F401
from .views import (CONTROL_COLUMNS, CONTROL_NAMES, JITTER_ORDERS, Sweep, crop_box, describe_params,  # noqa: F401
                    params_from_values, sweep_params)
from .widgets import AugmentationExplorer, DisplacementExplorer, LiveCurves, augmentation_controls  # noqa: F401


def __getattr__(name: str):
    if name == "column_names":
        raise AttributeError("explore.column_names(config) is now a method: config.column_names()")
    raise AttributeError(f"module 'equimod_edu.explore' has no attribute {name!r}")
