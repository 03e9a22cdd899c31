"""The plugin author's reference, generated from the code's own docstrings.

``python -m relay.plugin_reference > docs/plugin-api.md`` writes one page: every hook
(its signature and contract, from ``relay/hookspecs.py``) and every object a hook hands
to a plugin, with its public methods and properties. ``tests/test_plugin_reference.py``
fails when the committed page and the code disagree, so the page is never stale.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

from relay import hookspecs
from relay.app import App
from relay.bounces.model import BounceRecord
from relay.engagement import RequestFacts, Verdict
from relay.message import MessageDraft
from relay.outgoing import FrozenMessage, OutgoingMessage
from relay.records import LinkRecord, Outcome, Reply, Transaction
from relay.rewrite.context import (
    ContentPart,
    HtmlPart,
    PlainTextPart,
    RewriteContext,
    RewriteStats,
    TrackingPolicy,
)
from relay.rewrite.edits import EditConflict
from relay.rewrite.html_scan import Attr, Scan, Tag
from relay.rewrite.mime import MimeTree
from relay.tracker.plugin_routes import HitTarget, TrackerRoutes

#: The objects, in the order a plugin meets them, with the module to import them from.
OBJECTS: list[tuple[type, str]] = [
    (Transaction, "relay.records"), (Reply, "relay.records"), (Outcome, "relay.records"),
    (MessageDraft, "relay.message"), (TrackingPolicy, "relay.rewrite.context"),
    (RewriteContext, "relay.rewrite.context"), (RewriteStats, "relay.rewrite.context"),
    (LinkRecord, "relay.records"), (ContentPart, "relay.rewrite.context"),
    (HtmlPart, "relay.rewrite.context"), (PlainTextPart, "relay.rewrite.context"),
    (Scan, "relay.rewrite.html_scan"), (Tag, "relay.rewrite.html_scan"),
    (Attr, "relay.rewrite.html_scan"), (EditConflict, "relay.rewrite.edits"),
    (MimeTree, "relay.rewrite.mime"), (OutgoingMessage, "relay.outgoing"),
    (FrozenMessage, "relay.outgoing"), (App, "relay.app"),
    (RequestFacts, "relay.engagement"), (Verdict, "relay.engagement"),
    (BounceRecord, "relay.bounces.model"), (TrackerRoutes, "relay.tracker.plugin_routes"),
    (HitTarget, "relay.tracker.plugin_routes"),
]

HEADER = """# Plugin API reference

Generated from the code's docstrings by `python -m relay.plugin_reference` (a test fails
when this page and the code disagree). The README's "Writing a plugin" shows how a plugin
is packaged and registered, the order plugins run in, and complete examples
(`examples/`).
"""


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if getattr(obj, "__doc__", None) else ""


def _signature(func: Callable[..., Any]) -> str:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return "(…)"
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()
              if p.name not in ("self", "cls")]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def hooks() -> Iterator[str]:
    yield "## Hooks\n"
    yield ("A plugin implements any of these with `@relay.hookimpl`, taking any subset of "
           "the arguments by name; plain functions and coroutines both work.\n")
    for name, func in vars(hookspecs).items():
        if name.startswith("trackrelay_") and callable(func):
            yield f"### `{name}{_signature(func)}`\n"
            yield _doc(func) + "\n"


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property | classmethod | staticmethod) or inspect.isfunction(
                member):
            yield name, member


def objects() -> Iterator[str]:
    yield "## Objects\n"
    for cls, module in OBJECTS:
        bases = [b.__name__ for b in cls.__bases__ if b not in (object, tuple)]
        base = f" (a `{bases[0]}`)" if bases and bases[0] in {c.__name__ for c, _ in
                                                              OBJECTS} else ""
        yield f"### `{module}.{cls.__name__}`{base}\n"
        yield _doc(cls) + "\n"
        fields = getattr(cls, "__dataclass_fields__", None) or getattr(cls, "_fields", None)
        if fields:
            names = [n for n in fields if not n.startswith("_")]
            yield "Fields: " + ", ".join(f"`{n}`" for n in names) + ".\n"
        for name, member in _members(cls):
            if isinstance(member, property):
                yield f"- `{name}` (property): {_doc(member.fget) or '—'}"
            else:
                func = member.__func__ if isinstance(member, classmethod | staticmethod) \
                    else member
                yield f"- `{name}{_signature(func)}`: {_doc(func) or '—'}"
        yield ""


def render() -> str:
    return "\n".join([HEADER, *hooks(), *objects()]).rstrip("\n") + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
