"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Why: the CSV exports (grouped stats, the suppression list) carry text that senders and
scoped API users write (campaign names, suppression reasons, addresses), and a cell
beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets: ``=HYPERLINK(...)`` planted in a reason would run
in the admin's spreadsheet. OWASP's "CSV Injection" advice: begin such a cell with a
single quote, which the spreadsheet shows as text. Numbers are written as they are.
Reading a CSV back (the suppression import) takes the quote off again.
"""

from __future__ import annotations

from typing import Any

#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: Any) -> Any:
    """``value`` for a CSV cell: text that would begin a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def read_cell(value: str) -> str:
    """A cell as ``text_cell`` wrote it, back to the text it was."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value
