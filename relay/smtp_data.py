"""Reading a message after DATA's 354 in a few reads instead of one per line.

aiosmtpd reads the message line by line (one ``readuntil`` per line: about 300 awaits
for a 20 KB HTML message, the largest single cost of relaying it). The end of the data
is the line ``.`` (``CRLF . CRLF``, RFC 5321 section 4.1.1.4), and every such line also
ends in ``. CRLF``; so the reader asks the stream for data up to each ``. CRLF`` — a
handful per message, only where a line ends in a dot — and checks whether the dot
starts its line. The bytes after the end stay in the stream for the next command
(pipelining, RFC 2920). Transparency dots are removed afterwards in one pass (RFC 5321
section 4.5.2: a line that starts with a dot has one added by the client).

Only ``CRLF . CRLF`` ends the message (a bare LF never does: no second message can be
smuggled in). For transparency, though, a bare LF ends a line too: a client that sends
bare LFs (RFC 5321 section 2.3.8 forbids them) is one that treats LF as the line end,
Python's smtplib among them, and adds its dot after every LF; Postfix's smtpd reads
such a line the same way, and the relay sends every bare LF on as CRLF. So a dot that
starts a line after a bare LF is a transparency dot and goes.
"""

from __future__ import annotations

import asyncio
import re

_DOT_LINE_END = b".\r\n"
#: Octets kept of data over the size limit: enough to see whether a dot starts its line.
_KEEP = 4
#: A line start after a bare LF (one no CR comes before), with a transparency dot.
_BARE_LF_DOT = re.compile(rb"(?<!\r)\n\.")


async def read_message(reader: asyncio.StreamReader, size_limit: int | None) -> bytes | None:
    """The message up to its final dot, transparency removed; None when it was larger
    than ``size_limit`` octets (read to its end all the same, and discarded, so the
    session stays in step). A stream that ends first raises ``IncompleteReadError``."""
    data = bytearray()
    dropped = 0  # octets discarded once the message was over size_limit
    while True:
        try:
            chunk = await reader.readuntil(_DOT_LINE_END)
            ends_in_dot_line = True
        except asyncio.LimitOverrunError as exc:
            # No ". CRLF" within the stream's limit: take what it holds and go on.
            chunk = await reader.read(exc.consumed)
            ends_in_dot_line = False
        data += chunk
        n = len(data)
        if ends_in_dot_line and ((n == 3 and not dropped) or data[n - 5:n - 3] == b"\r\n"):
            break
        if size_limit and dropped + n > size_limit:
            dropped += n - _KEEP
            del data[:-_KEEP]
    if dropped or (size_limit and len(data) - 3 > size_limit):
        return None
    del data[-3:]  # the final ". CRLF"; the CRLF before it ends the last line
    if data[:1] == b".":
        del data[0]
    message = bytes(data).replace(b"\r\n.", b"\r\n")
    if message.count(b"\n") != message.count(b"\r\n"):  # bare LFs: line ends too
        message = _BARE_LF_DOT.sub(b"\n", message)
    return message
