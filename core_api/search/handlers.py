"""REST of search: parse, call the service (which checks who may search what), answer."""

from __future__ import annotations

from core_api.http import Api, Call
from core_api.search.schemas import SearchOut, SearchQuery
from core_api.search.service import SEARCH

api = Api()
TAG = "search"


@api.route(
    "GET",
    "/search",
    summary="Search courses, lectures, chat messages, forum posts and users (signed-in users; users: admins)",
    description="Postgres full-text search, best matches first, each group with its own `next_cursor`. Every word "
    "must match; words of `STUDYHALL_SEARCH_MIN_PREFIX_CHARS` characters or more also match the start of longer "
    "words (`algo` finds *algorithms*), and English words match their other forms (*study*, *studies*). Each hit "
    "carries a `snippet`: the text around the matches as segments, the matched ones marked `match: true`.\n\n"
    "Only what the caller may see: published courses and their lectures (drafts to their owner and admins), "
    "messages of rooms the caller is a member of and not banned from (never deleted ones), forum posts of "
    "boards the caller may read as the forums decide (public communities: everyone; private ones: members; course "
    "boards: enrolled learners and the owner; admins: all; never deleted posts), users to platform admins only "
    "(403 for `kinds=users` otherwise).\n\n"
    "A forum post hit names its topic (`topic_id`, `topic_title`, link: `/topics/{topic_id}`); a topic's opening "
    "post is also found by the topic's title.\n\n"
    "Limits: `STUDYHALL_SEARCH_MAX_QUERY_CHARS`, `..._MAX_WORDS`, `..._MAX_LIMIT` (400 past them, and for a "
    "query without letters or digits, an unknown kind or a foreign cursor); `..._RATE_COUNT` searches per "
    "`..._RATE_WINDOW_S` per user (429 with `Retry-After`); a search running longer than `..._TIMEOUT_MS` is "
    "stopped (503).",
    tag=TAG,
    query=SearchQuery,
    response=SearchOut,
    errors=[400, 403, 429, 503],
)
async def get_search(call: Call) -> SearchOut:
    return await call.request.app[SEARCH].search(call.me, call.query)
