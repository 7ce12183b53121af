"""Gift cards: issue, activate, check the balance with a PIN, redeem, refund.

PINs are stored as Argon2id hashes. Wrong PINs are counted per card and per terminal in the
database (fixed one-hour windows), so the limits hold across every API process: after
``CARD_FAILURES`` wrong PINs a card refuses every PIN until the window ends, and a terminal
after ``TERMINAL_FAILURES`` (it also pays for unknown card numbers, so numbers cannot be
enumerated). A refused PIN is *returned* as a refusal, not raised, because the failure count
must commit with the caller's transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TactfulError,
    TooManyRequests,
    ValidationFailed,
)
from tactful.customers.service import get_customer
from tactful.events.service import CustomerEvent, record_customer_events
from tactful.loyalty.models import (
    CARD_ACTIVATION,
    CARD_ACTIVE,
    CARD_ISSUED,
    CARD_REDEMPTION,
    CARD_REFUND,
    GiftCard,
    GiftCardEntry,
)
from tactful.loyalty.service.events import GIFT_CARD_USED
from tactful.loyalty.store import cards as card_store
from tactful.tenancy.service import get_brand, get_workspace, record_audit

NUMBER_DIGITS = 16
PIN_DIGITS = 6
CARD_FAILURES = 5
TERMINAL_FAILURES = 20
WINDOW = timedelta(hours=1)
MAX_ISSUE = 100
MAX_YEARS = 100  # how far ahead an expiry date may be (far later ones overflow dates)
# OWASP's Argon2id minimum (19 MiB, 2 passes): a guess costs an attacker, a check stays fast
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass(frozen=True)
class Issued:
    card: GiftCard
    pin: str


@dataclass(frozen=True)
class Outcome:
    """A gift-card operation's result; ``refusal`` set means a PIN was refused (recorded)."""

    card: GiftCard | None
    entry: GiftCardEntry | None = None
    replayed: bool = False
    refusal: TactfulError | None = None


def issue_gift_cards(
    session: Session,
    *,
    workspace_id: int,
    amount: int,
    count: int,
    actor: str,
    brand_id: int | None = None,
    currency: str | None = None,
    expires_on: date | None = None,
    customer_id: int | None = None,
) -> list[Issued]:
    """Issue cards (not spendable until activated at a sale); each PIN is shown once."""
    if not 1 <= count <= MAX_ISSUE:
        raise ValidationFailed(f"issue 1 to {MAX_ISSUE} cards at a time", field="count")
    if amount <= 0:
        raise ValidationFailed("a gift card holds a positive amount", field="amount")
    workspace = get_workspace(session, workspace_id)
    if brand_id is not None:
        get_brand(session, workspace_id=workspace_id, brand_id=brand_id)
    if customer_id is not None:
        customer_id = get_customer(session, workspace_id=workspace_id, customer_id=customer_id).id
    now = clock.now()
    expires_at = None
    if expires_on is not None:
        today = now.astimezone(ZoneInfo(workspace.timezone)).date()
        if expires_on <= today:
            raise ValidationFailed("the expiry date must be in the future", field="expires_on")
        if expires_on.year > today.year + MAX_YEARS:
            raise ValidationFailed(
                f"the expiry date must be at most {MAX_YEARS} years ahead", field="expires_on"
            )
        # valid through the whole expiry day in the workspace's time zone
        day_after = datetime(expires_on.year, expires_on.month, expires_on.day)  # noqa: DTZ001
        expires_at = (day_after + timedelta(days=1)).replace(tzinfo=ZoneInfo(workspace.timezone))
    numbers: set[str] = set()
    while len(numbers) < count:
        wanted = {_random_digits(NUMBER_DIGITS) for _ in range(count - len(numbers))}
        numbers |= wanted - card_store.gift_card_numbers_taken(
            session, workspace_id, sorted(wanted)
        )
    issued = []
    for number in sorted(numbers):
        pin = _random_digits(PIN_DIGITS)
        card = GiftCard(
            workspace_id=workspace_id,
            brand_id=brand_id,
            number=number,
            pin_hash=_HASHER.hash(pin),
            status=CARD_ISSUED,
            currency=(currency or workspace.currency).upper(),
            initial_amount=amount,
            balance=0,
            customer_id=customer_id,
            expires_at=expires_at,
            created_at=now,
        )
        session.add(card)
        issued.append(Issued(card, pin))
    session.flush()
    record_audit(
        session,
        workspace_id=workspace_id,
        actor=actor,
        action="loyalty.gift_cards_issued",
        target_type="gift_card",
        target_id=None,
        brand_id=brand_id,
        details={"count": count, "amount": amount, "ids": [i.card.id for i in issued]},
    )
    return issued


