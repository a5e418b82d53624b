"""The contest screens in a real browser, one browser context per user, against a real server, Postgres and the
real sandbox: a submission in one tab moves the standings in another without a reload, the verdict reaches the
submitter's "My submissions", a frozen board says so, and a finalised contest's prize shows in the wallet.

Selected by role and accessible name (API.md, "The web app"): the table "Standings" at `/contests/{id}`, the
button "Submit" at `/contests/{id}/problems/{pid}`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from leaderboards.handlers import CONTESTS
from tests.browser.conftest import OpenPage, SignedInPage, User, WebServer, fits_phone, log_in, rest
from tests.contest_helpers import PROBLEMS, Clock

SUM_OK = "print(sum(map(int, input().split())))"
DOUBLE_OK = "print(int(input()) * 2)"
RANK_1 = re.compile(r"^\s*1\b")  # the rank cell, maybe followed by "▲ (moved up)"


def ok(server: WebServer, method: str, path: str, user: User, body: Any = None) -> Any:
    status, answer = rest(server.url, method, path, body, user.token())
    assert status < 300, (method, path, status, answer)
    return answer


def community(server: WebServer, owner: User, name: str, members: list[User]) -> dict[str, Any]:
    made = ok(server, "POST", "/communities", owner, {"name": f"{name} {uuid.uuid4().hex[:4]}"})
    for member in members:
        ok(server, "POST", f"/communities/{made['id']}/members", owner, {"user_id": member.id})
    return made  # type: ignore[no-any-return]


def running_contest(
    server: WebServer, admin: User, communities: list[str], *, frozen: bool = False, prizes: list[int] | None = None
) -> dict[str, Any]:
    """A contest that started two minutes ago and runs for an hour (frozen a minute ago with ``frozen``)."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "title": "Frozen war" if frozen else "Friday war",
        "starts_at": (now - timedelta(minutes=2)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "communities": communities,
        "problems": PROBLEMS,
        "prizes": prizes or [],
    }
    if frozen:
        body["freeze_at"] = (now - timedelta(minutes=1)).isoformat()
    return ok(server, "POST", "/contests", admin, body)  # type: ignore[no-any-return]


def solve_over_rest(server: WebServer, contest: dict[str, Any], who: User, label: str, source: str) -> None:
    problem = next(p for p in contest["problems"] if p["label"] == label)
    path = f"/contests/{contest['id']}/problems/{problem['id']}/submissions?wait=true"
    answer = ok(server, "POST", path, who, {"language": "python", "source": source})
    assert answer["verdict"] == "accepted", answer


def submit_in_browser(page: Page, contest: dict[str, Any], label: str, source: str, community: str | None) -> None:
    """Opens the problem from the contest page, writes ``source`` in the editor and presses Submit."""
    problem = next(p for p in contest["problems"] if p["label"] == label)
    page.get_by_role("link", name=f"{label}. {problem['title']}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{label}. {problem['title']}")
    editor = page.get_by_role("textbox", name="Editor")
    expect(editor).to_be_visible()
    if community is not None:
        page.get_by_label("Scores for").select_option(label=community)
    editor.click()
    page.keyboard.type(source)
    page.get_by_role("button", name="Submit").click()


@pytest.fixture
def clock(web_server: WebServer) -> Iterator[Clock]:
    """The contests' clock of the test server, set by the test; the real clock again afterwards."""
    contests = web_server.app[CONTESTS]
    real = contests.clock
    fake = Clock(datetime.now(UTC))
    contests.clock = fake
    yield fake
    contests.clock = real


