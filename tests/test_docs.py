"""The documentation stays true to the code: the configuration reference is the generated one, and every
relative link in the README, SECURITY.md and docs/ leads to a file and heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core_api.config_reference import reference_markdown
from core_api.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
if (ROOT / "SECURITY.md").exists():
    PAGES.append(ROOT / "SECURITY.md")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in page.read_text().splitlines():
        m = re.match(r"^#{1,6} (.*)$", line)
        if m:
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


def test_the_configuration_reference_is_generated_from_the_settings_model() -> None:
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference_markdown(), "run: .venv/bin/studyhall config-reference > docs/configuration.md"
    for name in Settings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in written


@pytest.mark.parametrize("doc", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{doc.name}: links to nowhere: {broken}"
