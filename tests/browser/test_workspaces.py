"""The workspace screens in a real browser, one browser context per user, against a real server, Postgres and the
real sandbox: two people type in one file and see each other's text and named cursor, a run's output streams
into every tab with its verdict, a reader cannot edit, files are added, renamed and deleted.

Selected by role and accessible name (API.md, "The web app"): the editor is the textbox "Editor" (CodeMirror's
content element), the button "Run", the region "Output".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import OpenPage, SignedInPage, User, WebServer, log_in, rest
from tests.conftest import TEST_JWT_SECRET

# A program that streams: its first line is printed while it waits for the console's input.
PROGRAM = 'name = input("Your name? ")\nprint(f"Hello, {name}!")\n'


def room_workspace(server: WebServer, host: User, *members: User) -> dict[str, Any]:
    """A private room with ``members`` invited, and a Python workspace in it (everyone in the room edits)."""
    token = host.token()
    status, room = rest(
        server.url,
        "POST",
        "/rooms",
        {"name": f"Pairing {uuid.uuid4().hex[:4]}", "kind": "ide", "visibility": "private"},
        token,
    )
    assert status == 201, room
    for member in members:
        status, body = rest(server.url, "POST", f"/rooms/{room['id']}/invite", {"email": member.email}, token)
        assert status == 201, body
    body = {"name": "Pair programming", "language": "python", "room_id": room["id"], "files": {"main.py": PROGRAM}}
    status, workspace = rest(server.url, "POST", "/workspaces", body, token)
    assert status == 201, workspace
    return workspace  # type: ignore[no-any-return]


def open_workspace(page: Page, workspace_id: str) -> Locator:
    """Opens the workspace; returns its editor once the file is loaded into it."""
    page.goto(f"/workspaces/{workspace_id}")
    editor = page.get_by_role("textbox", name="Editor")
    expect(editor).to_be_visible()
    return editor


def type_at_end(page: Page, editor: Locator, text: str) -> None:
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def test_two_people_type_in_one_file_and_see_each_others_text_cursor_and_runs(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    ada_page, ada = signed_in_page(name="Ada Lovelace")
    bo_page, bo = signed_in_page(name="Bo Chen")
    workspace = room_workspace(web_server, ada, bo)
    ada_editor = open_workspace(ada_page, workspace["id"])
    bo_editor = open_workspace(bo_page, workspace["id"])
    expect(ada_editor).to_contain_text("Your name?")

    type_at_end(ada_page, ada_editor, "# from Ada")
    type_at_end(bo_page, bo_editor, "\n# from Bo")
    for editor in (ada_editor, bo_editor):
        expect(editor).to_contain_text("# from Ada")
        expect(editor).to_contain_text("# from Bo")
    # Each sees the other's cursor, with the other's name on it, in the editor.
    expect(ada_editor.get_by_text("Bo Chen")).to_be_visible()
    expect(bo_editor.get_by_text("Ada Lovelace")).to_be_visible()
    expect(ada_page.get_by_role("list", name="People in this workspace")).to_contain_text("Bo Chen")

    # Ada runs it with the console open: the prompt streams into both tabs while it waits for input.
    ada_page.get_by_label("Keep input open (console)").check()
    ada_page.get_by_role("button", name="Run").click()
    outputs = [page.get_by_role("region", name="Output") for page in (ada_page, bo_page)]
    for output in outputs:
        expect(output).to_contain_text("Your name?")
        expect(output).to_contain_text("Running…")
    ada_page.get_by_label("Console input").fill("Bo")
    ada_page.keyboard.press("Enter")
    for output in outputs:
        expect(output).to_contain_text("Hello, Bo!")
        expect(output).to_contain_text("Finished (exit code 0")
        expect(output).not_to_contain_text("Running…")
    ada_page.screenshot(path=str(screenshots / "workspace-desktop.png"), full_page=True)

    # A run with stdin, by Bo; the history lists both runs in both tabs.
    bo_page.get_by_label("Input (stdin)").fill("Ada")
    bo_page.get_by_role("button", name="Run").click()
    for page, output in zip((ada_page, bo_page), outputs, strict=True):
        expect(output).to_contain_text("Hello, Ada!")
        expect(page.get_by_role("list", name="Run history").get_by_role("listitem")).to_have_count(2)
    # An earlier run can be shown again from the history.
    bo_page.get_by_role("list", name="Run history").get_by_role("button").nth(1).click()
    expect(outputs[1]).to_contain_text("Hello, Bo!")


def test_a_run_in_a_workspace_outside_any_room_streams_into_every_members_tab(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    ada_page, ada = signed_in_page(name="Ada Lovelace")
    rae_page, rae = signed_in_page(name="Rae Reader")
    body = {"name": "Solo project", "language": "python", "files": {"main.py": PROGRAM}}
    status, workspace = rest(web_server.url, "POST", "/workspaces", body, ada.token())
    assert status == 201 and workspace["room_id"] is None, workspace
    status, member = rest(
        web_server.url, "PUT", f"/workspaces/{workspace['id']}/members/{rae.id}", {"access": "read"}, ada.token()
    )
    assert status == 200, member
    open_workspace(ada_page, workspace["id"])
    open_workspace(rae_page, workspace["id"])

    # Ada runs it with the console open: the prompt streams into the reader's tab too, then the verdict.
    ada_page.get_by_label("Keep input open (console)").check()
    ada_page.get_by_role("button", name="Run").click()
    outputs = [page.get_by_role("region", name="Output") for page in (ada_page, rae_page)]
    for output in outputs:
        expect(output).to_contain_text("Your name?")
        expect(output).to_contain_text("Running…")
    ada_page.get_by_label("Console input").fill("Rae")
    ada_page.keyboard.press("Enter")
    for output in outputs:
        expect(output).to_contain_text("Hello, Rae!")
        expect(output).to_contain_text("Finished (exit code 0")
        expect(output).to_contain_text("by Ada Lovelace")
    rae_page.screenshot(path=str(screenshots / "workspace-run-follower.png"), full_page=True)


def test_a_reader_sees_the_code_and_cursors_but_cannot_edit_or_run(
    signed_in_page: SignedInPage, web_server: WebServer, screenshots: Path
) -> None:
    owner_page, owner = signed_in_page(name="Olu Owner")
    reader_page, reader = signed_in_page(name="Rae Reader", phone=True)

    # The owner creates a C++ workspace on /workspaces; it opens, and is listed.
    owner_page.get_by_role("navigation", name="Main").get_by_role("link", name="Workspaces").click()
    owner_page.get_by_label("Workspace name").fill("Greeter in C++")
    owner_page.get_by_label("Language").select_option(label="C++")
    owner_page.get_by_role("button", name="Create workspace").click()
    owner_editor = owner_page.get_by_role("textbox", name="Editor")
    expect(owner_editor).to_contain_text("#include")
    workspace_id = owner_page.url.rsplit("/", 1)[1]
    status, body = rest(
        web_server.url, "PUT", f"/workspaces/{workspace_id}/members/{reader.id}", {"access": "read"}, owner.token()
    )
    assert status == 200, body

    # Files: a bad name is refused with the reason; a file is added, renamed and deleted.
    files = owner_page.get_by_role("navigation", name="Files")
    files.get_by_label("New file name").fill("../secrets")
    files.get_by_role("button", name="Add file").click()
    expect(files.get_by_role("alert")).to_contain_text("names of letters")
    files.get_by_label("New file name").fill("notes.txt")
    files.get_by_role("button", name="Add file").click()
    expect(owner_page.get_by_role("heading", name="notes.txt")).to_be_visible()
    type_at_end(owner_page, owner_editor, "shared notes")
    files.get_by_role("button", name="Rename notes.txt").click()
    files.get_by_label("New name for notes.txt").fill("notes.md")
    files.get_by_role("button", name="Save name").click()
    expect(files.get_by_role("button", name="notes.md", exact=True)).to_be_visible()
    expect(owner_editor).to_contain_text("shared notes")

    reader_page.goto(f"/workspaces/{workspace_id}")
    reader_editor = reader_page.get_by_role("textbox", name="Editor")
    expect(reader_page.get_by_text("Read only: you can see the code")).to_be_visible()
    reader_files = reader_page.get_by_role("navigation", name="Files")
    expect(reader_files.get_by_role("button", name="notes.md", exact=True)).to_be_visible()
    expect(reader_files.get_by_role("button", name="Add file")).to_have_count(0)
    expect(reader_page.get_by_role("button", name="Run")).to_have_count(0)
    expect(reader_editor).not_to_be_editable()

    # The owner deletes notes.md; the reader's list follows.
    files.get_by_role("button", name="Delete notes.md").click()
    files.get_by_role("button", name="Yes, delete").click()
    expect(reader_files.get_by_role("button", name="notes.md", exact=True)).to_have_count(0)

    # Typing into the reader's editor changes nothing, for anyone; the owner sees the reader's cursor.
    reader_files.get_by_role("button", name="main.cpp", exact=True).click()
    expect(reader_editor).to_contain_text("#include")
    before = reader_editor.inner_text()
    reader_editor.click()
    reader_page.keyboard.type("zzz reader was here")
    owner_page.get_by_role("navigation", name="Files").get_by_role("button", name="main.cpp", exact=True).click()
    expect(owner_editor.get_by_text("Rae Reader")).to_be_visible()
    assert "zzz" not in reader_editor.inner_text()
    assert reader_editor.inner_text() == before
    assert "zzz" not in owner_editor.inner_text()
    reader_page.screenshot(path=str(screenshots / "workspace-phone-reader.png"), full_page=True)
    owner_page.screenshot(path=str(screenshots / "workspace-files-desktop.png"), full_page=True)
    # No sideways scrolling at 360 px.
    assert reader_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_a_workspace_one_may_not_see_shows_the_servers_message(
    signed_in_page: SignedInPage, web_server: WebServer
) -> None:
    page, _ = signed_in_page()
    page.goto(f"/workspaces/{uuid.uuid4()}")
    expect(page.get_by_role("alert")).to_contain_text("not found")
    expect(page.get_by_role("button", name="Try again")).to_be_visible()


def test_edits_typed_offline_are_kept_and_reach_the_other_editor_when_back_online(
    signed_in_page: SignedInPage, web_server: WebServer
) -> None:
    ada_page, ada = signed_in_page(name="Ada Lovelace")
    bo_page, bo = signed_in_page(name="Bo Chen")
    workspace = room_workspace(web_server, ada, bo)
    ada_editor = open_workspace(ada_page, workspace["id"])
    bo_editor = open_workspace(bo_page, workspace["id"])
    expect(bo_page.get_by_role("list", name="People in this workspace")).to_contain_text("Ada Lovelace")

    ada_page.context.set_offline(True)
    expect(ada_page.get_by_text("Reconnecting… your edits are kept here")).to_be_visible()
    type_at_end(ada_page, ada_editor, "\n# typed offline")
    type_at_end(bo_page, bo_editor, "\n# typed by Bo meanwhile")
    expect(ada_editor).to_contain_text("# typed offline")  # still there, nothing lost
    ada_page.context.set_offline(False)
    for editor in (ada_editor, bo_editor):
        expect(editor).to_contain_text("# typed offline")
        expect(editor).to_contain_text("# typed by Bo meanwhile")
    expect(ada_page.get_by_text("Reconnecting… your edits are kept here")).to_have_count(0)


def test_the_workspace_works_from_the_keyboard_with_visible_focus(
    signed_in_page: SignedInPage, web_server: WebServer
) -> None:
    page, user = signed_in_page(name="Kay Board")
    status, workspace = rest(
        web_server.url, "POST", "/workspaces", {"name": "Keys", "language": "python"}, user.token()
    )
    assert status == 201, workspace
    scripts: list[str] = []
    page.on("request", lambda r: scripts.append(r.url.rsplit("/", 1)[-1]) if r.resource_type == "script" else None)
    editor = open_workspace(page, workspace["id"])
    expect(editor).to_contain_text("greeting")
    # Python is highlighted (its keywords get CodeMirror's token classes) with its language's chunk alone.
    expect(editor.locator(".cm-line span").first).to_be_visible()
    assert any(name.startswith("lang-python-") for name in scripts), scripts
    assert not any(name.startswith(("lang-cpp-", "lang-javascript-")) for name in scripts), scripts
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("# typed")
    # Tab is not captured by the editor: it moves on to the stdin box, then to Run, which shows its focus.
    page.keyboard.press("Tab")
    expect(editor).not_to_be_focused()
    expect(page.get_by_label("Input (stdin)")).to_be_focused()
    page.keyboard.press("Tab")
    run = page.get_by_role("button", name="Run")
    expect(run).to_be_focused()
    assert run.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
    page.keyboard.press("Enter")
    output = page.get_by_role("region", name="Output")
    expect(output).to_contain_text("Hello, studyhall!")
    expect(output).to_contain_text("Finished (exit code 0")
    expect(editor).to_contain_text("# typed")


def test_edits_typed_while_the_server_restarts_are_kept_and_saved(
    open_page: OpenPage, start_server: Callable[..., WebServer]
) -> None:
    first = start_server(jwt_secret=TEST_JWT_SECRET)
    user = first.user("Rita Restart")
    page = open_page(server=first)
    log_in(page, user)
    status, workspace = rest(first.url, "POST", "/workspaces", {"name": "Restart", "language": "python"}, user.token())
    assert status == 201, workspace
    editor = open_workspace(page, workspace["id"])
    type_at_end(page, editor, "\n# before the restart")
    expect(page.get_by_text("Connected", exact=True)).to_be_visible()

    port = first.port
    first.stop()  # the server closes the editor's socket (1001) and writes the document
    reconnecting = page.get_by_text("Reconnecting… your edits are kept here")
    expect(reconnecting).to_be_visible()
    type_at_end(page, editor, "\n# typed while it was down")
    second = start_server(port=port, jwt_secret=TEST_JWT_SECRET)
    expect(reconnecting).to_have_count(0)

    # Another tab, opened afterwards on the new server, gets both edits from it.
    other = open_page(server=second)
    log_in(other, user)
    other_editor = open_workspace(other, workspace["id"])
    expect(other_editor).to_contain_text("# before the restart")
    expect(other_editor).to_contain_text("# typed while it was down")
