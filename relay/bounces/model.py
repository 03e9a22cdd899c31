"""The record one classified recipient becomes, and its JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Reasons that mean "this address will never work" (``notaccept`` only with a 5xx).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


@dataclass(slots=True)
class BounceRecord:
    """One recipient named by a bounce, complaint, auto-reply or success/delay DSN.

    ``kind`` tells the caller what to do with it: only ``bounce`` (and ``complaint``)
    records should ever feed a suppression list; ``delayed``/``delivered`` DSNs and
    ``autoreply`` messages are informational.
    """

    recipient: str
    status: str | None = None
    reply_code: str | None = None
    reason: str = "undefined"
    hard: bool = False
    permanent: bool = False
    action: str = "failed"
    diagnostic: str = ""
    feedback_type: str | None = None
    remote_mta: str | None = None
    original_message_id: str | None = None
    kind: str = "bounce"
    #: The address the failed one was expanded or forwarded from (``Original-Recipient``,
    #: "expanded from <x>"), when the report names one that differs.
    alias: str | None = None
    #: Which table entry decided the reason (``status:X.1.1``, ``phrase:<reason>:<words>``,
    #: ``provider:<name>:...``, ``tiebreak:...``, ``hint:...``, ``fallback:...``).
    decided_by: str = ""


def wrong_records(answer: object) -> str | None:
    """What is wrong with a ``trackrelay_classify_bounce`` answer that is not ``None``
    (``None``: nothing). Only a list of ``BounceRecord`` replaces the built-in records:
    anything else (a string, whose every character would become a "record"; dicts; a
    tuple) is the plugin's mistake, and the built-in records stand."""
    if isinstance(answer, list) and all(isinstance(r, BounceRecord) for r in answer):
        return None
    return "a list of BounceRecord, or None"


def is_hard(reason: str, status: str | None, reply_code: str | None) -> bool:
    """A hard bounce is one where retrying the same address can never succeed.

    A pure function of the reason: only an unknown user, an unknown domain or a moved
    mailbox say that about the address itself; a domain that accepts no mail does so
    only when the refusal is permanent (5xx). Every other refusal, permanent or not (a
    full mailbox, a block, a policy), is soft: the address may work tomorrow.
    """
    if reason in HARD_REASONS:
        return True
    if reason == "notaccept":
        code = reply_code or status or ""
        return code.startswith("5")
    return False


def to_json(record: BounceRecord, file: str | None = None) -> dict[str, Any]:
    """Return the record as a JSON-ready dict (plus ``file`` when given), for CLI and API."""
    data = asdict(record)
    if file is not None:
        data["file"] = file
    return data