def test_a_submission_in_one_tab_moves_the_standings_in_another_and_pays_into_the_wallet(
    sandbox_machine: None, signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path, clock: Clock
) -> None:
    admin = web_server.user("Ines Admin", role="admin")
    ada_page, ada = signed_in_page(name="Ada Lovelace")
    bo_page, bo = signed_in_page(name="Bo Chen")
    larks = community(web_server, admin, "Larks", [ada])
    owls = community(web_server, admin, "Owls", [ada, bo])
    contest = running_contest(web_server, admin, [larks["id"], owls["id"]], prizes=[25])
    ok(web_server, "PUT", f"/contests/{contest['id']}/prize-budget", admin, {"coins": 100})
    # Bo has solved A already: the board starts with Bo alone.
    solve_over_rest(web_server, contest, bo, "A", SUM_OK)

    # Both open the contest from the list.
    for page in (ada_page, bo_page):
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Contests").click()
        page.get_by_role("link", name="Friday war").first.click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Friday war")
    # The editor (CodeMirror) loads with a problem page only: Bo never opens one.
    bo_scripts: list[str] = []
    bo_page.on("request", lambda request: bo_scripts.append(request.url))
    ada_scripts: list[str] = []
    ada_page.on("request", lambda request: ada_scripts.append(request.url))
    bo_standings = bo_page.get_by_role("table", name="Standings")
    bo_rows = bo_standings.locator("tbody tr")
    expect(bo_rows).to_have_count(1)
    expect(bo_rows.first).to_contain_text("Bo Chen")
    expect(bo_rows.first).to_contain_text(owls["name"])
    expect(ada_page.get_by_role("article")).to_have_count(2)  # the problems, with their samples
    expect(ada_page.get_by_text("Print a + b.")).to_be_visible()
    expect(bo_page.get_by_role("timer")).to_contain_text("Ends in")
    bo_page.evaluate("window.__notReloaded = true")

    # Ada solves A for the Larks (she is in both communities, so she chooses) in her tab ...
    submit_in_browser(ada_page, contest, "A", SUM_OK, larks["name"])
    verdict = ada_page.get_by_role("status", name="Verdict")
    expect(verdict).to_contain_text("Accepted (2/2 tests)")
    expect(ada_page.get_by_role("table", name="My submissions to A")).to_contain_text("Accepted")
    ada_page.screenshot(path=str(screenshots / "contest-problem-desktop.png"), full_page=True)
    # ... and appears on Bo's board (sharing Bo's rank: same score, same minute), without a reload.
    expect(bo_rows).to_have_count(2)
    ada_row = bo_rows.filter(has_text="Ada Lovelace")
    expect(ada_row).to_contain_text(larks["name"])
    expect(ada_row.get_by_role("cell").first).to_have_text(RANK_1)

    # Ada solves B too: she ranks up, above Bo, on Bo's board. What she types is kept while she looks away.
    ada_page.get_by_role("link", name="Friday war").click()
    problem_b = next(p for p in contest["problems"] if p["label"] == "B")
    ada_page.get_by_role("link", name=f"B. {problem_b['title']}").click()
    ada_page.get_by_role("textbox", name="Editor").click()
    ada_page.keyboard.type("print(")
    ada_page.get_by_role("link", name="Friday war").click()
    expect(ada_page.get_by_role("table", name="Standings")).to_be_visible()
    ada_page.go_back()
    expect(ada_page.get_by_role("textbox", name="Editor")).to_have_text("print(")
    ada_page.get_by_role("textbox", name="Editor").press("Control+a")
    ada_page.keyboard.press("Delete")
    ada_page.go_back()
    submit_in_browser(ada_page, contest, "B", DOUBLE_OK, larks["name"])
    expect(verdict).to_contain_text("Accepted")
    expect(bo_rows.first).to_contain_text("Ada Lovelace")
    expect(bo_rows.first.get_by_role("cell").first).to_have_text(RANK_1)
    expect(bo_rows.nth(1).get_by_role("cell").first).to_have_text(re.compile(r"^\s*2\b"))
    expect(bo_rows.nth(1)).to_contain_text("Bo Chen")
    assert bo_page.evaluate("window.__notReloaded") is True
    assert not [url for url in bo_scripts if "/assets/editor-" in url or "/assets/codemirror-" in url], bo_scripts
    # Ada's problem page loaded CodeMirror, but not the workspace's collaborative editor or Yjs.
    assert [url for url in ada_scripts if "/assets/codemirror-" in url], ada_scripts
    assert not [url for url in ada_scripts if "/assets/editor-" in url or "/assets/WorkspacePage-" in url], ada_scripts
    bo_page.screenshot(path=str(screenshots / "contest-desktop.png"), full_page=True)

    # The communities' view, by keyboard: the tab after "People".
    bo_page.get_by_role("tab", name="People").focus()
    bo_page.keyboard.press("ArrowRight")
    expect(bo_page.get_by_role("tab", name="Communities")).to_have_attribute("aria-selected", "true")
    expect(bo_standings.locator("tbody tr").first).to_contain_text(larks["name"])
    expect(bo_standings.locator("tbody tr").nth(1)).to_contain_text(owls["name"])

    # Ada's "My submissions" on the contest page lists both verdicts.
    ada_page.get_by_role("link", name="Friday war").click()
    mine = ada_page.get_by_role("table", name="My submissions")
    expect(mine.locator("tbody tr")).to_have_count(2)
    expect(mine).not_to_contain_text("Waiting for the judge")

    # The contest ends and is finalised: the Larks won, Ada's prize is in her wallet, the all-time board ranks them.
    clock.now = datetime.now(UTC) + timedelta(hours=2)
    finalised = ok(web_server, "POST", f"/contests/{contest['id']}/finalise", admin)
    assert finalised["payout"]["state"] == "paid", finalised
    ada_page.goto("/profile")
    ada_page.get_by_role("link", name="Your wallet and coin history").click()
    expect(ada_page.get_by_text("Balance: 25 coins")).to_be_visible()
    history = ada_page.get_by_role("table", name="Coin history")
    expect(history).to_contain_text("+25")
    expect(history).to_contain_text(f"rank 1 for {larks['name']} in Friday war")
    ada_page.screenshot(path=str(screenshots / "contest-wallet-desktop.png"), full_page=True)
    ada_page.goto("/contests")
    ada_page.get_by_role("link", name="All-time community board").click()
    alltime = ada_page.get_by_role("table", name="All-time community board")
    expect(alltime).to_contain_text(larks["name"])
    bo_page.reload()
    expect(bo_page.get_by_text("Finalised").first).to_be_visible()


