"""The pure chat rules (rooms.chat_core): bodies, mentions, rate windows, typing throttle, rank."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core_api.errors import AppError
from rooms import chat_core as rules

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("hello", "hello"),
        ("  padded \n", "padded"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("tab\tkept", "tab\tkept"),
        ("nul\x00 bell\x07 esc\x1b del\x7f c1\x85 gone", "nul bell esc del c1 gone"),
        ("emoji 👩‍💻 and zwj stay", "emoji 👩‍💻 and zwj stay"),
    ],
)
def test_bodies_are_plain_text_without_control_characters(raw: str, clean: str) -> None:
    assert rules.clean_body(raw, 4000) == clean


@pytest.mark.parametrize("raw", ["", "   ", "\x00\x01", "\n\t\r"])
def test_empty_bodies_are_refused(raw: str) -> None:
    with pytest.raises(AppError) as exc:
        rules.clean_body(raw, 4000)
    assert exc.value.code == "invalid_input"


def test_the_length_limit_applies_after_cleaning() -> None:
    assert rules.clean_body("x" * 10 + "\x00" * 5, 10) == "x" * 10
    with pytest.raises(AppError):
        rules.clean_body("x" * 11, 10)


def test_tokens_refuse_whitespace_and_control_characters() -> None:
    assert rules.check_token("abc-123", "client_msg_id") == "abc-123"
    for bad in ("a b", "a\x00", "\t", "a\u2028"):
        with pytest.raises(AppError):
            rules.check_token(bad, "client_msg_id")


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        ("hi @Ada", ["ada"]),
        ("@AdaLovelace, @[Ada Lovelace] and @adalovelace", ["adalovelace"]),
        ("@[  Bob   Smith ] @bob.", ["bobsmith", "bob"]),
        ("mail me: ada@example.com", []),
        ("@@ada", []),
        ("(@ada) @ada-", ["ada"]),
        ("@ @[] @[x\ny]", []),
        ("@Zoë", ["zoë"]),
    ],
)
def test_mentions(body: str, keys: list[str]) -> None:
    assert rules.parse_mentions(body) == keys


def test_mentions_are_capped() -> None:
    body = " ".join(f"@user{i}" for i in range(50))
    assert rules.parse_mentions(body) == [f"user{i}" for i in range(rules.MAX_MENTIONS)]


def test_mention_keys_match_display_names_without_spaces_ignoring_case() -> None:
    assert rules.mention_key(" Ada  Lovelace ") == rules.parse_mentions("@AdaLovelace")[0]


def test_rate_window_counts_the_messages_inside_it() -> None:
    recent = [at(0), at(5), at(9)]
    assert rules.rate_retry_after(recent, at(9.5), 3, 10) == 1  # at(0) leaves the window at 10 s
    assert rules.rate_retry_after(recent, at(10), 3, 10) is None
    assert rules.rate_retry_after(recent, at(9.5), 4, 10) is None
    assert rules.rate_retry_after([at(9), at(5), at(0), at(-30)], at(9.5), 3, 10) == 1
    assert rules.rate_retry_after([at(0), at(1), at(2)], at(2), 2, 10) == 9  # the 2nd newest must leave


def test_slow_mode() -> None:
    assert rules.slow_mode_retry_after(None, at(0), 30) is None
    assert rules.slow_mode_retry_after(at(0), at(1), 0) is None
    assert rules.slow_mode_retry_after(at(0), at(0.5), 30) == 30
    assert rules.slow_mode_retry_after(at(0), at(29.2), 30) == 1
    assert rules.slow_mode_retry_after(at(0), at(30), 30) is None


def test_mute_countdown() -> None:
    assert rules.muted_for(None, at(0)) is None
    assert rules.muted_for(at(10), at(10)) is None
    assert rules.muted_for(at(10), at(0.5)) == 10


def test_rate_limited_errors_tell_when_to_retry() -> None:
    error = rules.rate_limited("slow down", 7)
    assert error.code == "rate_limited"
    assert "retry_after=7" in error.message
    assert error.details == {"retry_after_s": 7}


def test_typing_is_forwarded_on_change_and_refreshed_at_most_every_few_seconds() -> None:
    assert rules.forward_typing(None, True, 0) is True
    assert rules.forward_typing(None, False, 0) is False  # nobody was told they were typing
    mark = rules.TypingMark(True, 100.0)
    assert rules.forward_typing(mark, True, 100.0 + rules.TYPING_REFRESH_S / 2) is False
    assert rules.forward_typing(mark, True, 100.0 + rules.TYPING_REFRESH_S) is True
    assert rules.forward_typing(mark, False, 100.1) is True
    assert rules.forward_typing(rules.TypingMark(False, 100.0), False, 200.0) is False


@pytest.mark.parametrize(
    ("actor", "actor_admin", "target", "target_admin", "allowed"),
    [
        (2, False, 1, False, True),  # moderator → member
        (2, False, 2, False, False),  # moderator → moderator
        (2, False, 3, False, False),  # moderator → host
        (3, False, 2, False, True),  # host → moderator
        (3, False, 3, False, False),  # host → host
        (3, False, 1, True, False),  # nobody but an admin acts on an admin
        (1, True, 3, False, True),  # admins act on anyone
        (1, True, 1, True, True),
    ],
)
def test_who_may_moderate_whom(actor: int, actor_admin: bool, target: int, target_admin: bool, allowed: bool) -> None:
    assert rules.may_moderate(actor, actor_admin, target, target_admin) is allowed


def test_a_deleted_message_shows_no_body_or_reactions() -> None:
    row = {
        "id": "m",
        "room_id": "r",
        "seq": 3,
        "author_id": "u",
        "display_name": "Ada",
        "body": "secret",
        "created_at": at(0),
        "edited_at": None,
        "deleted_at": at(1),
        "rev": 2,
    }
    view = rules.message_view(row, {"👍": 2})
    assert (view["body"], view["deleted"], view["reactions"], view["seq"]) == ("", True, {}, 3)
    live = rules.message_view({**row, "deleted_at": None}, {"👍": 2})
    assert (live["body"], live["deleted"], live["reactions"]) == ("secret", False, {"👍": 2})
