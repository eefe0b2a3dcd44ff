"""Notebook plumbing: the setup cell, Colab's widget manager, showing a PNG in an Output.

The first cell of every notebook (version check, Colab, mode line)::

    from equimod_edu.notebook import setup
    FAST = setup("0.1.0")
"""

from __future__ import annotations

import io
import os
import sys

__all__ = ["setup", "fast_mode", "enable_colab_widgets", "in_notebook", "png_bytes", "show_png"]


def setup(written_for: str) -> bool:
    """The first cell of a notebook: check the package version, enable Colab widgets, print the mode.

    written_for: the equimod_edu version the notebook was written for; another installed version
    raises RuntimeError saying where the package comes from and how to match them. Returns FAST,
    True when the environment variable EQUIMOD_FAST is on (tiny budgets: tests, a first look; see fast_mode).
    """
    import equimod_edu

    if equimod_edu.__version__ != written_for:
        raise RuntimeError(
            f"This notebook was written for equimod_edu {written_for}, but version {equimod_edu.__version__} is "
            f"installed (from {os.path.dirname(equimod_edu.__file__)}). Open the notebooks of the same release as "
            f"the package: check out the matching version of the repository, or reinstall the package from this "
            f"one with `pip install -e .` in its root.")
    enable_colab_widgets()  # Colab needs this for the ipywidgets explorers; elsewhere it does nothing
    fast = fast_mode()
    print(f"equimod_edu {equimod_edu.__version__} | {'FAST' if fast else 'full'} mode")
    return fast

#: The words EQUIMOD_FAST reads as on and as off, in any case (`make book FULL=` takes the same lower-case on words).
ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def fast_mode(environ=None) -> bool:
    """Whether EQUIMOD_FAST is on: 1/true/yes/on -> True; 0/false/no/off, empty or unset -> False.

    Any other value raises ValueError naming it (a typo must not silently mean full mode).
    """
    value = (os.environ if environ is None else environ).get("EQUIMOD_FAST", "")
    if value.strip().lower() in ON:
        return True
    if value.strip().lower() in OFF:
        return False
    raise ValueError(f"EQUIMOD_FAST={value!r} is neither on nor off: set it to 1 (fast mode) or 0 (full mode), "
                     f"or unset it (full mode)")


def enable_colab_widgets() -> bool:
    """In Google Colab, switch on the widget manager that ipywidgets 8 needs; elsewhere do nothing.

    Call it once before displaying an explorer. Returns True when running in Colab (and enabled).
    JupyterLab and classic Notebook need nothing: the explorers use core ipywidgets only.
    """
    try:
        from google.colab import output  # only importable inside Colab
    except ImportError:
        return False
    output.enable_custom_widget_manager()
    return True

def in_notebook() -> bool:
    """Whether an IPython kernel (Jupyter, Colab) runs this code: only then do explorers display."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")

def png_bytes(fig, dpi: int) -> bytes:
    """Render a Figure to PNG bytes (the same pixels in every front end, whatever the backend)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()

def show_png(output, png: bytes) -> None:
    """Replace what an ipywidgets.Output shows by the image (in a kernel; a no-op elsewhere)."""
    if not in_notebook():
        return
    from IPython.display import Image, clear_output, display

    with output:
        clear_output(wait=True)  # wait: swap in the new image without a blank flash
        display(Image(data=png, format="png"))