def test_a_frozen_board_says_so_at_phone_width_and_a_refusal_is_shown_as_its_message(
    sandbox_machine: None, open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    admin = web_server.user("Ines Admin", role="admin")
    cy = web_server.user("Cy Park")
    dee = web_server.user("Dee Ng")
    owls = community(web_server, admin, "Owls", [cy, dee])
    contest = running_contest(web_server, admin, [owls["id"]], frozen=True)
    # Dee solves A after the freeze: the public board shows it as pending.
    solve_over_rest(web_server, contest, dee, "A", SUM_OK)

    page = open_page(phone=True)
    log_in(page, cy)
    page.goto(f"/contests/{contest['id']}")
    expect(page.get_by_text("The board is frozen")).to_be_visible()
    standings = page.get_by_role("table", name="Standings")
    row = standings.locator("tbody tr").first
    expect(row).to_contain_text("Dee Ng")
    expect(row.get_by_role("cell", name="A: 1 pending (frozen)")).to_have_text("?1")
    expect(page.get_by_text("Running (board frozen)").first).to_be_visible()
    # Nothing sticks out sideways at 360 px (the wide table scrolls inside its box).
    fits_phone(page)
    page.screenshot(path=str(screenshots / "contest-frozen-phone.png"), full_page=True)

    # Offline, Cy misses Dee's next submission; back online, the board has it (subscribed again at the reconnect).
    page.context.set_offline(True)
    expect(page.get_by_role("status").filter(has_text="Reconnecting…")).to_be_visible()
    solve_over_rest(web_server, contest, dee, "B", DOUBLE_OK)
    page.context.set_offline(False)
    expect(page.get_by_role("status").filter(has_text="Reconnecting…")).to_have_count(0)
    expect(row.get_by_role("cell", name="B: 1 pending (frozen)")).to_have_text("?1")

    # A submission the server refuses (a language it does not know) is shown as the server's message.
    page.get_by_role("link", name="B. Double").click()
    page.get_by_role("textbox", name="Editor").click()
    page.keyboard.type(DOUBLE_OK)
    page.get_by_label("Language").evaluate(
        "select => { const o = document.createElement('option'); o.value = 'cobol'; o.text = 'COBOL'; select.add(o); }"
    )
    page.get_by_label("Language").select_option("cobol")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("alert")).to_contain_text("cobol")
    fits_phone(page)
    page.screenshot(path=str(screenshots / "contest-problem-phone.png"), full_page=True)

    # An unknown contest is its message, not a blank page.
    page.goto(f"/contests/{uuid.uuid4()}")
    expect(page.get_by_role("alert")).to_contain_text("contest not found")
