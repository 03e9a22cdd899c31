"""Bounces from outside the corpus that the parser once read wrongly or in silence.

Each message is built here, small, with the structure that mattered (a 5,000-recipient
report, a report behind a long text part, MIME nested deep, a base64 report part), so
the test says what it checks. Every record must name its recipient: a record naming
nobody can be neither suppressed nor counted.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from io import StringIO
from pathlib import Path

from relay.bounces import classify
from relay.bounces.cli import classify_files
from relay.bounces.mime import MAX_DEPTH, MAX_INPUT, ReadPartly

HEAD = ("From: MAILER-DAEMON@mx.example (Mail Delivery System)\n"
        "To: bounces@mail.shop.example\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n")


def _dsn_block(rcpt: str, status: str = "5.1.1") -> str:
    return (f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n"
            f"Diagnostic-Code: smtp; 550 {status} User unknown\n")


def _report(text: str, report: str, report_headers: str = "") -> bytes:
    return (HEAD + 'Content-Type: multipart/report; report-type=delivery-status; '
            'boundary="B"\n\n--B\nContent-Type: text/plain\n\n' + text
            + "\n--B\nContent-Type: message/delivery-status\n" + report_headers + "\n"
            + report + "\n--B--\n").encode()


def test_every_recipient_of_a_5000_recipient_report_is_read() -> None:
    """The parser used to read the first MiB of a message only: 4,222 of 5,000."""
    rcpts = [f"user{i}@target{i % 50}.example" for i in range(5000)]
    text = "\n".join(f"<{r}>: host mx said: 550 5.1.1 User unknown (in reply to RCPT TO "
                     "command)\n" for r in rcpts)
    report = "Reporting-MTA: dns; mx.example\n\n" + "\n".join(_dsn_block(r) for r in rcpts)
    raw = _report(text, report)
    assert len(raw) > MAX_INPUT
    records = classify(raw)
    assert [r.recipient for r in records] == rcpts
    assert {r.reason for r in records} == {"userunknown"}


def test_a_report_behind_a_long_text_part_is_found() -> None:
    """A text part over MAX_INPUT before the report: the report is still read."""
    filler = "lorem ipsum user unknown mailbox full 550 5.1.1\n" * (2 * MAX_INPUT // 48)
    raw = _report(filler, "Reporting-MTA: dns; mx.example\n\n" + _dsn_block("big@target.example"))
    records = classify(raw)
    assert [(r.recipient, r.reason) for r in records] == [("big@target.example", "userunknown")]


def _nested(levels: int) -> bytes:
    out = HEAD + 'Content-Type: multipart/mixed; boundary="b0"\n\n'
    for i in range(1, levels + 1):
        out += f'--b{i - 1}\nContent-Type: multipart/mixed; boundary="b{i}"\n\n'
    out += (f"--b{levels}\nContent-Type: message/delivery-status\n\n"
            "Reporting-MTA: dns; mx.example\n\n" + _dsn_block("deep@target.example") + "\n")
    out += "".join(f"--b{i}--\n" for i in range(levels, -1, -1))
    return out.encode()


def test_a_report_nested_twenty_levels_deep_is_found() -> None:
    records = classify(_nested(20))
    assert [(r.recipient, r.reason) for r in records] == [("deep@target.example",
                                                           "userunknown")]


def test_nesting_past_the_limit_gives_no_record_and_says_why() -> None:
    notes: list[ReadPartly] = []
    records = classify(_nested(MAX_DEPTH + 10), notes=notes)
    assert records == []
    assert "nesting" in {n.code for n in notes}


def test_thousands_of_levels_say_why_too() -> None:
    """Deeper than the standard library's recursive parser goes: still a note."""
    notes: list[ReadPartly] = []
    assert classify(_nested(3000), notes=notes) == []
    assert [n.code for n in notes] == ["nesting"]


def _multipart(*parts: tuple[str, str]) -> bytes:
    body = "".join(f"--B\n{headers}\n\n{text}\n" for headers, text in parts)
    return (HEAD + 'Content-Type: multipart/report; report-type=delivery-status; '
            f'boundary="B"\n\n{body}--B--\n').encode()


def _broken_base64(data: str) -> str:
    """``data`` in base64 with junk inside and its last characters lost."""
    encoded = base64.b64encode(data.encode()).decode()
    encoded = encoded[:30] + "!!!@@@" + encoded[30:-7] + "%%%"
    return "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))


