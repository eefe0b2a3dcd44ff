"""notebook.py: the notebooks' setup helpers."""

import sys
import types

import pytest

from equimod_edu import notebook


def test_enable_colab_widgets_only_acts_in_colab(monkeypatch):
    assert notebook.enable_colab_widgets() is False
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert notebook.enable_colab_widgets() is True and calls == [1]


@pytest.mark.parametrize("value,fast", [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False),
                                        ("false", False), ("NO", False), ("off", False), ("", False), (None, False)])
def test_equimod_fast_reads_the_same_words_as_make_book_full(monkeypatch, capsys, value, fast):
    import equimod_edu

    if value is None:
        monkeypatch.delenv("EQUIMOD_FAST", raising=False)
    else:
        monkeypatch.setenv("EQUIMOD_FAST", value)
    assert notebook.setup(equimod_edu.__version__) is fast
    assert ("FAST mode" if fast else "full mode") in capsys.readouterr().out


@pytest.mark.parametrize("value", ["2", "fast", "maybe"])
def test_equimod_fast_refuses_a_word_that_is_neither_on_nor_off(monkeypatch, value):
    import equimod_edu

    monkeypatch.setenv("EQUIMOD_FAST", value)
    with pytest.raises(ValueError, match=f"EQUIMOD_FAST={value!r}.*1.*0"):
        notebook.setup(equimod_edu.__version__)
