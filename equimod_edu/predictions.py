"""Predict, then measure: compare a learner's guess with a measurement, and keep the first answer.

``check_prediction`` compares a learner's guess with a measurement, and the first answer to each
question is recorded so that the prediction survives an edit.

The record is ``runs/predictions.json`` of the working folder (``PREDICTIONS_FILE``): one entry per
question, {"answer", "recorded" (local time), "right" (at the time)}, shown on later runs. The loss
exercises record their predicted numbers there too (``first_answer``).
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from .files import atomic_write, os_error_reason
from .judge import say, verdict

__all__ = ["PREDICTIONS_FILE", "first_answer", "check_prediction"]

PREDICTIONS_FILE = "runs/predictions.json"   # check_prediction's record of first answers, in the working folder


def _answer_text(answer) -> str:
    return repr(answer) if isinstance(answer, str) else repr(list(answer))


def _is_record(entry) -> bool:
    """One question's record: {"answer": a name or a list of names, "recorded": a time, ...}."""
    answer = entry.get("answer") if isinstance(entry, dict) else None
    return isinstance(entry, dict) and isinstance(entry.get("recorded"), str) and (
        isinstance(answer, str) or isinstance(answer, list) and all(isinstance(a, str) for a in answer))


def _write_records(path: Path, records: dict) -> Optional[str]:
    """Write the records atomically; None, or a one-line reason why they could not be written."""
    text = json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as error:
        return f"(Not recorded: {path} cannot be written: {os_error_reason(error, path)}.)"
    return None


def first_answer(record, key: str, answer, ranking: Sequence[str], right: Optional[bool], start_over: bool) -> str:
    """Record `answer` as the first answer to question `key` in the JSON file `record`, unless one is there.

    The file maps each question to {"answer", "recorded" (local time), "right" (at the time)}. answer:
    a key, a sorted list of keys, or None (no prediction yet: never recorded). Returns what to print
    ("" for nothing). Never raises: a file that cannot be read, parsed or written is reported in one
    line, and a damaged file is left as it is.
    """
    path = Path(record)
    again = f"to start over, delete {path} (every question) or pass start_over=True (this one)"
    try:
        records = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        damaged = None if isinstance(records, dict) and all(map(_is_record, records.values())) \
            else "not a table of answers"
    except OSError as error:
        return f"(Not recorded: {path} cannot be read: {os_error_reason(error, path)}.)"
    except ValueError as error:   # not JSON, or not UTF-8
        damaged = f"not JSON: {str(error).splitlines()[0]}"
    if damaged:
        return (f"(Not recorded: {path} is damaged ({damaged}); it is left as it is: repair it, "
                f"or delete it to start over.)")
    first = records.get(key)
    if first is not None and not (start_over and answer is not None):
        if start_over:   # start over with no prediction yet: forget this question's answer
            del records[key]
            return _write_records(path, records) or f"Your recorded answer to this question is forgotten ({path})."
        first_keys = [first["answer"]] if isinstance(first["answer"], str) else first["answer"]
        known = [k for k in first_keys if k in ranking]
        where = f"; number {', '.join(str(ranking.index(k) + 1) for k in known)} in this measurement" if known else ""
        now = ("" if answer is None else " (this one)" if first["answer"] == answer
               else f" (not this one{where})")
        return f"Your first answer, recorded {first['recorded']}: {_answer_text(first['answer'])}{now}. It is the " \
               f"prediction that counts; {again}."
    if answer is None:
        return ""
    recorded = datetime.now().strftime("%Y-%m-%d %H:%M")
    records[key] = {"answer": answer, "recorded": recorded, "right": right}
    problem = _write_records(path, records)
    if problem:
        return problem
    hint = ("; set start_over back to False to keep it" if start_over
            else "; to start over, delete that file or pass start_over=True")
    return f"Recorded as your first answer ({path}, {recorded}): later runs show it{hint}."


def check_prediction(prediction: Union[None, str, Iterable[str]], measured: dict[str, float], question: str = "",
                     higher_means: str = "forgotten", lowest: bool = False, strict: bool = False,
                     record: Union[None, str, os.PathLike] = PREDICTIONS_FILE,
                     start_over: bool = False) -> Optional[bool]:
    """Compare a learner's guess with a measurement: whether the guessed keys top the ranking.

    ``prediction`` is a key of ``measured`` (e.g. "hue"), a collection of k keys (right when they are
    the k top keys, in any order), or None (not answered yet). ``measured`` maps a name to a number
    where larger means more ``higher_means``; ``lowest=True`` ranks the smallest first (e.g. "which augmentations
    does the module ignore?"). Prints the ranking; returns True / False (for this answer), or None
    when unanswered. The answer is what the model at hand measures, not a fixed string.

    The first answer to each question (keyed by `question`) is recorded in the JSON file `record`,
    ``runs/predictions.json`` of the working folder (created with its folder), and shown on later
    runs, so the prediction is kept when the learner edits it after seeing the measurement. None is
    never recorded; an unknown name neither. ``start_over=True`` replaces this question's record by
    the current answer (with None: forgets it); deleting the file starts every question over;
    ``record=None`` records nothing. A damaged file is reported and left as it is.
    """
    sign = 1.0 if lowest else -1.0
    ranking = sorted(measured, key=lambda k: sign * measured[k] if math.isfinite(measured[k]) else math.inf)
    table = "\n".join(f"  {i + 1}. {k:<12} {measured[k]:+.3f}" for i, k in enumerate(ranking))
    title = f"{question}\n" if question else ""
    asked = question or f"Which of {', '.join(sorted(measured))}{' (lowest first)' if lowest else ''}?"
    if prediction is None:
        line = first_answer(record, asked, None, ranking, None, start_over) if record is not None else ""
        say(f"{title}No prediction yet: set it to one of {sorted(measured)} and run the cell again."
            + (f"\n{line}" if line else ""))
        return None
    keys = [prediction] if isinstance(prediction, str) else list(prediction)
    keys = [str(key).strip().lower() for key in keys]
    unknown = [key for key in keys if key not in measured]
    if unknown or not keys:
        return verdict(False, strict, f"{title}{unknown or prediction!r} is not one of the measured names "
                                      f"{sorted(measured)}.")
    top = ranking[:len(keys)]
    ok = set(keys) == set(top)
    first = "least" if lowest else "most"
    shown = repr(top[0]) if len(top) == 1 else repr(top)
    opening = ("Right: " if ok else f"Not this time: the measurement puts {shown} first, yours "
               f"{'is' if len(keys) == 1 else 'are'} number {', '.join(str(ranking.index(k) + 1) for k in keys)}. ")
    answer = keys[0] if isinstance(prediction, str) else sorted(keys)
    line = first_answer(record, asked, answer, ranking, ok, start_over) if record is not None else ""
    return verdict(ok, strict, f"{title}{opening}The measurement, {first} {higher_means} first:\n{table}"
                               + (f"\n{line}" if line else ""))