def _random_digits(length: int) -> str:
    return f"{secrets.randbelow(10**length):0{length}d}"


def _entry(
    session: Session,
    card: GiftCard,
    *,
    kind: str,
    amount: int,
    key: str,
    store_id: str | None,
    terminal_id: str | None,
    actor: str,
    at: datetime,
    reverses_id: int | None = None,
) -> GiftCardEntry:
    entry = GiftCardEntry(
        workspace_id=card.workspace_id,
        card_id=card.id,
        kind=kind,
        amount=amount,
        idempotency_key=key,
        reverses_id=reverses_id,
        store_id=store_id,
        terminal_id=terminal_id,
        actor=actor,
        created_at=at,
    )
    session.add(entry)
    card.balance += amount
    if card.balance < 0:
        raise AssertionError(f"gift card {card.id} would go below zero")
    session.flush()
    return entry


def _card(session: Session, workspace_id: int, number: str) -> GiftCard:
    card = card_store.gift_card(session, workspace_id, number.strip(), lock=True)
    if card is None:
        raise NotFound("no gift card has this number", field="number")
    return card


def activate_gift_card(
    session: Session,
    *,
    workspace_id: int,
    number: str,
    pos_transaction_id: str,
    store_id: str,
    terminal_id: str,
    actor: str,
) -> Outcome:
    """Activate a card when it is sold: its amount becomes spendable (idempotent). An unknown
    number counts against the terminal as a wrong PIN does."""
    checked = _checked(
        session,
        workspace_id=workspace_id,
        number=number,
        pin=None,
        terminal_id=terminal_id,
        at=clock.now(),
    )
    card = checked.card
    if checked.refusal is not None or card is None:
        return checked
    key = f"activate:{pos_transaction_id}"
    existing = card_store.gift_card_entry(session, workspace_id, key)
    if existing is not None:
        if existing.card_id != card.id:
            raise Conflict(
                "this pos_transaction_id activated another card", field="pos_transaction_id"
            )
        return Outcome(card, existing, replayed=True)
    if card.status != CARD_ISSUED:
        raise Conflict("the gift card is already active", field="number")
    now = clock.now()
    entry = _entry(
        session,
        card,
        kind=CARD_ACTIVATION,
        amount=card.initial_amount,
        key=key,
        store_id=store_id,
        terminal_id=terminal_id,
        actor=actor,
        at=now,
    )
    card.status, card.activated_at = CARD_ACTIVE, now
    return Outcome(card, entry)


def prune_failures(session: Session, *, now: datetime) -> int:
    """Forget refused attempts of windows over for more than an hour."""
    return card_store.prune_failures(session, _window(now) - WINDOW)


