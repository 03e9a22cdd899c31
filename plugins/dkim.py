"""Built-in plugin ``dkim``: never break what the sender signed (RFC 6376).

It looks last (``trylast``) at the bytes about to go upstream
(``trackrelay_outgoing_message``). When the relay changed a message that arrived with
DKIM signatures, each signature that looks valid is checked against the changed bytes
(``relay/signatures.py`` says exactly when a change breaks one). If the change breaks
any of them:

* when ``[[dkim.keys]]`` has a key for the domain (``d=``) of every broken signature,
  each broken signature is removed and a new one by that domain's key goes on top. It
  signs the header names the old one signed (in order, repeats kept, so oversigning
  stays) plus the fields the relay added (such as List-Unsubscribe, which RFC 8058
  wants signed), in the old one's canonicalisation, never with ``l=``. The result is
  verified against each key's public half, and every signature the change did not break
  is checked again, before it goes; if any of that fails, the original goes instead
  (``sign_failed``, logged as an error). Several broken signatures of one domain get one
  new signature, with the parameters of the topmost;
* otherwise the message goes out exactly as received: nothing in it is tracked, and a
  message that was to be tracked is recorded with skip reason ``dkim_signed``.

Why a broken signature is removed rather than kept beside the new one: a verifier
judges each signature on its own (RFC 6376 §6.1) and DMARC passes on any aligned one
that verifies (RFC 7489 §4.2), so keeping it would not fail the message; but it would
show as ``dkim=fail`` in every Authentication-Results header, some filters score a
failing signature, and it vouches for nothing. Keeping the signer's domain keeps DMARC
alignment: the new signature is by the same domain the old one was.

A message whose signatures all failed before it arrived (wrong body hash, malformed,
expired) is changed as usual (``invalid``): there is nothing left to break.

Whatever it decides for a message with a signature that looks valid (untouched,
re-signed, intact, or nothing changed) is frozen (``outgoing.freeze``): a plugin that
runs after it and tries to change the bytes raises ``FrozenMessage``, a plugin failure,
so the original goes (or the client gets a 451), never a broken signature. The
implementation is a coroutine so that it runs as late as the plugin host allows: after
every synchronous implementation, every hook wrapper and every coroutine called before
it; only a ``trylast`` implementation registered after it comes later, and finds the
bytes frozen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from relay import hookimpl
from relay.config import ConfigError
from relay.logs import get_logger
from relay.metrics import DKIM_MESSAGES
from relay.outgoing import OutgoingMessage
from relay.records import Transaction
from relay.signatures import (
    Parsed,
    Signature,
    SigningKey,
    Unreadable,
    added_names,
    breaks,
    has_signature,
    load_key,
    remove_fields,
    sign,
    survey,
    verifies,
)

if TYPE_CHECKING:
    from relay.app import App

log = get_logger("plugins.dkim")

SKIP_REASON = "dkim_signed"

_KEYS: WeakKeyDictionary[App, dict[str, SigningKey]] = WeakKeyDictionary()


def signing_keys(app: App) -> dict[str, SigningKey]:
    """The ``[[dkim.keys]]`` of ``app``'s config, read once, by lower-case domain."""
    found = _KEYS.get(app)
    if found is None:
        found = {}
        for i, k in enumerate(app.config.dkim.keys):
            try:
                key = load_key(k.key_file, k.domain, k.selector)
            except ValueError as exc:
                raise ConfigError(f"dkim.keys[{i}].key_file: {exc}") from None
            found[key.domain] = key
        _KEYS[app] = found
    return found


@hookimpl
def trackrelay_startup(app: App) -> None:
    for key in signing_keys(app).values():
        # The record to publish (or compare with what is published) for this key.
        log.info("dkim_key", domain=key.domain, selector=key.selector, bits=key.bits,
                 dns_name=key.dns_name, record=key.record.decode())