def test_a_base64_report_part_with_a_broken_end_is_decoded() -> None:
    """RFC 2046 forbids base64 for message/*, some servers use it (and cut it short):
    the notice names nobody, so the recipient is the report's or no one's."""
    report = ("Reporting-MTA: dns; mx.example\r\n\r\n"
              + _dsn_block("b64@target.example").replace("\n", "\r\n"))
    raw = _multipart(("Content-Type: text/plain", "Delivery has failed."),
                     ("Content-Type: message/delivery-status\n"
                      "Content-Transfer-Encoding: base64", _broken_base64(report)))
    records = classify(raw)
    assert [(r.recipient, r.status) for r in records] == [("b64@target.example", "5.1.1")]


def test_a_broken_base64_notice_is_read_as_far_as_it_decodes() -> None:
    notice = ("<b64@target.example>: host mx said: 550 5.1.1 User unknown (in reply to "
              "RCPT TO command)\n\n-- the mail system\n")
    raw = _multipart(("Content-Type: text/plain; charset=utf-8\n"
                      "Content-Transfer-Encoding: base64", _broken_base64(notice)))
    records = classify(raw)
    assert [(r.recipient, r.reason) for r in records] == [("b64@target.example",
                                                           "userunknown")]


def test_a_failure_naming_nobody_gives_no_record_but_a_note() -> None:
    raw = (HEAD + "Content-Type: text/plain\n\n"
           "Your message could not be delivered: 550 5.1.1 User unknown.\n").encode()
    notes: list[ReadPartly] = []
    assert classify(raw, notes=notes) == []
    (note,) = notes
    assert note.code == "no_recipient"
    # The verdict is kept for the intake's VERP path, never output as a record.
    assert [(r.recipient, r.reason) for r in note.unnamed] == [("", "userunknown")]


def test_no_record_ever_names_nobody() -> None:
    for raw in (_nested(MAX_DEPTH + 10), _nested(200)):
        assert all(r.recipient for r in classify(raw))


# --- the command ------------------------------------------------------------------------


def test_classify_command_refuses_garbage_with_one_line_each(tmp_path: Path) -> None:
    files = {"empty.eml": b"", "nul.eml": b"\0" * 1000,
             "garbage.eml": bytes(range(256)) * 40}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    good = tmp_path / "good.eml"
    good.write_bytes(_nested(2))
    out, err = StringIO(), StringIO()
    paths = [str(tmp_path / n) for n in files] + [str(good)]
    assert classify_files(paths, out, err=err) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 3
    for name, line in zip(files, lines, strict=True):
        assert name in line and "refused" in line
    assert "empty" in lines[0] and "not_a_message" in lines[1] and "not_a_message" in lines[2]
    assert '"deep@target.example"' in out.getvalue()  # the others are still classified


def test_classify_command_applies_max_message_size(tmp_path: Path) -> None:
    path = tmp_path / "big.eml"
    path.write_bytes(_nested(2))
    err = StringIO()
    assert classify_files([str(path)], StringIO(), limit=100, err=err) == 1
    assert "too_large" in err.getvalue() and "bounces.max_message_size" in err.getvalue()


def test_classify_command_says_what_it_could_not_read(tmp_path: Path) -> None:
    path = tmp_path / "deep.eml"
    path.write_bytes(_nested(MAX_DEPTH + 10))
    out, err = StringIO(), StringIO()
    assert classify_files([str(path)], out, err=err) == 0
    assert out.getvalue() == ""
    assert "read in part: nesting" in err.getvalue()


def test_classify_command_exit_code_and_config_limit(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("[bounces]\nmax_message_size = 200\n")
    big = tmp_path / "big.eml"
    big.write_bytes(_nested(2))
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "bounces", "classify", "-c", str(config),
         str(big), str(empty)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "too_large" in lines[0] and "empty" in lines[1]
    assert proc.stdout == ""


def test_a_diagnostic_folded_over_many_lines_is_read_whole() -> None:
    """A Diagnostic-Code folded over 20,000 continuation lines (the bounce listener takes
    reports from anyone) is one value, its words all read (bench/hostile_inputs.py
    times it, linear, at 100,000 and 400,000 lines)."""
    from relay.bounces.dsn import parse_fields
    text = ("Final-Recipient: rfc822; gone@example.net\nAction: failed\nStatus: 5.0.0\n"
            "Diagnostic-Code: smtp; 550" + "\n padding" * 20_000 + "\n user unknown\n")
    [record] = parse_fields(text).recipients
    assert record.recipient == "gone@example.net"
    assert record.diagnostic.endswith("padding user unknown")
    assert record.diagnostic.count("padding") == 20_000


def test_a_header_field_folded_over_many_lines_is_one_field() -> None:
    from relay.message import header_fields
    block = b"Subject: x\r\n" + b" y\r\n" * 20_000 + b"From: a@example.com\r\n"
    fields = header_fields(block)
    assert [f[:8] for f in fields] == [b"Subject:", b"From: a@"]
    assert fields[0] == b"Subject: x\r\n" + b" y\r\n" * 20_000
