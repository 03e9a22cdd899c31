"""A message on its way upstream, as plugins see it in ``trackrelay_transform_message``.

It edits the raw bytes in place of re-serialising through ``email``: header edits
touch only the header lines named, the body is replaced whole or not at all, so
everything a plugin did not change leaves byte-for-byte as it came in (DESIGN #2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.header import decode_header, make_header

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_message(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (header block, separator, body); a message with no body has b"" for both.

    A message that starts with a line break has no header fields: that line break is the
    blank line, and what follows it, another line break included, is the body
    (RFC 5322 section 2.1)."""
    for nl in (b"\r\n", b"\n"):
        if raw.startswith(nl):
            return b"", nl, raw[len(nl):]
    m = _HEADER_END.search(raw)
    if m is None:
        return raw, b"", b""
    # The separator is the line break ending the last header plus the empty line.
    return raw[: m.start()], raw[m.start(): m.end()], raw[m.end():]


#: The start of a line that ends the header block: neither a field (a name of printable
#: ASCII but the colon, RFC 5322 section 3.6.8, white space before the colon allowed as
#: its obsolete syntax, section 4.5) nor a continuation line (section 2.2.3), nor the
#: "From " line of the mbox format (which Python's email and dkimpy pass over).
_NOT_A_FIELD = re.compile(rb"^(?![ \t]|[\x21-\x39\x3b-\x7e]+[ \t]*:|From |\r?\n|\r?\Z)",
                          re.MULTILINE)


def header_end(head: bytes) -> int | None:
    """Where the header fields of ``head`` (a header block) end, when a line in it is
    neither a field nor a continuation; None when every line is one.

    Readers end the header block at such a line (Python's email with a
    ``MissingHeaderBodySeparatorDefect``; RFC 5322 section 2.1 has the body follow the
    fields): the line and everything after it are the body as the recipient sees it."""
    m = _NOT_A_FIELD.search(head)
    return None if m is None else m.start()