def _window(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _checked(
    session: Session,
    *,
    workspace_id: int,
    number: str,
    pin: str | None,
    terminal_id: str,
    at: datetime,
) -> Outcome:
    """The card (locked), refused (the refusal recorded) unless the number is known, the PIN
    right (when one is asked for: activation asks for none) and no limit is reached. Unknown
    numbers count against the terminal, so numbers cannot be enumerated."""
    card = card_store.gift_card(session, workspace_id, number.strip(), lock=True)
    return Outcome(card, refusal=_refusal(session, workspace_id, card, pin, terminal_id, at))


def _refusal(
    session: Session,
    workspace_id: int,
    card: GiftCard | None,
    pin: str | None,
    terminal_id: str,
    at: datetime,
) -> TactfulError | None:
    window = _window(at)
    subjects = [("terminal", terminal_id)]
    if card is not None and pin is not None:
        subjects.append(("card", card.number))
    counts = card_store.failures(session, workspace_id, subjects, window)
    retry_at = (window + WINDOW).isoformat(timespec="minutes")
    if counts.get(("terminal", terminal_id), 0) >= TERMINAL_FAILURES:
        return TooManyRequests(
            f"too many wrong gift-card PINs at this terminal; try again after {retry_at}",
            field="terminal_id",
        )
    if card is not None and counts.get(("card", card.number), 0) >= CARD_FAILURES:
        return TooManyRequests(
            f"too many wrong PINs for this card; try again after {retry_at}", field="pin"
        )
    if card is None:
        card_store.add_failure(session, workspace_id, "terminal", terminal_id, window)
        return NotFound("no gift card has this number", field="number")
    if pin is None:
        return None
    try:
        _HASHER.verify(card.pin_hash, pin)
    except VerificationError:
        card_store.add_failure(session, workspace_id, "card", card.number, window)
        card_store.add_failure(session, workspace_id, "terminal", terminal_id, window)
        return Forbidden("the PIN is wrong", field="pin")
    return None


def check_balance(
    session: Session,
    *,
    workspace_id: int,
    number: str,
    pin: str,
    terminal_id: str,
) -> Outcome:
    """The card's balance, for the right PIN (wrong PINs are counted and limited)."""
    checked = _checked(
        session,
        workspace_id=workspace_id,
        number=number,
        pin=pin,
        terminal_id=terminal_id,
        at=clock.now(),
    )
    return checked


def redeem_gift_card(
    session: Session,
    *,
    workspace_id: int,
    number: str,
    pin: str,
    amount: int,
    pos_transaction_id: str,
    store_id: str,
    terminal_id: str,
    actor: str,
    customer_id: int | None = None,
) -> Outcome:
    """Pay ``amount`` from the card (idempotent by the POS transaction id)."""
    now = clock.now()
    checked = _checked(
        session,
        workspace_id=workspace_id,
        number=number,
        pin=pin,
        terminal_id=terminal_id,
        at=now,
    )
    card = checked.card
    if checked.refusal is not None or card is None:
        return checked
    key = f"redeem:{pos_transaction_id}"
    existing = card_store.gift_card_entry(session, workspace_id, key)
    if existing is not None:
        if existing.card_id != card.id or existing.amount != -amount:
            raise Conflict(
                "this pos_transaction_id paid with another card or amount",
                field="pos_transaction_id",
            )
        return Outcome(card, existing, replayed=True)
    if card.status != CARD_ACTIVE:
        raise Conflict("the gift card has not been activated", field="number")
    if card.expires_at is not None and card.expires_at <= now:
        raise Conflict("the gift card has expired", field="number")
    if amount > card.balance:
        raise Conflict(f"the gift card holds {card.balance}; {amount} requested", field="amount")
    entry = _entry(
        session,
        card,
        kind=CARD_REDEMPTION,
        amount=-amount,
        key=key,
        store_id=store_id,
        terminal_id=terminal_id,
        actor=actor,
        at=now,
    )
    holder = customer_id or card.customer_id
    if holder is not None:
        record_customer_events(
            session,
            workspace_id=workspace_id,
            events=[
                CustomerEvent(
                    customer_id=holder,
                    name=GIFT_CARD_USED,
                    message_id=f"loyalty:giftcard:{entry.id}",
                    occurred_at=now,
                    properties={
                        "gift_card_id": card.id,
                        "amount": amount,
                        "balance": card.balance,
                        "currency": card.currency,
                        "pos_transaction_id": pos_transaction_id,
                        "store_id": store_id,
                    },
                    source="loyalty",
                    brand_id=card.brand_id,
                )
            ],
        )
    return Outcome(card, entry)


def refund_gift_card(
    session: Session,
    *,
    workspace_id: int,
    pos_transaction_id: str,
    original_pos_transaction_id: str,
    amount: int,
    store_id: str,
    terminal_id: str,
    actor: str,
) -> Outcome:
    """Put money back on the card a redemption took it from (never more than was taken)."""
    original = card_store.gift_card_entry(
        session, workspace_id, f"redeem:{original_pos_transaction_id}"
    )
    if original is None:
        raise NotFound(
            "no gift-card payment has this POS transaction id", field="original_pos_transaction_id"
        )
    card = session.get(GiftCard, original.card_id)
    assert card is not None
    card = _card(session, workspace_id, card.number)
    key = f"refund:{pos_transaction_id}"
    existing = card_store.gift_card_entry(session, workspace_id, key)
    if existing is not None:
        if existing.reverses_id != original.id or existing.amount != amount:
            raise Conflict(
                "this pos_transaction_id was used for another refund", field="pos_transaction_id"
            )
        return Outcome(card, existing, replayed=True)
    refunded = card_store.gift_card_refunded(session, original.id)
    if refunded + amount > -original.amount:
        raise ValidationFailed(
            f"refunds would total {refunded + amount}, more than the {-original.amount} paid",
            field="amount",
        )
    entry = _entry(
        session,
        card,
        kind=CARD_REFUND,
        amount=amount,
        key=key,
        store_id=store_id,
        terminal_id=terminal_id,
        actor=actor,
        at=clock.now(),
        reverses_id=original.id,
    )
    return Outcome(card, entry)


def get_gift_card(session: Session, *, workspace_id: int, number: str) -> GiftCard:
    """A card by number (admin view; no PIN needed)."""
    card = card_store.gift_card(session, workspace_id, number.strip(), lock=False)
    if card is None:
        raise NotFound("no gift card has this number", field="number")
    return card
