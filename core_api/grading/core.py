"""Quizzes without I/O: the stored form of questions, limits, an attempt's order, grading, statistics and the
gradebook's CSV.

A stored question is a dict: ``id``, ``kind``, ``prompt``, ``points``, ``options`` (choice: ``[{id, text}]``),
``language`` and ``starter`` (code), and ``key``, the answer key, which only :func:`question_with_key`
(staff) ever passes on. :func:`question_view` builds what a learner sees field by field, so a key cannot
reach them by accident.
"""

from __future__ import annotations

import csv
import io
import math
import random
import secrets
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core_api.errors import invalid
from core_api.grading.schemas import (
    ChoiceQuestionIn,
    CodeQuestionIn,
    GradebookOut,
    NumericQuestionIn,
    OptionStat,
    OptionView,
    QuestionIn,
    QuestionKeyOut,
    QuestionResultOut,
    QuestionStatOut,
    QuestionView,
    QuizIn,
    ShortQuestionIn,
    TrueFalseQuestionIn,
)
from core_api.settings import Settings

Question = dict[str, Any]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell starting with one of these as a formula (CSV injection): such cells get a
leading ``'``. Tab and carriage return are on OWASP's list too."""


# --- writing a quiz --------------------------------------------------------------------------------


def check_limits(body: QuizIn, settings: Settings) -> None:
    """``invalid_input`` naming the first question or field over a ``STUDYHALL_QUIZ_*`` limit."""
    if len(body.questions) > settings.quiz_max_questions:
        raise invalid(f"a quiz may have at most {settings.quiz_max_questions} questions", field="questions")
    if body.attempts_allowed > settings.quiz_max_attempts_allowed:
        raise invalid(f"attempts_allowed may be at most {settings.quiz_max_attempts_allowed}", field="attempts_allowed")
    if body.opens_at and body.closes_at and body.closes_at <= body.opens_at:
        raise invalid("closes_at must be after opens_at", field="closes_at")
    text_max = settings.quiz_max_text_chars
    for i, q in enumerate(body.questions):
        where = f"questions.{i}"
        texts: list[tuple[str, str]] = [(f"{where}.prompt", q.prompt)]
        if isinstance(q, ChoiceQuestionIn):
            if len(q.options) > settings.quiz_max_options:
                raise invalid(f"{where}: at most {settings.quiz_max_options} options", field=f"{where}.options")
            texts += [(f"{where}.options.{j}.text", o.text) for j, o in enumerate(q.options)]
            right = sum(o.correct for o in q.options)
            if q.kind == "single" and right != 1:
                raise invalid(f"{where}: a single-choice question needs exactly one correct option", field=where)
            if q.kind == "multiple" and right == 0:
                raise invalid(f"{where}: mark at least one option correct", field=where)
        elif isinstance(q, ShortQuestionIn):
            if len(q.accepted) > settings.quiz_max_accepted:
                raise invalid(f"{where}: at most {settings.quiz_max_accepted} accepted answers", field=where)
            texts += [(f"{where}.accepted.{j}", a) for j, a in enumerate(q.accepted)]
            if any(not normalise(a) for a in q.accepted):
                raise invalid(f"{where}: an accepted answer is blank once normalised", field=f"{where}.accepted")
        elif isinstance(q, CodeQuestionIn):
            if len(q.tests) > settings.quiz_max_code_tests:
                raise invalid(f"{where}: at most {settings.quiz_max_code_tests} test cases", field=f"{where}.tests")
            texts.append((f"{where}.starter", q.starter))
        for field, text in texts:
            if len(text) > text_max:
                raise invalid(f"{field} is longer than {text_max} characters", field=field)


def _short_id() -> str:
    return secrets.token_hex(6)


def stored_question(q: QuestionIn) -> Question:
    """The stored form of a question: server-made ids (an option's says nothing of its place or worth)."""
    out: Question = {"id": str(uuid.uuid4()), "kind": q.kind, "prompt": q.prompt, "points": q.points}
    if isinstance(q, ChoiceQuestionIn):
        options = [{"id": _short_id(), "text": o.text} for o in q.options]
        out["options"] = options
        out["key"] = {"correct": [opt["id"] for opt, o in zip(options, q.options, strict=True) if o.correct]}
    elif isinstance(q, TrueFalseQuestionIn):
        out["key"] = {"value": q.answer}
    elif isinstance(q, ShortQuestionIn):
        out["key"] = {"accepted": list(q.accepted)}
    elif isinstance(q, NumericQuestionIn):
        out["key"] = {"value": q.answer, "tolerance": q.tolerance}
    else:
        out["language"] = q.language
        out["starter"] = q.starter
        out["key"] = {"tests": [t.model_dump() for t in q.tests]}
    return out


def max_points(questions: Iterable[Question]) -> float:
    return float(sum(q["points"] for q in questions))


# --- views -------------------------------------------------------------------------------------------


def question_view(q: Question, option_order: Sequence[str] | None = None) -> QuestionView:
    """What a learner sees of a question (options in ``option_order`` if given); never its key."""
    options = None
    if q["kind"] in ("single", "multiple"):
        by_id = {o["id"]: o for o in q["options"]}
        order = option_order if option_order is not None else list(by_id)
        options = [OptionView(id=i, text=by_id[i]["text"]) for i in order]
    return QuestionView(
        id=q["id"],
        kind=q["kind"],
        prompt=q["prompt"],
        points=q["points"],
        options=options,
        language=q.get("language"),
        starter=q.get("starter"),
    )


def question_with_key(q: Question) -> QuestionKeyOut:
    return QuestionKeyOut(**question_view(q).model_dump(), key=q["key"])


def arrange(
    questions: Sequence[Question], seed: int, shuffle_questions: bool, shuffle_options: bool
) -> list[QuestionView]:
    """An attempt's questions in its own order: the same ``seed`` always gives the same order."""
    rng = random.Random(seed)
    order = list(questions)
    if shuffle_questions:
        rng.shuffle(order)
    views = []
    for q in order:
        option_order = None
        if shuffle_options and q["kind"] in ("single", "multiple"):
            option_order = [o["id"] for o in q["options"]]
            rng.shuffle(option_order)
        views.append(question_view(q, option_order))
    return views


def new_seed() -> int:
    return secrets.randbits(62)


# --- answers -------------------------------------------------------------------------------------


def check_answers(questions: Sequence[Question], answers: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``answers`` checked against the questions' kinds (``invalid_input`` naming the first bad one); a
    ``null`` answer stays, meaning "clear it"."""
    by_id = {q["id"]: q for q in questions}
    for qid, answer in answers.items():
        q = by_id.get(qid)
        if q is None:
            raise invalid(f"no question {qid!r} in this quiz", question_id=qid)
        if answer is None:
            continue
        kind = q["kind"]
        problem = _answer_problem(q, answer, settings)
        if problem is not None:
            raise invalid(f"answer to question {qid} ({kind}): {problem}", question_id=qid)
    return answers


def _answer_problem(q: Question, answer: Any, settings: Settings) -> str | None:
    kind = q["kind"]
    if kind == "single":
        if not isinstance(answer, str) or answer not in {o["id"] for o in q["options"]}:
            return "give one of the question's option ids"
    elif kind == "multiple":
        ids = {o["id"] for o in q["options"]}
        if not isinstance(answer, list) or not all(isinstance(a, str) and a in ids for a in answer):
            return "give a list of the question's option ids"
        if len(set(answer)) != len(answer):
            return "an option is listed twice"
    elif kind == "true_false":
        if not isinstance(answer, bool):
            return "give true or false"
    elif kind == "short":
        if not isinstance(answer, str):
            return "give a string"
        if len(answer) > settings.quiz_max_text_chars:
            return f"longer than {settings.quiz_max_text_chars} characters"
    elif kind == "numeric":
        if isinstance(answer, bool) or not isinstance(answer, int | float):
            return "give a number"
        # Compared before isfinite(): an integer too large for a float would make it raise.
        if abs(answer) > 1e15 or not math.isfinite(answer):
            return "give a finite number between -1e15 and 1e15"
    elif kind == "code":
        if not isinstance(answer, str):
            return "give the program's source as a string"
        if len(answer) > settings.quiz_max_code_chars:
            return f"longer than {settings.quiz_max_code_chars} characters"
    return None


def normalise(text: str) -> str:
    """How short answers are compared: NFKC, case-folded (and NFKC again, as folding can un-normalise),
    whitespace collapsed to single spaces and trimmed."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


# --- grading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeOutcome:
    """The judge's answer on a code question."""

    verdict: str
    passed: int
    total: int


def is_answered(q: Question, answer: Any) -> bool:
    if answer is None:
        return False
    if q["kind"] in ("short", "code"):
        return bool(answer.strip())
    if q["kind"] == "multiple":
        return len(answer) > 0
    return True


def grade(q: Question, answer: Any, code: CodeOutcome | None = None) -> QuestionResultOut:
    """One question's result for a (checked) answer; a code question needs the judge's ``code`` outcome."""
    points = float(q["points"])
    key = q["key"]
    answered = is_answered(q, answer)
    earned = 0.0
    extra: dict[str, Any] = {}
    if answered:
        kind = q["kind"]
        if kind == "single":
            earned = points if answer in key["correct"] else 0.0
        elif kind == "multiple":
            earned = points if set(answer) == set(key["correct"]) else 0.0
        elif kind == "true_false":
            earned = points if answer is key["value"] else 0.0
        elif kind == "short":
            earned = points if normalise(answer) in {normalise(a) for a in key["accepted"]} else 0.0
        elif kind == "numeric":
            slack = key["tolerance"] + 1e-9 * max(1.0, abs(key["value"]))  # binary fractions (0.1 + 0.2)
            earned = points if abs(float(answer) - key["value"]) <= slack else 0.0
        else:
            assert code is not None, "a code answer is graded with the judge's outcome"
            earned = points * code.passed / code.total if code.total else 0.0
            extra = {"verdict": code.verdict, "passed": code.passed, "total": code.total}
    return QuestionResultOut(
        question_id=q["id"], answered=answered, correct=answered and earned >= points, points=earned,
        max_points=points, **extra,
    )  # fmt: skip


# --- statistics --------------------------------------------------------------------------------------


def question_stats(
    questions: Sequence[Question], attempts: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]]
) -> list[QuestionStatOut]:
    """Per question over submitted attempts, given as (answers, results) pairs."""
    graded = [(answers, {r["question_id"]: r for r in results}) for answers, results in attempts]
    out = []
    for q in questions:
        qid = q["id"]
        answered = correct = 0
        points = 0.0
        chosen: dict[str, int] = {}
        for answers, by_question in graded:
            result = by_question.get(qid)
            if result is None or not result["answered"]:
                continue
            answered += 1
            correct += bool(result["correct"])
            points += result["points"]
            answer = answers.get(qid)
            picks = answer if isinstance(answer, list) else [answer]
            for pick in picks:
                key = str(pick).lower() if isinstance(pick, bool) else str(pick)
                chosen[key] = chosen.get(key, 0) + 1
        options = None
        if q["kind"] in ("single", "multiple"):
            options = [OptionStat(id=o["id"], text=o["text"], chosen=chosen.get(o["id"], 0)) for o in q["options"]]
        elif q["kind"] == "true_false":
            options = [OptionStat(id=v, text=v.title(), chosen=chosen.get(v, 0)) for v in ("true", "false")]
        out.append(
            QuestionStatOut(
                question_id=qid,
                kind=q["kind"],
                prompt=q["prompt"],
                points=q["points"],
                answered=answered,
                correct=correct,
                correct_rate=correct / answered if answered else None,
                mean_points=points / answered if answered else None,
                options=options,
            )
        )
    return out


# --- the gradebook as CSV ------------------------------------------------------------------------------


def safe_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def number_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


def gradebook_csv(book: GradebookOut) -> bytes:
    """One row per learner: name, email, a column per assignment and quiz (its title and worth), the total."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    header = ["learner", "email"]
    header += [f"{c.kind}: {c.title} ({c.max_points:g})" for c in book.columns]
    header.append(f"total ({book.max_total:g})")
    writer.writerow([safe_cell(h) for h in header])
    for row in book.rows:
        cells = [safe_cell(row.display_name), safe_cell(row.email)]
        cells += [number_cell(s) for s in row.scores]
        cells.append(number_cell(row.total))
        writer.writerow(cells)
    return buf.getvalue().encode("utf-8")
