"""trackrelay plugin ``footer``: a footer on every outgoing message, tracked or not.

``trackrelay_decorate_html`` / ``trackrelay_decorate_text`` are called for every text
part of every message trackrelay may change (not for MIME it cannot follow, nor for a
DKIM signature an edit would break), after the tracking plugins: at ``</body>`` the
pixel comes first, then the footer. Settings::

    [plugins.footer]
    html = "<p style='color:#888;font-size:12px'>Example Ltd, 1 Main Street</p>"
    text = "Example Ltd, 1 Main Street"
"""

from __future__ import annotations

import html as html_lib

from relay import hookimpl
from relay.app import App
from relay.config import ConfigError
from relay.rewrite.context import HtmlPart, PlainTextPart

FOOTER = {"html": "", "text": ""}


@hookimpl
def trackrelay_check_config(app: App) -> None:
    """Check the settings and keep them (`trackrelay check-config` runs this too)."""
    settings = app.plugin_config("footer")
    unknown = set(settings) - set(FOOTER)
    if unknown:
        raise ConfigError(f"plugins.footer.{sorted(unknown)[0]}: unknown key "
                          "(known: html, text)")
    text = str(settings.get("text", ""))
    FOOTER["text"] = text
    # Without an HTML form, the text one, escaped: a footer is never markup by accident.
    FOOTER["html"] = str(settings.get("html", "")) or (
        f"<p>{html_lib.escape(text)}</p>" if text else "")


@hookimpl
def trackrelay_decorate_html(part: HtmlPart) -> None:
    if FOOTER["html"]:
        part.insert(part.body_insert_offset(), FOOTER["html"], owner="footer")


@hookimpl
def trackrelay_decorate_text(part: PlainTextPart) -> None:
    if FOOTER["text"]:
        newline = "\r\n" if "\r\n" in part.text else "\n"
        end = len(part.text)
        lead = "" if part.text.endswith(("\n", "\r")) or not part.text else newline
        part.insert(end, f"{lead}-- {newline}{FOOTER['text']}{newline}", owner="footer")
