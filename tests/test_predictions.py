"""Predict, then measure: check_prediction ranks the measurement.

The first answer to each question is recorded in runs/predictions.json of the working folder, shown on later runs,
and never lost to a damaged file.
"""

import json
from pathlib import Path

import pytest

from equimod_edu.predictions import check_prediction

pytestmark = pytest.mark.usefixtures("scratch_working_folder")   # never the repository's runs/


def test_check_prediction_compares_with_the_measurement(capsys):
    measured = {"crop": 0.1, "hue": 0.4, "flip": -0.2}
    assert check_prediction(None, measured) is None
    assert "No prediction yet" in capsys.readouterr().out
    assert check_prediction("hue", measured) is True
    assert check_prediction(" Hue ", measured) is True
    out = capsys.readouterr().out
    assert out.index("hue") < out.index("crop") < out.index("flip")  # ranked, largest first
    assert check_prediction("crop", measured) is False
    assert "'hue' first" in capsys.readouterr().out
    assert check_prediction("colour", measured) is False
    assert "not one of the measured names" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        check_prediction("flip", measured, strict=True)
    assert check_prediction({"flip", "crop"}, measured, lowest=True) is True    # the two smallest, any order
    assert "least forgotten first" in capsys.readouterr().out
    assert check_prediction(["flip", "hue"], measured, lowest=True) is False
    assert "number 1, 3" in capsys.readouterr().out


MEASURED = {"crop": 0.1, "hue": 0.4, "flip": -0.2}
RECORDS = Path("runs") / "predictions.json"   # in the working folder (a scratch folder here)


def test_the_first_answer_is_recorded_and_shown_on_later_runs(capsys):
    assert check_prediction(None, MEASURED, question="Most?") is None
    assert not RECORDS.exists()                                     # no prediction yet: nothing recorded
    assert check_prediction("crop", MEASURED, question="Most?") is False
    assert "Recorded as your first answer" in capsys.readouterr().out
    first = json.loads(RECORDS.read_text())["Most?"]
    assert first["answer"] == "crop" and first["right"] is False and first["recorded"][:2] == "20"

    assert check_prediction("hue", MEASURED, question="Most?") is True       # edited after seeing the ranking
    out = capsys.readouterr().out
    assert f"Your first answer, recorded {first['recorded']}: 'crop' (not this one; number 2" in out
    assert "delete runs/predictions.json" in out and "start_over=True" in out
    assert json.loads(RECORDS.read_text())["Most?"] == first                # the first one stays
    assert check_prediction(None, MEASURED, question="Most?") is None
    assert "Your first answer" in capsys.readouterr().out and json.loads(RECORDS.read_text())["Most?"] == first

    assert check_prediction({"flip", "crop"}, MEASURED, question="Least two?", lowest=True) is True
    assert json.loads(RECORDS.read_text())["Least two?"]["answer"] == ["crop", "flip"]
    assert check_prediction(["crop", "flip"], MEASURED, question="Least two?", lowest=True) is True
    assert "(this one)" in capsys.readouterr().out


def test_start_over_and_no_record(capsys):
    check_prediction("crop", MEASURED, question="Most?")
    assert check_prediction("hue", MEASURED, question="Most?", start_over=True) is True
    assert json.loads(RECORDS.read_text())["Most?"]["answer"] == "hue"
    check_prediction(None, MEASURED, question="Most?", start_over=True)
    assert "forgotten" in capsys.readouterr().out and "Most?" not in json.loads(RECORDS.read_text())
    RECORDS.unlink()
    assert check_prediction("hue", MEASURED, question="Most?", record=None) is True
    assert not RECORDS.exists() and "first answer" not in capsys.readouterr().out
    elsewhere = Path("elsewhere") / "answers.json"
    check_prediction("flip", MEASURED, question="Most?", record=elsewhere)
    assert json.loads(elsewhere.read_text())["Most?"]["answer"] == "flip" and not RECORDS.exists()


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"Most?": "crop"}',
                                    '{"Most?": {"answer": 3, "recorded": "x"}}', b"\xff\xfe"])
def test_a_damaged_record_is_reported_in_one_line_and_left_as_it_is(damage, capsys):
    RECORDS.parent.mkdir()
    RECORDS.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
    before = RECORDS.read_bytes()
    assert check_prediction("hue", MEASURED, question="Most?") is True       # the check itself still works
    lines = [line for line in capsys.readouterr().out.splitlines() if "damaged" in line]
    assert len(lines) == 1 and "runs/predictions.json" in lines[0] and "delete it" in lines[0]
    assert RECORDS.read_bytes() == before
