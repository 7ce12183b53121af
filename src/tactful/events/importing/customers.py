"""Importing customers: identities, standard fields, custom attributes and consents.

Rows go through the same identity resolution as live calls (in large batches), so a row
naming identities of two customers merges them, and a file imported twice changes nothing
the second time. Invalid phones and e-mails are kept, marked undeliverable with the reason;
a row is rejected only when nothing valid identifies the customer or a value cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from tactful.core import clock
from tactful.customers import bulk
from tactful.customers import service as customers
from tactful.customers.contacts import (
    Ident,
    normalise_card,
    normalise_email,
    normalise_phone,
    normalise_plain,
)
from tactful.customers.identity import ProfileRecord, resolve_profiles
from tactful.customers.models import (
    ADVERTISING,
    ANONYMOUS,
    ANY_CHANNEL,
    CHANNELS,
    DEVICE,
    EXTERNAL,
    MATCHABLE_KINDS,
    PERSONAL_DATA,
)
from tactful.customers.profile import STANDARD_TRAITS, standard_value
from tactful.events.importing import reader
from tactful.events.importing.context import Counts, ImportContext
from tactful.events.models import ImportRun

IDENTITY_FIELDS = ("external_id", "phone", "email", "loyalty_card", "app_device_id", "anonymous_id")
STANDARD_FIELDS = (*STANDARD_TRAITS, "is_test")
CONSENT_FIELDS = ("consent_personal_data", *(f"consent_{channel}" for channel in CHANNELS))
SPEC = reader.KindSpec(
    kind="customers",
    fields=(*IDENTITY_FIELDS, *STANDARD_FIELDS, *CONSENT_FIELDS),
    aliases={
        "user_id": "external_id",
        "userid": "external_id",
        "customer_id": "external_id",
        "customer_external_id": "external_id",
        "phone_number": "phone",
        "mobile": "phone",
        "e-mail": "email",
        "card": "loyalty_card",
        "card_number": "loyalty_card",
        "device_id": "app_device_id",
        "anonymousid": "anonymous_id",
        "firstname": "first_name",
        "lastname": "last_name",
        "birth_date": "birthday",
        "date_of_birth": "birthday",
        "sex": "gender",
        "time_zone": "timezone",
    },
    required=(IDENTITY_FIELDS,),
    extras="attributes",
)
CHUNK = 20_000
CONSENT_CHUNK = 50_000
TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})
REASONS = {
    "gender": "not a gender: f or m (female, male, ж, м …)",
    "birthday": "not a date (YYYY-MM-DD)",
    "timezone": "not a time zone name such as Europe/Moscow",
}


def flag(text: str | None) -> bool | None:
    """A yes/no cell: True, False, None when empty; ValueError otherwise."""
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(text)


@dataclass
class _Row:
    line: int
    record: ProfileRecord
    consents: list[tuple[str, bool]]  # (consent field, given)


def run(ctx: ImportContext) -> Counts:
    """Import the staged customers file: profiles in chunks (one transaction each), then the
    consents the file states."""
    con, source = ctx.con, ctx.source
    present = [f for f in (*IDENTITY_FIELDS, *STANDARD_FIELDS, *CONSENT_FIELDS) if source.has(f)]
    columns = ", ".join(["line", *(f"{source.text(f)} AS {reader.quote(f)}" for f in present)])
    extras = "".join(f", {reader.quote(e)}" for e in source.extras)
    sql = f"SELECT {columns}{extras} FROM src ORDER BY line"  # noqa: S608
    con.execute("CREATE TABLE outcomes (line BIGINT, changed BOOLEAN)")
    con.execute(
        "CREATE TABLE stated (line BIGINT, customer_id BIGINT, field VARCHAR, given BOOLEAN, "
        "created BOOLEAN)"
    )
    done = 0
    ctx.progress("customers", 0, source.total)
    for table in reader.batches(con, sql, size=CHUNK):
        rows, rejects = _read(ctx, table.to_pydict(), table.num_rows)
        reader.add_rejects(con, rejects)
        _store(ctx, rows)
        done += table.num_rows
        ctx.progress("customers", done, source.total)
    _apply_consents(ctx)
    imported, duplicate = con.execute(
        "SELECT count(*) FILTER (WHERE changed), count(*) FILTER (WHERE NOT changed) FROM outcomes"
    ).fetchone()
    return Counts(imported=int(imported), duplicate=int(duplicate))


def _identities(ctx: ImportContext, data: dict[str, list[Any]], n: int) -> list[list[Ident]]:
    """Each row's identities, normalised column by column (each distinct value once)."""
    found: list[list[Ident]] = [[] for _ in range(n)]
    region, namespace = ctx.region, ctx.options.namespace
    for name in IDENTITY_FIELDS:
        values = data.get(name)
        if values is None:
            continue
        rows = [i for i, v in enumerate(values) if v is not None]
        texts = [values[i] for i in rows]
        if name == "email":
            idents = [normalise_email(t) for t in texts]
        elif name == "phone":
            idents = [normalise_phone(t, region) for t in texts]
        elif name == "loyalty_card":
            idents = [normalise_card(t) for t in texts]
        else:
            kind = {"external_id": EXTERNAL, "app_device_id": DEVICE}.get(name, ANONYMOUS)
            space = namespace if kind == EXTERNAL else ""
            idents = [normalise_plain(kind, t, space) for t in texts]
        for i, ident in zip(rows, idents, strict=True):
            found[i].append(ident)
    return found


