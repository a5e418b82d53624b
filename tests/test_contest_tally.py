"""Incremental standings (leaderboards/tally.py) equal the full recompute (leaderboards/core.py) after any
sequence of attempts arriving, verdicts landing or changing (rejudge) and attempts leaving (disqualified)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from leaderboards.core import Attempt, Rules, View, community_standings, standings
from leaderboards.tally import Tally

START = datetime(2026, 1, 3, 10, 0, tzinfo=UTC)
USERS = ["u1", "u2", "u3", "u4"]
COMMUNITIES = ["c1", "c2", "c3"]  # c3 does not take part: its rows count for no community
PROBLEMS = ["A", "B", "C"]
VERDICTS = [None, "accepted", "accepted", "wrong_answer", "compile_error", "internal_error", "time_limit_exceeded"]

new_attempt = st.tuples(
    st.sampled_from(USERS), st.sampled_from(COMMUNITIES), st.sampled_from(PROBLEMS),
    st.integers(0, 40), st.sampled_from(VERDICTS),
)  # fmt: skip
change = st.one_of(
    st.tuples(st.just("new"), new_attempt),
    st.tuples(st.just("verdict"), st.integers(0, 10**6), st.sampled_from(VERDICTS)),
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("rename"), st.sampled_from(USERS), st.sampled_from(["Ann", "Bob", "Zed"])),
)
rules_st = st.builds(
    Rules,
    scoring=st.sampled_from(["icpc", "points"]),
    penalty_minutes=st.sampled_from([0, 20]),
    points=st.just({"A": 3, "B": 5, "C": 1}),
    freeze_at=st.sampled_from([None, START + timedelta(minutes=20)]),
    finalised=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    rules=rules_st,
    view=st.sampled_from(["public", "jury"]),
    batches=st.lists(st.lists(change, max_size=8), min_size=1, max_size=8),
)
def test_incremental_standings_equal_the_full_recompute(
    rules: Rules, view: View, batches: list[list[tuple[Any, ...]]]
) -> None:
    communities = {"c1": "Larks", "c2": "Owls"}
    names = {u: u.upper() for u in USERS}
    delivered: dict[str, str] = {}  # the names as the deltas carried them
    attempts: dict[str, Attempt] = {}
    tally = Tally(rules, view, communities)
    serial = 0
    for batch in batches:
        changed: dict[str, Attempt] = {}
        removed: set[str] = set()
        for op in batch:
            ids = sorted(attempts)
            if op[0] == "new":
                user, community, problem, minute, verdict = op[1]
                serial += 1
                # Equal times happen (ties broken by id): minutes repeat and the clock has a coarse grain.
                at = START + timedelta(minutes=minute, seconds=serial % 2)
                a = Attempt(f"s{serial:04}", problem, user, community, at, minute, verdict)
                attempts[a.id] = changed[a.id] = a
                removed.discard(a.id)
            elif op[0] == "verdict" and ids:
                a = replace(attempts[ids[op[1] % len(ids)]], verdict=op[2])
                attempts[a.id] = changed[a.id] = a
            elif op[0] == "drop" and ids:
                gone = ids[op[1] % len(ids)]
                del attempts[gone]
                changed.pop(gone, None)
                removed.add(gone)
            elif op[0] == "rename":
                names[op[1]] = op[2]
        # A delta carries the names of the authors of the attempts in it (as the SQL join does); a rename
        # without an attempt shows at the next full recompute, so only those go in here.
        authors = {a.user_id for a in changed.values()}
        delivered.update({u: names[u] for u in authors})
        tally.apply(changed.values(), removed, {u: names[u] for u in authors})
        full = standings(rules, view, list(attempts.values()), delivered)
        assert tally.ranked() == full
        assert tally.ranked_groups() == community_standings(full, communities)
        assert tally.ranked(2) == full[:2]
        assert tally.people_total == len(full)
    rebuilt = Tally.build(rules, view, communities, list(attempts.values()), names)
    assert rebuilt.ranked() == standings(rules, view, list(attempts.values()), names)
