"""An upstream SMTP server in a process of its own that writes down what it accepted.

    python -m tests.sink_server --port PORT --out FILE

One JSON line per message accepted, written before its 250 goes out: the Message-ID
header, the envelope recipients, and the pixel and click paths found in the HTML part
(``/o/<token>.gif``, ``/c/<token>``), so a test can act as the recipient. Used by
tests/test_several_hosts.py and bench/several_hosts.py (aiosmtpd, as the ``sink``
fixture, but out of the test's own event loop: the load would slow it down)."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import re
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_PIXEL = re.compile(r"/o/[A-Za-z0-9_-]+\.gif")
_CLICK = re.compile(r"/c/[A-Za-z0-9_-]+")


class Recorder:
    def __init__(self, out: str) -> None:
        self.fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.ids = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or b"")
        msg: Any = email.message_from_bytes(raw, policy=email.policy.default)
        html = next((p.get_content() for p in msg.walk()
                     if p.get_content_type() == "text/html"), "")
        pixel, click = _PIXEL.search(html), _CLICK.search(html)
        line = json.dumps({"message_id": str(msg.get("Message-ID", "")),
                           "rcpt": list(envelope.rcpt_tos),
                           "pixel": pixel.group(0) if pixel else None,
                           "click": click.group(0) if click else None})
        os.write(self.fd, line.encode() + b"\n")
        return f"250 2.0.0 Ok: queued as S{next(self.ids)}"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    recorder = Recorder(args.out)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="sink.test", data_size_limit=None,
                     decode_data=False), "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
