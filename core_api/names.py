"""Display names as stored: the one check both registration (``POST /auth/register``) and a change of name
(``PATCH /me``, core_api/profile.py) apply, so no account carries an invisible or control character, a
bidirectional override, or a name that is only marks or punctuation.

A change of name is also refused when it is confusable with another user's current name (core_api/profile.py);
registration is not, on purpose: two people may share a name ("Sam Lee"), and refusing a newcomer their own
name would be worse than the risk, which is impersonation by *changing* to a name someone present is known by.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 80
MAX_MARKS = 2
# Characters that draw nothing (or only space) but are not in the categories refused below.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0")
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def clean_display_name(value: str) -> str:
    """The display name as stored: NFKC, trimmed, single spaces; ``ValueError`` saying what is wrong."""
    name = " ".join(unicodedata.normalize("NFKC", value).split())
    if not name:
        raise ValueError("must not be blank")
    if len(name) > MAX_LENGTH:
        raise ValueError(f"must be at most {MAX_LENGTH} characters")
    marks = 0
    for ch in name:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES or ch in _INVISIBLE:
            raise ValueError(f"must not contain control or invisible characters (U+{ord(ch):04X})")
        marks = marks + 1 if category.startswith("M") else 0
        if marks > MAX_MARKS:
            raise ValueError(f"at most {MAX_MARKS} combining marks on one character")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in name):
        raise ValueError("must contain a letter or a digit")
    return name
