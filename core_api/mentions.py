"""@mentions in user-written text (chat messages, forum posts): one parser for every area.

``@name`` mentions the users whose display name, with its whitespace removed, equals ``name`` ignoring
case; ``@[Display Name]`` does the same for names written with spaces. So "Ada Lovelace" is mentioned by
``@AdaLovelace``, ``@adalovelace`` or ``@[Ada Lovelace]``. The ``@`` must not follow a letter, digit or ``_``
(an e-mail address is not a mention); trailing ``.`` and ``-`` are not part of the name. Display names are
not unique: every user whose name matches (among those the area may tell) is mentioned. At most
:data:`MAX_MENTIONS` distinct names per text count. Who a mention may reach is the area's rule (the room's
members, the board's readers); :data:`MENTION_KEY_SQL` is the same key in SQL.
"""

from __future__ import annotations

import re

MAX_MENTIONS = 20
MAX_MENTION_LEN = 64
MENTION_KEY_SQL = "lower(regexp_replace({column}, '\\s', '', 'g'))"
"""The SQL twin of :func:`mention_key`; format ``column`` with the display-name column."""

_MENTION = re.compile(r"(?<![\w@])@(?:\[([^\]\n]{1,64})\]|([\w.\-]{1,64}))")


def mention_key(name: str) -> str:
    """What a display name is matched by: whitespace removed, lower case (the SQL uses the same rule)."""
    return "".join(name.split()).lower()


def parse_mentions(body: str) -> list[str]:
    """The distinct mention keys in a text, in order of first appearance, at most :data:`MAX_MENTIONS`."""
    keys: list[str] = []
    for match in _MENTION.finditer(body):
        bracketed, bare = match.group(1), match.group(2)
        name = bracketed if bracketed is not None else bare.rstrip(".-")
        key = mention_key(name)
        if key and key not in keys:
            keys.append(key)
            if len(keys) == MAX_MENTIONS:
                break
    return keys


def excerpt(body: str, length: int = 140) -> str:
    """The start of a text for a notification or a list, with an ellipsis when cut."""
    return body if len(body) <= length else body[: length - 1] + "…"
