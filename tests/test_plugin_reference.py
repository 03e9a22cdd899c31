"""docs/plugin-api.md is what ``python -m relay.plugin_reference`` writes today: the plugin
author's reference page never drifts from the code's docstrings."""

from __future__ import annotations

from pathlib import Path

from relay import hookspecs
from relay.plugin_reference import render

PAGE = Path(__file__).resolve().parent.parent / "docs" / "plugin-api.md"


def test_the_committed_reference_is_current() -> None:
    assert PAGE.read_text() == render(), (
        "docs/plugin-api.md is stale: python -m relay.plugin_reference > docs/plugin-api.md")


def test_every_hook_and_the_part_api_are_on_the_page() -> None:
    page = render()
    hooks = [n for n in vars(hookspecs) if n.startswith("trackrelay_")]
    assert hooks and all(f"### `{name}(" in page for name in hooks)
    for member in ("body_insert_offset()", "tags(*names)", "track_link(url, text='')",
                   "open_url()", "insert(offset, new, owner='')", "add_header(name, value)"):
        assert f"`{member}`" in page, member