def _no_identity(idents: Sequence[Ident]) -> tuple[str, str]:
    """Field and reason of a row that nothing valid identifies."""
    names = dict(
        zip(
            ("external", "phone", "email", "card", "device", "anonymous"),
            IDENTITY_FIELDS,
            strict=True,
        )
    )
    if not idents:
        return (
            "external_id",
            f"no identity: a customer row needs one of {', '.join(IDENTITY_FIELDS)}",
        )
    problems = "; ".join(f"{names[i.kind]} {i.raw!r}: {i.reason}" for i in idents)
    return names[idents[0].kind], f"no valid identity to match the customer by ({problems})"


def _plain(value: Any) -> Any:
    """A custom attribute value as JSON keeps it (dates as ISO text)."""
    if isinstance(value, datetime):
        return clock.ensure_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _read(
    ctx: ImportContext, data: dict[str, list[Any]], n: int
) -> tuple[list[_Row], list[tuple[int, str | None, str]]]:
    """Records of the rows that can be imported, and the rejected rows."""
    identities = _identities(ctx, data, n)
    standard = [f for f in STANDARD_FIELDS if f in data]
    consent_fields = [f for f in CONSENT_FIELDS if f in data]
    extras = ctx.source.extras
    lines = data["line"]
    now = clock.now()
    rows: list[_Row] = []
    rejects: list[tuple[int, str | None, str]] = []
    for i in range(n):
        line = int(lines[i])
        idents = identities[i]
        if not any(ident.valid and ident.kind in MATCHABLE_KINDS for ident in idents):
            field, reason = _no_identity(idents)
            rejects.append((line, field, reason))
            continue
        traits: dict[str, Any] = {}
        problem: tuple[str, str] | None = None
        for name in standard:
            text = data[name][i]
            if text is None:
                continue
            if name == "is_test":
                try:
                    traits[name] = flag(text)
                except ValueError:
                    problem = (name, "not true or false")
                    break
            elif standard_value(name, text) is None:
                problem = (name, REASONS.get(name, "cannot be read"))
                break
            else:
                traits[name] = text
        consents: list[tuple[str, bool]] = []
        for name in consent_fields if problem is None else ():
            try:
                given = flag(data[name][i])
            except ValueError:
                problem = (name, "not true or false")
                break
            if given is not None:
                consents.append((name, given))
        if problem is not None:
            rejects.append((line, *problem))
            continue
        for name in extras:
            value = data[name][i]
            if value is not None:
                traits[name] = _plain(value)
        record = ProfileRecord(
            idents=idents, source=ctx.options.source, at=now, traits=traits, seen=False
        )
        rows.append(_Row(line, record, consents))
    return rows, rejects


