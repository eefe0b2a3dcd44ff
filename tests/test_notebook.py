"""notebook.py: the notebooks' setup helpers."""

import sys
import types

from equimod_edu import notebook


def test_enable_colab_widgets_only_acts_in_colab(monkeypatch):
    assert notebook.enable_colab_widgets() is False
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert notebook.enable_colab_widgets() is True and calls == [1]
