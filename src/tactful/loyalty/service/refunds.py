"""Refunds and cancellations of POS purchases: spent points come back to the lots they
left, accrued points are taken back in proportion, and refunds never exceed the receipt.
Idempotent by the refund's POS transaction id (a cancel, by the purchase's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.errors import Conflict, NotFound, ValidationFailed
from tactful.loyalty import store
from tactful.loyalty.models import (
    AVAILABLE,
    CANCEL,
    LINE_ACCRUAL,
    LINE_REDEMPTION,
    MERGED,
    PURCHASE,
    REFUND,
    LedgerLine,
    LedgerTransaction,
)
from tactful.loyalty.schemas import ProgramRules, RefundOut
from tactful.loyalty.service.ledger import Book, Move, NewLot, open_book
from tactful.loyalty.service.pos import SYSTEM_ACTOR, emit_purchase, request_fingerprint
from tactful.loyalty.service.programs import resolve_program, view_of


@dataclass(frozen=True)
class _Share:
    """What this refund reverses."""

    amount: int
    lines: dict[str, int]
    claw: int
    restore: int


def _share(
    original: LedgerTransaction,
    before: Sequence[LedgerTransaction],
    *,
    lines: Sequence[tuple[int, int]] | None,
    amount: int | None,
    cancel: bool,
) -> _Share:
    """Amounts, and accrued/spent points to reverse in proportion (cumulative rounding, so
    refunding everything reverses exactly what the purchase did)."""
    details = original.details
    total, accrued, redeemed = details["total"], details["accrued"], details["redeemed"]
    refunded = sum(r.details["refunded"] for r in before)
    refunded_lines: Counter[str] = Counter()
    for r in before:
        refunded_lines.update(r.details.get("lines", {}))
    due_before = sum(
        r.details["clawed"] + r.details["unrecovered"] + r.details.get("expired", 0) for r in before
    )
    restored_before = sum(r.details["restored"] for r in before)
    if cancel:
        left = total - refunded
        if left <= 0 and (total or before):
            raise Conflict(
                "the purchase was already refunded in full", field="original_pos_transaction_id"
            )
        return _Share(left, {}, accrued - due_before, redeemed - restored_before)
    if lines is not None:
        by_no = {str(x["line_no"]): x for x in details["lines"]}
        claw = restore = 0
        this: dict[str, int] = {}
        for index, (line_no, part) in enumerate(lines):
            line = by_no.get(str(line_no))
            if line is None:
                raise ValidationFailed(
                    f"line {line_no} is not on the receipt", field=f"lines[{index}].line_no"
                )
            old = refunded_lines[str(line_no)] + this.get(str(line_no), 0)
            new = old + part
            if new > line["amount"]:
                raise ValidationFailed(
                    f"refunds of line {line_no} would total {new}, more than its amount "
                    f"{line['amount']}",
                    field=f"lines[{index}].amount",
                )
            this[str(line_no)] = this.get(str(line_no), 0) + part
            claw += (
                line["accrued"] * new // line["amount"] - line["accrued"] * old // line["amount"]
            )
            restore += (
                line["redeemed"] * new // line["amount"] - line["redeemed"] * old // line["amount"]
            )
        part_total = sum(this.values())
        if refunded + part_total > total:
            raise ValidationFailed(
                f"refunds would total {refunded + part_total}, more than the receipt's {total}",
                field="lines",
            )
    else:
        assert amount is not None
        if refunded + amount > total:
            raise ValidationFailed(
                f"refunds would total {refunded + amount}, more than the receipt's {total}",
                field="amount",
            )
        part_total, this = amount, {}
        claw = accrued * (refunded + amount) // total - accrued * refunded // total
        restore = redeemed * (refunded + amount) // total - redeemed * refunded // total
    if refunded + part_total == total:
        # the refund that completes the receipt reverses all that is left, however earlier
        # refunds (by line or by amount: their shares differ when lines earn at different
        # rates) were rounded or shared
        claw, restore = accrued - due_before, redeemed - restored_before
    return _Share(
        part_total, this, min(claw, accrued - due_before), min(restore, redeemed - restored_before)
    )


def refund(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int | None,
    program_id: int | None,
    original_pos_transaction_id: str,
    pos_transaction_id: str | None,
    lines: Sequence[tuple[int, int]] | None,
    amount: int | None,
    store_id: str | None,
    terminal_id: str | None,
    actor: str,
    cancel: bool = False,
) -> RefundOut:
    """Reverse a purchase in part (``lines`` or ``amount``) or in full (``cancel``): spent
    points come back to the lots they left, accrued points are taken back in proportion.
    Idempotent by the refund's POS transaction id (a cancel, by the purchase's)."""
    now = clock.now()
    program = view_of(
        session,
        resolve_program(
            session, workspace_id=workspace_id, program_id=program_id, brand_id=brand_id
        ),
    )
    original = store.transaction_by_key(session, program.id, f"pos:{original_pos_transaction_id}")
    if original is None or original.kind != PURCHASE:
        raise NotFound(
            f"no confirmed purchase has the POS transaction id {original_pos_transaction_id!r}",
            field="original_pos_transaction_id",
        )
    owner = store.account_row(session, original.account_id)
    assert owner is not None
    target = owner.merged_into_id if owner.status == MERGED and owner.merged_into_id else owner.id
    book = open_book(session, program, target)
    if book.account.status == MERGED and book.account.merged_into_id:
        # merged while the owner was read: the locked row tells where the points went
        book = open_book(session, program, book.account.merged_into_id)
    key = f"cancel:{original_pos_transaction_id}" if cancel else f"refund:{pos_transaction_id}"
    fingerprint = request_fingerprint(original.id, lines, amount, cancel)
    existing = store.transaction_by_key(session, program.id, key)
    if existing is not None:
        if (
            existing.reverses_id != original.id
            or existing.details.get("fingerprint") != fingerprint
        ):
            raise Conflict(
                "this pos_transaction_id was already used for a different refund",
                field="pos_transaction_id",
            )
        return _refund_out(existing, book, program.rules, replayed=True)
    before = store.reversals_of(session, original.id)
    share = _share(original, before, lines=lines, amount=amount, cancel=cancel)
    book.settle_due(at=now, actor=SYSTEM_ACTOR)
    original_lines = store.lines_of(session, [original.id])
    accrued_into = next(
        (x.lot_id for x in original_lines if x.kind == LINE_ACCRUAL and x.points > 0), None
    )
    # the lot the purchase's points are in now (a merge moves them to a lot of the survivor's)
    chain = _lot_chain(session, accrued_into, book.account.id) if accrued_into else []
    accrual_lot = chain[-1] if chain else None
    # accrued points that expired are gone already: not taken again from other points (up to
    # what earlier refunds of the purchase have not counted yet)
    expired = 0
    in_lot = book.lots[accrual_lot].remaining if accrual_lot in book.lots else 0
    if chain and share.claw > in_lot:
        excusable = sum(store.expired_points(session, lot_id) for lot_id in chain) - sum(
            r.details.get("expired", 0) for r in before
        )
        expired = max(0, min(share.claw - in_lot, excusable))
    moves, unrecovered = book.take_back(
        share.claw - expired, at=now, kind=LINE_ACCRUAL, first=accrual_lot
    )
    restored_by_lot = _restore_plan(before, original_lines, share.restore)
    drawn = store.lots_by_ids(session, [int(lot_id) for lot_id in restored_by_lot])
    touched: list[int | NewLot] = []
    for lot_key, points in restored_by_lot.items():
        lot = drawn[int(lot_key)]
        target_lot: int | NewLot = (
            lot.id
            if lot.account_id == book.account.id
            else NewLot(AVAILABLE, lot.expires_at, ref=lot.id)  # the lot left with a merge
        )
        moves.append(Move(target_lot, AVAILABLE, LINE_REDEMPTION, points))
        # what the customer's other points could not cover comes out of the points this
        # refund gives back (a lot leaving with a merge is new here: it keeps its own)
        take = min(unrecovered, points) if isinstance(target_lot, int) else 0
        if take:
            moves.append(Move(target_lot, AVAILABLE, LINE_ACCRUAL, -take))
            unrecovered -= take
        if lot.expires_at is not None and lot.expires_at <= now:
            touched.append(target_lot)
    worth = _worth(original, before, share)
    posted = book.post(
        kind=CANCEL if cancel else REFUND,
        key=key,
        moves=moves,
        at=now,
        actor=actor,
        correlation_key=original_pos_transaction_id,
        reverses_id=original.id,
        receipt_id=original.receipt_id,
        store_id=store_id,
        terminal_id=terminal_id,
        amount=share.amount,
        spend=-share.amount,
        details={
            "fingerprint": fingerprint,
            "refunded": share.amount,
            "lines": share.lines,
            "clawed": share.claw - expired - unrecovered,
            "unrecovered": unrecovered,
            "expired": expired,
            "restored": share.restore,
            "restored_by_lot": restored_by_lot,
            "money_to_return": max(0, share.amount - worth),
        },
    )
    # points given back to lots already past their expiry expire at once, as their own entry
    for target_lot in touched:
        lot_id = posted.new_lots[target_lot] if isinstance(target_lot, NewLot) else target_lot
        book.expire(lot_id, at=now, actor=SYSTEM_ACTOR, key=f"expire:{lot_id}:after:{posted.id}")
    emit_purchase(
        session,
        program=program,
        book=book,
        transaction_id=posted.id,
        accrued=-(share.claw - expired - unrecovered),
        redeemed=-share.restore,
        pending=False,
        receipt_id=original.receipt_id,
        pos_transaction_id=pos_transaction_id or original_pos_transaction_id,
        store_id=store_id,
        at=now,
        reversal=True,
        redeemed_value=-worth,
    )
    txn = session.get(LedgerTransaction, posted.id)
    assert txn is not None
    return _refund_out(txn, book, program.rules, replayed=False)


MAX_HOPS = 20  # merges and their undoing a lot's points may have gone through


def _lot_chain(session: Session, lot_id: int, account_id: int) -> list[int]:
    """The lot, then each lot transfers moved its points into, up to one of ``account_id``'s
    (or as far as they can be followed)."""
    chain = [lot_id]
    for _ in range(MAX_HOPS):
        lot = store.lots_by_ids(session, [chain[-1]]).get(chain[-1])
        if lot is None or lot.account_id == account_id:
            break
        moved = store.transferred_to(session, chain[-1])
        if moved is None or moved in chain:
            break
        chain.append(moved)
    return chain


def _worth(original: LedgerTransaction, before: Sequence[LedgerTransaction], share: _Share) -> int:
    """What the points this refund gives back were worth when they paid: the purchase's own
    rate, rounded cumulatively, so all refunds of a purchase give back exactly the value the
    points paid (and the money to pay back is exactly what was paid in money)."""
    value, spent = int(original.details["redeem_value"]), int(original.details["redeemed"])
    if not spent:
        return 0
    restored_before = sum(int(r.details["restored"]) for r in before)
    return value * (restored_before + share.restore) // spent - value * restored_before // spent


def _restore_plan(
    before: Sequence[LedgerTransaction], original_lines: Sequence[LedgerLine], points: int
) -> dict[str, int]:
    """Spent points to give back per lot: the lots spent last get theirs back first."""
    given: Counter[str] = Counter()
    for reversal in before:
        given.update(reversal.details.get("restored_by_lot", {}))
    plan: dict[str, int] = {}
    left = points
    for line in reversed([x for x in original_lines if x.kind == LINE_REDEMPTION and x.points < 0]):
        if left == 0:
            break
        key = str(line.lot_id)
        room = -line.points - given[key] - plan.get(key, 0)
        give = min(left, room)
        if give > 0:
            plan[key] = plan.get(key, 0) + give
            left -= give
    return plan


def _refund_out(
    txn: LedgerTransaction, book: Book, rules: ProgramRules, *, replayed: bool
) -> RefundOut:
    details = txn.details
    assert txn.reverses_id is not None
    return RefundOut(
        transaction_id=txn.id,
        replayed=replayed,
        original_transaction_id=txn.reverses_id,
        refunded_amount=details["refunded"],
        restored_points=details["restored"],
        clawed_back_points=details["clawed"],
        unrecovered_points=details["unrecovered"],
        # refunds before the money was recorded: the points at today's value
        money_to_return=details.get(
            "money_to_return",
            max(0, details["refunded"] - details["restored"] * rules.point_value),
        ),
        balance=book.account.balance,
        pending=book.account.pending,
    )