def _store(ctx: ImportContext, rows: list[_Row]) -> None:
    """Resolve and update the customers of one chunk; record what changed and which consents
    the rows state (applied once the whole file is resolved)."""
    if not rows:
        return
    with ctx.runtime.db.scope() as session:
        workspace = customers.workspace_of(session, ctx.workspace_id)
        resolution = resolve_profiles(
            session, workspace=workspace, records=[r.record for r in rows], actor=ctx.actor
        )
        customers.note_attributes(
            session, workspace_id=ctx.workspace_id, values=resolution.custom_attributes
        )
        changed = sum(resolution.changed)
        run = session.get(ImportRun, ctx.run_id)
        assert run is not None
        run.rows_imported += changed
        run.rows_duplicate += len(rows) - changed
    reader.insert(
        ctx.con,
        "outcomes",
        {"line": [r.line for r in rows], "changed": resolution.changed},
        {"line": pa.int64(), "changed": pa.bool_()},
    )
    created = set(resolution.created_ids)
    stated = [
        (row.line, customer_id, name, given, customer_id in created)
        for row, customer_id in zip(rows, resolution.customer_ids, strict=True)
        for name, given in row.consents
    ]
    reader.insert(
        ctx.con,
        "stated",
        {
            "line": [v[0] for v in stated],
            "customer_id": [v[1] for v in stated],
            "field": [v[2] for v in stated],
            "given": [v[3] for v in stated],
            "created": [v[4] for v in stated],
        },
        {
            "line": pa.int64(),
            "customer_id": pa.int64(),
            "field": pa.string(),
            "given": pa.bool_(),
            "created": pa.bool_(),
        },
    )


def _consent_value(
    ctx: ImportContext, customer_id: int, line: int, name: str, given: bool
) -> bulk.ConsentValue:
    if name == "consent_personal_data":
        return bulk.ConsentValue(
            customer_id=customer_id,
            kind=PERSONAL_DATA,
            channel=ANY_CHANNEL,
            granted=given,
            evidence=ctx.evidence(line),
        )
    return bulk.ConsentValue(
        customer_id=customer_id,
        kind=ADVERTISING,
        channel=name.removeprefix("consent_"),
        granted=given,
        evidence=ctx.evidence(line),
        brand_id=ctx.options.brand_id,
    )


def _apply_consents(ctx: ImportContext) -> None:
    """Apply the consents the file states: where rows of one customer disagree, the last row
    wins, so importing the file again changes nothing."""
    con = ctx.con
    # A refusal changes nothing for a customer this import created (they had no consent).
    con.execute(
        "CREATE TABLE final_stated AS SELECT * FROM (SELECT * FROM stated QUALIFY "
        "row_number() OVER (PARTITION BY customer_id, field ORDER BY line DESC) = 1) "
        "WHERE given OR NOT created"
    )
    total = int(con.execute("SELECT count(*) FROM final_stated").fetchone()[0])
    con.execute("CREATE TABLE consent_lines (line BIGINT)")
    done = 0
    ctx.progress("consents", 0, total)
    sql = "SELECT line, customer_id, field, given FROM final_stated ORDER BY line"
    for table in reader.batches(con, sql, size=CONSENT_CHUNK):
        data = table.to_pydict()
        with ctx.runtime.db.scope() as session:
            owner = bulk.survivors(session, sorted(set(data["customer_id"])))
            values = [
                _consent_value(ctx, owner[customer], line, name, given)
                for line, customer, name, given in zip(
                    data["line"], data["customer_id"], data["field"], data["given"], strict=True
                )
            ]
            changed = bulk.apply_consents(
                session,
                workspace_id=ctx.workspace_id,
                values=values,
                source=ctx.options.source,
                actor=ctx.actor,
                at=clock.now(),
                publish=ctx.options.live,
            )
        lines = [line for line, flag in zip(data["line"], changed, strict=True) if flag]
        reader.insert(con, "consent_lines", {"line": lines}, {"line": pa.int64()})
        done += table.num_rows
        ctx.progress("consents", done, total)
    con.execute(
        "UPDATE outcomes SET changed = true WHERE NOT changed AND line IN "
        "(SELECT line FROM consent_lines)"
    )
