"""JSON API for deliverability: inbound intake and the suppression list.

Routes, relative to ``/api/v1`` (added behind the API's guard, which checks the bearer
token and sets its scope):

* ``POST /inbound`` (admin): the body is one raw RFC 5322 message (a bounce, an ARF
  report, a reply) — what an admin's bounce mailbox forwards. 200 with what intake made
  of it (``kind``, ``events``, ``unmatched``); 413 ``too_large`` over
  ``bounces.max_message_size``; 422 ``not_a_message`` for anything that is not mail.
* ``GET /suppressions`` (``scope``, ``cursor``, ``limit``), ``POST /suppressions``
  (JSON ``{"address", "scope", "reason"}``), ``DELETE /suppressions/{address}``
  (``scope``, ``note``; the removal is recorded with the token's name),
  ``GET /suppressions/export`` (CSV), ``POST /suppressions/import`` (CSV body),
  ``GET /suppressions/removals`` (admin).

Suppression scopes are ``""`` (shown and given as ``global``) or a sender domain. An
admin token manages every scope; a token scoped to a sender address or domain sees and
manages only its own domain's scope (403 ``forbidden`` for another one).

CSV columns: ``address,scope,reason,event_id,created_at`` (export; ISO 8601 times). An
import needs only ``address``; ``scope`` and ``reason`` columns are used when present
(a header row naming the columns is optional).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from relay.inbound import InboundError, process
from relay.logs import get_logger
from relay.store.base import SuppressionRow, domain_of, iso_time
from relay.tracker.api import SCOPE_KEY, Api, BadParameter, Query, error, ok, read_body
from relay.tracker.lookups import require_store
from relay.tracker.openapi import ADDRESS_PATTERN, SCOPE_PATTERN
from relay.tracker.spreadsheet import read_cell, text_cell

if TYPE_CHECKING:
    from relay.app import App
    from relay.store.base import Store

log = get_logger("relay.tracker.deliverability_api")

CSV_COLUMNS = ("address", "scope", "reason", "event_id", "created_at")
MAX_IMPORT = 20 * 1024 * 1024
_ADDRESS = re.compile(ADDRESS_PATTERN)


def normalise_address(value: str) -> str | None:
    address = value.strip().strip("<>").strip().lower()
    return address if _ADDRESS.match(address) else None


def scope_name(scope: str) -> str:
    return scope or "global"


#: A scope as the API takes it: "global" or a sender domain (a U-label domain too:
#: senders may be SMTPUTF8 addresses). Nothing that could not be a domain name.
_SCOPE = re.compile(SCOPE_PATTERN)


def scope_value(name: str | None) -> str | None:
    """A scope given in a request, as the store keeps it ("" for global); None if not
    given. :class:`BadParameter` (``scope``) for anything that is not a scope."""
    if name is None:
        return None
    if not isinstance(name, str) or not _SCOPE.match(name):
        raise BadParameter("scope", "expected global or a sender domain")
    name = name.lower()
    return "" if name == "global" else name


def _body_text(body: dict[str, Any], name: str, max_len: int) -> str | None:
    """A string member of a JSON body (None if absent or null), else a 400 naming it."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadParameter(name, "expected a string")
    if len(value) > max_len:
        raise BadParameter(name, f"longer than {max_len} characters")
    if "\x00" in value:
        raise BadParameter(name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON may spell a lone surrogate ("\ud800"); text may not
        raise BadParameter(name, "not valid Unicode text (a lone surrogate)") from None
    return value


def suppression_json(row: SuppressionRow) -> dict[str, Any]:
    return {"address": row["address"], "scope": scope_name(row["scope"]),
            "reason": row["reason"], "event_id": row["event_id"],
            "created_at": iso_time(row["created_at"])}


def suppressions_csv(rows: list[SuppressionRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([text_cell(row["address"]), text_cell(scope_name(row["scope"])),
                         text_cell(row["reason"]), row["event_id"] or "",
                         iso_time(row["created_at"])])
    return out.getvalue()


def _cell(cells: list[str], columns: dict[str, int], name: str) -> str:
    i = columns.get(name)
    return read_cell(cells[i].strip()) if i is not None and i < len(cells) else ""


class _Lines:
    """The physical lines of a text, noting when a reader asks past the last one: a
    row that asked there ran into the end of the text inside a quoted field."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = iter(lines)
        self.ended = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            self.ended = True
            raise


def _read(lines: list[str], first: int = 1) -> Iterator[tuple[int, list[str] | None]]:
    """``(line, cells)`` for each row read from ``lines`` (``first`` the number of the
    first), cells None for the row whose quote is still open at the end."""
    source = _Lines(lines)
    reader = csv.reader(source)
    read = 0  # lines taken by the rows so far
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BadParameter("body", f"not a CSV file: line {first - 1 + reader.line_num}"
                                       f": {exc}") from None
        yield first + read, None if source.ended else row
        read = reader.line_num


def _rows(lines: list[str]) -> Iterator[tuple[int, list[str] | None]]:
    """``(line, cells)`` for each row of the CSV's lines, ``line`` the one it starts
    on. A quote never closed would take the rest of the file as one field: that row
    comes as ``(line, None)``, and as the quoting after it cannot be trusted each later
    line is read as a row of its own (so nothing after it is lost, and the reading stays
    linear). :class:`BadParameter` (``body``) for text that is not CSV (a bare CR inside
    an unquoted field, a field over the csv module's size limit)."""
    for n, cells in _read(lines):
        yield n, cells
        if cells is None:
            for later in range(n + 1, len(lines) + 1):
                yield from _read(lines[later - 1:later], later)
            return


def _open_quote(lines: list[str], n: int) -> str:
    """The problem for a row whose quote is never closed, showing its line as given."""
    given = lines[n - 1].rstrip("\r\n")
    return f"line {n}: a quote is never closed: {given[:80]!r}"


def parse_suppressions_csv(text: str, default_scope: str = "",
                           default_reason: str = "imported"
                           ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``[(address, scope, reason)]`` and the problems found (``line N: …``)."""
    rows: list[tuple[str, str, str]] = []
    problems: list[str] = []
    columns = {"address": 0, "scope": 1, "reason": 2}
    lines = io.StringIO(text, newline="").readlines()
    for n, cells in _rows(lines):
        if cells is None:
            problems.append(_open_quote(lines, n))
            continue
        if not cells or not any(c.strip() for c in cells):
            continue
        if n == 1 and cells[0].strip().lower() == "address":
            columns = {c.strip().lower(): i for i, c in enumerate(cells)}
            continue

        given = _cell(cells, columns, "address")
        address = normalise_address(given)
        if address is None:
            problems.append(f"line {n}: not an email address: {given[:80]!r}")
            continue
        scope_text = _cell(cells, columns, "scope")
        try:
            scope = scope_value(scope_text) if scope_text else default_scope
        except BadParameter:
            problems.append(f"line {n}: not a scope (global or a sender domain): "
                            f"{scope_text[:80]!r}")
            continue
        reason = _cell(cells, columns, "reason") or default_reason
        if "\x00" in reason or len(reason) > 500:
            # PostgreSQL keeps no NUL in text; the API takes reasons up to 500 characters
            problems.append(f"line {n}: the reason has a NUL character or is longer than "
                            f"500 characters")
            continue
        rows.append((address, scope or "", reason))
    return rows, problems


class DeliverabilityApi:
    def __init__(self, app: App) -> None:
        self.app = app
        self.names = {t.token: (t.name or "api") for t in app.config.tracker.api_tokens}

    @property
    def store(self) -> Store:
        return require_store(self.app)

    # -- scope -------------------------------------------------------------------------------

    @staticmethod
    def _token_domain(request: web.Request) -> str | None:
        """None for an admin token, else the domain its scope allows."""
        scope: str = request[SCOPE_KEY]
        if not scope:
            return None
        return domain_of(scope) if "@" in scope else scope

    def _scope(self, request: web.Request, given: str | None) -> str | web.Response:
        own = self._token_domain(request)
        value = scope_value(given)
        if own is None:
            return value if value is not None else ""
        if value is None or value == own:
            return own
        return error(403, "forbidden", f"scope: this token may only manage suppressions "
                                       f"of {own}", "scope")

    def _who(self, request: web.Request) -> str:
        _kind, _, token = request.headers.get("Authorization", "").partition(" ")
        return f"api:{self.names.get(token.strip(), 'api')}"

    # -- inbound ---------------------------------------------------------------------------------

    async def inbound(self, request: web.Request) -> web.Response:
        if self._token_domain(request) is not None:
            return error(403, "forbidden", "inbound intake needs an admin token")
        limit = self.app.config.bounces.max_message_size
        raw = await read_body(request, limit)
        if raw is None:
            return error(413, "too_large", f"message is larger than {limit} bytes "
                                           f"(bounces.max_message_size)")
        try:
            # handed in by an admin token: a source the admin trusts
            result = await process(self.app, raw, via="api", trusted_source="admin")
        except InboundError as exc:
            status = 413 if exc.code == "too_large" else 422
            return error(status, exc.code, exc.message)
        return ok(result.as_json())

    # -- suppressions ------------------------------------------------------------------------------

    async def list(self, request: web.Request) -> web.Response:
        q = Query(request, ("scope", "address", "cursor", "limit"))
        own = self._token_domain(request)
        given = q.text("scope", 253)
        scope: str | None
        if own is not None:
            resolved = self._scope(request, given)
            if isinstance(resolved, web.Response):
                return resolved
            scope = resolved
        else:
            scope = scope_value(given)
        page = await self.store.list_suppressions(scope=scope, cursor=q.text("cursor", 1000),
                                                  limit=q.limit(100),
                                                  address=_lower(q.text("address")))
        return ok({"items": [suppression_json(r) for r in page.items],
                   "next_cursor": page.next_cursor})

    async def add(self, request: web.Request) -> web.Response:
        raw = await read_body(request, 64 * 1024)
        if raw is None:
            return error(413, "too_large", "the body is larger than 65536 bytes")
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            return error(400, "bad_request", "the body must be a JSON object")
        if not isinstance(body, dict):
            return error(400, "bad_request", "the body must be a JSON object")
        # as DELETE and the CSV import read one: brackets and spaces around it dropped
        address = normalise_address(_body_text(body, "address", 320) or "")
        if address is None:
            raise BadParameter("address", "expected an email address")
        reason = _body_text(body, "reason", 500) or "added by hand"
        scope = self._scope(request, _body_text(body, "scope", 253))
        if isinstance(scope, web.Response):
            return scope
        added = await self.store.add_suppression(address, scope=scope, reason=reason)
        log.info("suppression_added", by=self._who(request), scope=scope_name(scope),
                 added=added)
        return web.json_response({"added": added, "address": address,
                                  "scope": scope_name(scope), "reason": reason},
                                 status=201 if added else 200)

    async def remove(self, request: web.Request) -> web.Response:
        q = Query(request, ("scope", "note"))
        address = normalise_address(request.match_info["address"])
        if address is None:
            return error(404, "not_found", "no such suppression")
        scope = self._scope(request, q.text("scope", 253))
        if isinstance(scope, web.Response):
            return scope
        removed = await self.store.remove_suppression(
            address, scope=scope, removed_by=self._who(request), note=q.text("note", 500))
        if not removed:
            return error(404, "not_found", "no such suppression")
        log.info("suppression_removed", by=self._who(request), scope=scope_name(scope))
        return ok({"removed": True, "address": address, "scope": scope_name(scope)})

    async def export(self, request: web.Request) -> web.Response:
        q = Query(request, ("scope",))
        own = self._token_domain(request)
        given = q.text("scope", 253)
        scope: str | None = scope_value(given)
        if own is not None:
            resolved = self._scope(request, given)
            if isinstance(resolved, web.Response):
                return resolved
            scope = resolved
        rows = await all_suppressions(self.store, scope)
        return web.Response(text=suppressions_csv(rows), content_type="text/csv",
                            headers={"Content-Disposition":
                                     'attachment; filename="suppressions.csv"'})

    async def import_csv(self, request: web.Request) -> web.Response:
        q = Query(request, ("scope", "reason"))
        default = self._scope(request, q.text("scope", 253))
        if isinstance(default, web.Response):
            return default
        raw = await read_body(request, MAX_IMPORT)
        if raw is None:
            return error(413, "too_large", f"CSV larger than {MAX_IMPORT} bytes")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return error(400, "bad_request", "the CSV must be UTF-8")
        rows, problems = parse_suppressions_csv(text, default, q.text("reason", 500)
                                                or "imported")
        own = self._token_domain(request)
        added = existing = 0
        for address, scope, reason in rows:
            if own is not None and scope != own:
                problems.append(f"{address}: scope {scope_name(scope)} is not this token's")
                continue
            if await self.store.add_suppression(address, scope=scope, reason=reason):
                added += 1
            else:
                existing += 1
        log.info("suppressions_imported", by=self._who(request), added=added,
                 existing=existing, problems=len(problems))
        return ok({"added": added, "existing": existing, "problems": problems[:100]})

    async def removals(self, request: web.Request) -> web.Response:
        q = Query(request, ("limit",))
        if self._token_domain(request) is not None:
            return error(404, "not_found", "no such resource")
        rows = await self.store.list_suppression_removals(limit=q.limit(100))
        return ok({"items": [dict(r, scope=scope_name(r["scope"]),
                                  removed_at=iso_time(r["removed_at"])) for r in rows]})


def _lower(value: str | None) -> str | None:
    return value.strip().lower() if value is not None else None


async def all_suppressions(store: Store, scope: str | None) -> list[SuppressionRow]:
    rows: list[SuppressionRow] = []
    cursor = None
    while True:
        page = await store.list_suppressions(scope=scope, cursor=cursor, limit=5000)
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return rows


def add_deliverability_routes(api: Api, api_app: web.Application, app: App) -> None:
    """Add the routes to the ``/api/v1`` sub-application, behind ``api``'s guard."""
    d = DeliverabilityApi(app)
    for method, path, handler in (
        ("POST", "/inbound", d.inbound),
        ("GET", "/suppressions", d.list),
        ("POST", "/suppressions", d.add),
        ("GET", "/suppressions/export", d.export),
        ("POST", "/suppressions/import", d.import_csv),
        ("GET", "/suppressions/removals", d.removals),
        ("DELETE", "/suppressions/{address}", d.remove),
    ):
        api.add_route(api_app, method, path, handler)
