"""The pure part of quizzes (core_api/grading/core.py): normalised matching, tolerance, all-or-nothing
multiple choice, stable shuffling, learner views without keys, CSV cells safe from formula injection."""

from __future__ import annotations

from typing import Any

import pytest

from core_api.grading import core
from core_api.grading.schemas import QuizIn

QUIZ: dict[str, Any] = {
    "title": "Q",
    "questions": [
        {"kind": "single", "prompt": "a", "options": [{"text": "x", "correct": True}, {"text": "y"}, {"text": "z"}]},
        {"kind": "multiple", "prompt": "b", "points": 2.0,
         "options": [{"text": "x", "correct": True}, {"text": "y"}, {"text": "z", "correct": True}]},
        {"kind": "true_false", "prompt": "c", "answer": False},
        {"kind": "short", "prompt": "d", "accepted": ["Straße  von Gibraltar"]},
        {"kind": "numeric", "prompt": "e", "answer": 0.3, "tolerance": 0.0},
    ],
}  # fmt: skip


def stored() -> list[core.Question]:
    return [core.stored_question(q) for q in QuizIn.model_validate(QUIZ).questions]


@pytest.mark.parametrize(
    ("typed", "right"),
    [
        ("strasse von gibraltar", True),  # ß case-folds to ss
        ("  STRASSE\tvon\n gibraltar ", True),
        ("Ｓｔｒａｓｓｅ von Gibraltar", True),  # full-width letters (NFKC)
        ("Strase von Gibraltar", False),
        ("", False),
    ],
)
def test_short_answers_match_after_normalising(typed: str, right: bool) -> None:
    short = stored()[3]
    assert core.grade(short, typed).correct is right


def test_numeric_tolerance_absorbs_binary_fractions_only() -> None:
    numeric = stored()[4]
    assert core.grade(numeric, 0.1 + 0.2).correct  # 0.30000000000000004
    assert not core.grade(numeric, 0.3001).correct


def test_multiple_choice_scores_only_the_exact_set() -> None:
    multiple = stored()[1]
    right = multiple["key"]["correct"]
    ids = [o["id"] for o in multiple["options"]]
    assert core.grade(multiple, list(reversed(right))).points == 2.0
    assert core.grade(multiple, right[:1]).points == 0.0
    assert core.grade(multiple, ids).points == 0.0
    assert not core.grade(multiple, []).answered


def test_true_false_compares_booleans() -> None:
    tf = stored()[2]
    assert core.grade(tf, False).correct and not core.grade(tf, True).correct


def test_shuffling_depends_only_on_the_seed_and_views_carry_no_key() -> None:
    questions = stored()
    a = core.arrange(questions, 1234, True, True)
    assert a == core.arrange(questions, 1234, True, True)
    assert {tuple(q.id for q in core.arrange(questions, seed, True, True)) for seed in range(50)} != {
        tuple(q["id"] for q in questions)
    }
    for view in a:
        dumped = view.model_dump()
        assert "key" not in dumped
        for option in dumped["options"] or []:
            assert set(option) == {"id", "text"}


@pytest.mark.parametrize(
    ("text", "cell"),
    [("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("Ada", "Ada")],
)
def test_csv_text_cells_never_start_a_formula(text: str, cell: str) -> None:
    assert core.safe_cell(text) == cell
