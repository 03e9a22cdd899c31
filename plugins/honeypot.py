"""Built-in plugin ``honeypot`` (off by default): a link no person can see or reach.

When ``[plugins.honeypot] enabled = true``, tracked HTML gets one extra link, hidden from
people (``display:none``, empty, ``aria-hidden``, out of the tab order), to the
tracker's ``/h/<token>`` with a token of its own. Link scanners that follow every
``href`` fetch it; a person cannot. The tracker records the hit as a machine ``click``
(reason ``honeypot``), and the batch pass marks that recipient's other opens and clicks
within ``engagement.honeypot_window`` seconds as machine too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay import hookimpl
from relay.config import ConfigError
from relay.rewrite.context import HtmlPart, RewriteContext
from relay.rewrite.html_scan import escape_attr

if TYPE_CHECKING:
    from relay.app import App

NAME = "honeypot"
STYLE = ("display:none!important;max-height:0;overflow:hidden;mso-hide:all;font-size:0;"
         "line-height:0")


def honeypot_markup(url: str) -> str:
    return (f'<a href="{escape_attr(url)}" style="{STYLE}" aria-hidden="true" '
            f'tabindex="-1"></a>')


def _enabled(app: App) -> bool:
    return bool(app.plugin_config(NAME).get("enabled", False))


@hookimpl
def trackrelay_check_config(app: App) -> None:
    settings = app.plugin_config(NAME)
    unknown = set(settings) - {"enabled"}
    if unknown:
        raise ConfigError(f"plugins.{NAME}.{sorted(unknown)[0]}: unknown key (known: enabled)")
    if not isinstance(settings.get("enabled", False), bool):
        raise ConfigError(f"plugins.{NAME}.enabled: expected true or false")


@hookimpl
def trackrelay_edit_html(context: RewriteContext, part: HtmlPart) -> None:
    if not context.policy.clicks or not _enabled(context.app):
        return
    if context.transaction.extra.get(NAME) or part.body_is_empty():
        return
    url = f"{context.base_url}/h/{context.token('honeypot')}"
    part.insert(part.body_insert_offset(), honeypot_markup(url), owner=NAME)
    context.transaction.extra[NAME] = True
