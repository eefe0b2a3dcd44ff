"""cli.py in this process (`cli.main(argv)`).

The commands it lists, and errors as one line on stderr with an exit code. What needs a real process
(signals, kill -9, torchrun, the demo end to end) is tested where the behaviour lives: test_train.py,
test_reliability.py, test_package.py.
"""

import pytest

from equimod_edu import cli, data


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "gallery", "train", "evaluate", "compare", "label-efficiency"):
        assert command in out


def test_cli_reports_a_missing_dataset_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "empty")  # what EQUIMOD_DATA sets when the process starts
    code = cli.main(["train", "--dataset", "cifar10", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cifar-10-batches-py" in err and "Traceback" not in err


def test_cli_rejects_a_bad_value_naming_the_field(tmp_path, capsys):
    code = cli.main(["train", "--lr", "-2", "--out", str(tmp_path / "run")])
    assert code == 2 and "TrainConfig.lr" in capsys.readouterr().err