@hookimpl(trylast=True)
async def trackrelay_outgoing_message(app: App, transaction: Transaction,
                                      outgoing: OutgoingMessage) -> None:
    if not has_signature(outgoing.original):
        return
    try:
        before = Parsed(outgoing.original)
    except Unreadable as exc:
        # A header block dkimpy cannot read: whether its signature holds is unknowable.
        if outgoing.changed:
            _keep(outgoing, transaction, "untouched", why=f"unreadable header: {exc}")
        else:
            outgoing.freeze(SKIP_REASON)
        return
    found = survey(before)
    if not found.valid:
        if outgoing.changed:
            DKIM_MESSAGES.labels("invalid").inc()
            log.info("dkim", txn=transaction.id, result="invalid", signatures=found.invalid)
        return
    # From here on the signatures that look valid go out intact or re-signed, and no
    # plugin after this one may change the bytes that were checked.
    if not outgoing.changed:
        outgoing.freeze(SKIP_REASON)
        return
    try:
        after: Parsed | None = Parsed(outgoing.data)
    except Unreadable:
        after = None
    broken = {}
    for sig in found.valid:
        why = "unreadable header" if after is None else breaks(sig, before, after)
        if why is not None:
            broken[sig] = why
    if not broken:
        outgoing.freeze(SKIP_REASON)
        DKIM_MESSAGES.labels("intact").inc()
        log.info("dkim", txn=transaction.id, result="intact",
                 domains=sorted({s.domain for s in found.valid}))
        return
    keys = signing_keys(app)
    described = [f"d={s.domain} s={s.selector}: {why}" for s, why in broken.items()]
    missing = sorted({s.domain for s in broken if s.domain not in keys})
    if missing:
        _keep(outgoing, transaction, "untouched", broken=described, no_key_for=missing)
        return
    try:
        data = _resign(outgoing.data, before, after, list(broken), found.valid, keys)
        error = None if data is not None else "a signature did not verify after signing"
    except Exception as exc:  # dkimpy's, or a message it cannot sign: the original goes
        data, error = None, f"{type(exc).__name__}: {exc}"
    if data is None:
        _keep(outgoing, transaction, "sign_failed", broken=described, error=error)
        return
    outgoing.data = data
    outgoing.freeze(SKIP_REASON)
    DKIM_MESSAGES.labels("resigned").inc()
    log.info("dkim", txn=transaction.id, result="resigned", broken=described,
             signed_by=sorted({s.domain for s in broken}))


def _keep(outgoing: OutgoingMessage, transaction: Transaction, result: str,
          **detail: object) -> None:
    outgoing.keep_original(SKIP_REASON)
    DKIM_MESSAGES.labels(result).inc()
    if result == "sign_failed":
        log.error("dkim", txn=transaction.id, result=result, action="forwarded untouched",
                  **detail)
    else:
        log.info("dkim", txn=transaction.id, result=result, action="forwarded untouched",
                 **detail)


def _resign(data: bytes, before: Parsed, after: Parsed | None, broken: list[Signature],
            valid: list[Signature], keys: dict[str, SigningKey]) -> bytes | None:
    """``data`` with the ``broken`` signatures replaced by the domains' own keys' (one per
    domain, on top); None when a new signature does not verify or a kept one broke."""
    out = remove_fields(data, [s.value for s in broken])
    # What the relay added (DKIM-Signature fields, which remove_fields took, never count).
    added = added_names(before, after if after is not None else Parsed(out))
    first: dict[str, Signature] = {}
    for sig in broken:
        first.setdefault(sig.domain, sig)
    for domain, like in first.items():
        out = sign(out, keys[domain], like, added) + out
    # The last field signed is on top (index 0); check each against its key.
    for index, domain in enumerate(reversed(first)):
        if not verifies(out, index, keys[domain]):
            return None
    kept = [sig for sig in valid if sig not in broken]
    if kept:
        final = Parsed(out)
        if any(breaks(sig, before, final) for sig in kept):
            return None
    return out
