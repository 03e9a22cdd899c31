"""Bounce classification on SMTP replies written outside the corpus.

About 280 replies as servers word them, written from the providers' and MTAs' public
documentation and RFC texts (Microsoft 365's NDR reference, Gmail's and Yahoo's SMTP
error pages, Postfix, Exim, Sendmail, qmail, gateways, greylisting, SPF/DKIM/DMARC, TLS),
each with the reason its cause has under the taxonomy (``tests/corpus/PROVENANCE.md``)
and whether it is hard, and the source it was written from. None was taken from the
corpus or written to match a table entry: a second, independent check that the rules
hold on wording they were not fitted to. The rows are ``bench/data/bounce_replies.jsonl``;
a row may accept several reasons where the text is ambiguous (``hard`` null: they differ
on hard/soft).

Each reply goes through ``relay.bounces.classify.classify_reply``, the path the relay's
own upstream refusals take. Prints the agreement on reason and on hard/soft, the rows
that disagree (``--show``), and how many soft refusals were called hard (a good address
suppressed) and hard ones soft.

    python3 bench/bounce_replies.py [--show]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from relay.bounces.classify import classify_reply

DATA = Path(__file__).parent / "data" / "bounce_replies.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--show", action="store_true", help="print every row that disagrees")
    args = ap.parse_args()
    reason_ok = hard_ok = soft_as_hard = hard_as_soft = 0
    started = time.perf_counter()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        code, status, text, command = row["code"], row["status"], row["text"], row["command"]
        accepted, hard, source = tuple(row["reasons"]), row["hard"], row["source"]
        reason, got_hard, by = classify_reply(code, status, text, command, "jdoe@example.org")
        r_ok = reason in accepted
        h_ok = hard is None or got_hard == hard
        reason_ok += r_ok
        hard_ok += h_ok
        soft_as_hard += hard is False and got_hard
        hard_as_soft += hard is True and not got_hard
        if args.show and not (r_ok and h_ok):
            print(f"{code} {status} {command}: {text[:160]!r}\n  expected "
                  f"{'/'.join(accepted)} hard={hard}; got {reason} hard={got_hard} ({by})\n"
                  f"  source: {source}")
    elapsed = time.perf_counter() - started
    n = len(rows)
    print(f"replies: {n}")
    print(f"reason agreement:    {reason_ok / n:7.2%}  ({reason_ok} of {n})")
    print(f"hard/soft agreement: {hard_ok / n:7.2%}  ({hard_ok} of {n}); soft called hard "
          f"{soft_as_hard}, hard called soft {hard_as_soft}")
    print(f"speed: {n / elapsed:,.0f} replies/s (one pass, one process)")


if __name__ == "__main__":
    main()
