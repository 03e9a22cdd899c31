"""Rules that hold across mail servers, each on bounce texts written for the test in the
style of the documented format (the docstring of each test names the document).

They complement ``test_bounce_decide.py`` (one test per step of the precedence): here
each test pins one generic rule of the tables, with a counter-example where the rule
must not fire.
"""

from __future__ import annotations

import pytest

from relay.bounces.classify import classify_reply
from tests.test_bounce_decide import dsn, one


def reason_of(text: str, *, reply: str | None = "550", status: str | None = None,
              command: str | None = "RCPT") -> str:
    """The reason the one decision path gives a refusal seen first-hand."""
    return classify_reply(reply, status, text, command, "rcpt@example.net")[0]


# --- the order of phrases ----------------------------------------------------------------------


def test_a_spam_verdict_beats_a_filter_product_s_name_that_mentions_viruses() -> None:
    """Barracuda's notice names its product, the "Spam & Virus Firewall"; amavisd-new's
    spam verdict is "Message content rejected, UBE" and its virus verdict "INFECTED"
    (amavisd-new documentation, README.customize)."""
    notice = ("Your message to: rcpt@example.net was blocked by our Spam & Virus Firewall.\n"
              "The email you sent with the following subject has not been delivered:\n")
    rec = one(dsn("550 5.7.1 Message content rejected", status="5.7.1", notice=notice))
    assert rec.reason == "spamdetected"
    assert reason_of("554 5.7.0 Reject, id=12345-01 - INFECTED: Eicar-Test-Signature",
                     status="5.7.0", command="DATA") == "virusdetected"


def test_a_stated_expiry_beats_the_network_error_behind_the_retries() -> None:
    """Exchange Online "550 5.4.316 Message expired, connection refused" and OpenSMTPD
    "Envelope expired" report the end of the retry period (RFC 3463 X.4.7); the
    connection refusal alone is a network error."""
    # Not from a Microsoft host: the generic words decide, not the provider's table.
    rec = one(dsn("550 5.4.316 Message expired, connection refused(Socket error code 10061)",
                  status="5.4.316", remote="mx.example.net"))
    assert rec.reason == "expired" and rec.decided_by.startswith("phrase:expired:")
    assert reason_of("connect to mx.example.net[192.0.2.9]:25: Connection refused",
                     reply=None, status="4.4.1", command=None) == "networkerror"
    assert reason_of("Envelope expired", reply=None, status=None, command=None) == "expired"


# --- enhanced status code subjects against reply codes -----------------------------------------


def test_a_specific_reply_code_beats_the_subject_of_an_unlisted_enhanced_code() -> None:
    """RFC 7504: 521 "host does not accept mail" is one meaning; an unlisted X.3.x code
    only says "mail system status" (RFC 3463 section 3.1)."""
    rec = one(dsn("521 5.3.99 nope", status="5.3.99"))
    assert (rec.reason, rec.decided_by) == ("notaccept", "tiebreak:*:521")


def test_the_subject_of_an_enhanced_code_beats_a_range_of_reply_codes() -> None:
    """RFC 5321 500-504 are syntax errors in general; an X.6.x code says the content was
    refused (RFC 3463 section 3.7), which is more precise."""
    rec = one(dsn("500 5.6.99 refused", status="5.6.99", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("contenterror", "status:X.6.*")
    # Without an enhanced code that says more, the reply range speaks.
    rec = one(dsn("500 refused", status="5.0.0", command="end of DATA"))
    assert (rec.reason, rec.decided_by) == ("syntaxerror", "tiebreak:*:50")


@pytest.mark.parametrize("code", ["5.3.99", "5.6.99", "5.7.99"])
def test_every_code_of_a_subject_has_the_subject_s_row(code: str) -> None:
    from relay.bounces.rules import ruleset

    rules = ruleset()
    row = rules.subject_row(code)
    assert row is not None and row.code == "X" + code[1:4] + "*"