def split_fields(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header fields, separator, body) as a recipient's reader finds them: as
    ``split_message``, but when a line of the header block is neither a field nor a
    continuation (``header_end``) the fields end before it, the separator is b"" and the
    body starts with that line."""
    head, sep, body = split_message(raw)
    end = header_end(head)
    if end is None:
        return head, sep, body
    return head[:end], b"", head[end:] + sep + body


def _header_lines(block: bytes) -> list[bytes]:
    """Split a header block into logical headers (continuation lines kept attached)."""
    # Each field's lines are gathered and joined once (adding to a list's last bytes
    # copies them each time: quadratic in a field folded over a million lines).
    fields: list[list[bytes]] = []
    for line in re.split(rb"(?<=\n)", block) if block else []:
        if not line:
            continue
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    return [b"".join(f) if len(f) > 1 else f[0] for f in fields]


def header_fields(block: bytes) -> list[bytes]:
    """The header fields of a header block, each with its continuation lines, as bytes."""
    return _header_lines(block)


class MessageDraft:
    """The bytes that will be sent upstream, with header and body edits that keep fidelity."""

    def __init__(self, raw: bytes) -> None:
        self.original = raw
        # A header block that ends at a line that is no field (``header_end``) ends there
        # for every reader downstream: fields the relay adds go before that line, and
        # what follows it is body, never read (or removed) as fields.
        head, sep, body = split_fields(raw)
        #: True when the body follows the fields with no blank line between.
        self._no_blank_line = not sep and bool(body)
        self._headers = _header_lines(head)
        self._sep = sep or (b"\r\n" if raw.endswith(b"\r\n") or not raw else b"\n")
        self._had_body = bool(sep)
        self._body = body
        first_eol = raw.find(b"\n")
        bare_lf = first_eol > 0 and raw[first_eol - 1:first_eol] != b"\r"
        self._newline = b"\n" if bare_lf else b"\r\n"
        if self._headers and not self._headers[-1].endswith(b"\n"):
            self._headers[-1] += self._newline
        #: Lower-cased names of ``_headers``, found on first use (several plugins look up
        #: headers in every message); None again after each header edit.
        self._names: list[bytes] | None = None
        self.changed = False

    # --- headers -------------------------------------------------------------------------

    def _name(self, line: bytes) -> bytes:
        """The field name of a header line; b"" for a line with no colon, which is no
        header field (RFC 5322 section 2.2) and so answers to no name."""
        name, colon, _ = line.partition(b":")
        return name.strip().lower() if colon else b""

    def _header_names(self) -> list[bytes]:
        if self._names is None:
            self._names = [self._name(line) for line in self._headers]
        return self._names

    def get_all(self, name: str) -> list[str]:
        """Values of every header called ``name``, unfolded and RFC 2047-decoded."""
        want = name.lower().encode()
        names = self._header_names()
        if want not in names:
            return []
        out = []
        for line, line_name in zip(self._headers, names, strict=True):
            if line_name == want:
                value = line.split(b":", 1)[1].decode("utf-8", "replace")
                value = re.sub(r"\r?\n[ \t]", " ", value).strip()
                if "=?" in value:  # only RFC 2047 encoded words need decoding
                    try:
                        value = str(make_header(decode_header(value)))
                    except Exception:  # a malformed encoded word: keep the raw text
                        pass
                out.append(value)
        return out

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (unfolded, decoded as text), or ``default``."""
        values = self.get_all(name)
        return values[0] if values else default

    def remove_header(self, name: str) -> int:
        """Drop every header called ``name``; returns how many were removed."""
        want = name.lower().encode()
        names = self._header_names()
        if want not in names:
            return 0
        before = len(self._headers)
        self._headers = [h for h, n in zip(self._headers, names, strict=True) if n != want]
        self._names = None
        self.changed = True
        return before - len(self._headers)

    def header_block(self) -> bytes:
        """The header fields as they will be sent, each with its line ending (the blank
        line after them not included)."""
        return b"".join(self._headers)

    @property
    def newline(self) -> bytes:
        """The message's line ending (CRLF, or LF for a message written with bare LFs)."""
        return self._newline

    def edit_header_block(self, edit: Callable[[bytes], bytes]) -> None:
        """Replace the header block (its fields, with line endings) by ``edit(block)``."""
        block = b"".join(self._headers)
        new = edit(block)
        if new != block:
            self._headers = _header_lines(new)
            self._names = None
            self.changed = True

    def add_header(self, name: str, value: str) -> None:
        """Append a header at the end of the header block (values must be ASCII-safe)."""
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError("header names and values cannot contain line breaks")
        self._headers.append(f"{name}: {value}".encode() + self._newline)
        self._names = None
        self.changed = True

    def prepend_header(self, name: str, value: str) -> None:
        """Insert a header at the top (trace-style headers such as Received go first)."""
        if "\r" in value or "\n" in value:
            raise ValueError("header values cannot contain line breaks")
        self._headers.insert(0, f"{name}: {value}".encode() + self._newline)
        self._names = None
        self.changed = True

    # --- body ----------------------------------------------------------------------------

    @property
    def body(self) -> bytes:
        """The body's bytes as they will be sent (after the blank line)."""
        return self._body

    def set_body(self, body: bytes) -> None:
        """Replace the whole body (keep the MIME structure valid: the headers stay)."""
        if body != self._body:
            self._body = body
            self._had_body = True
            self.changed = True

    def as_bytes(self) -> bytes:
        """The whole message to send: the original bytes when nothing changed."""
        if not self.changed:
            return self.original
        head = b"".join(self._headers)
        if self._no_blank_line:
            first = self._body[:self._body.find(b"\n") + 1 or len(self._body)]
            if header_end(first) == 0:  # still a line no reader takes for a field
                return head + self._body
            # An edit made the body's first line read as a field (quoted-printable's
            # "=80Content-Type: …"): the blank line (RFC 5322 section 2.1) keeps the
            # fields ending where they did; the body is the same to every reader.
            return head + self._newline + self._body
        if not self._had_body:
            return head
        # The header block's last line already ends with a newline; add the blank line.
        if head.endswith(b"\n"):
            return head + self._newline + self._body
        return head + self._sep + self._body
