"""Importing events (track, page and screen calls): one row per event, any extra column a
property.

A row needs a time and a user id or an anonymous id, as a Segment call does. An event id
repeated in the file or already in the warehouse is accepted and ignored (a file without
event ids gets ids derived from each row's content, so importing it twice adds nothing).
Anonymous ids that a row ties to a user id join that customer's profile.
"""

from __future__ import annotations

from typing import Any

import orjson

from tactful.core import clock
from tactful.customers.models import ANONYMOUS, DEVICE, EXTERNAL
from tactful.events import store
from tactful.events.importing import history, people, reader
from tactful.events.importing.context import Counts, ImportContext
from tactful.events.ingest import MAX_FUTURE, IngestContext, ingest_segment
from tactful.events.resolver import catalog_rows
from tactful.events.schemas import MAX_ID
from tactful.events.warehouse import EVENTS
from tactful.tenancy.models import Workspace

CUSTOMER_FIELDS = {
    "customer_external_id": EXTERNAL,
    "anonymous_id": ANONYMOUS,
    "device_id": DEVICE,
}
SPEC = reader.KindSpec(
    kind="events",
    fields=("event_id", "type", "event", *CUSTOMER_FIELDS, "occurred_at", "channel", "properties"),
    aliases={
        "message_id": "event_id",
        "messageid": "event_id",
        "name": "event",
        "event_name": "event",
        "user_id": "customer_external_id",
        "userid": "customer_external_id",
        "external_id": "customer_external_id",
        "anonymousid": "anonymous_id",
        "timestamp": "occurred_at",
        "time": "occurred_at",
    },
    required=(("occurred_at",), ("customer_external_id", "anonymous_id")),
    extras="properties",
)
TYPES = ("track", "page", "screen")
LIVE_CHUNK = 2000


def _rules() -> list[tuple[str, str, str]]:
    future = (clock.now() + MAX_FUTURE).isoformat()
    rules = [
        (f"length(given_id) > {MAX_ID}", "event_id", f"'longer than {MAX_ID} characters'"),
        (
            f"type NOT IN {TYPES}",
            "type",
            "'must be track, page or screen, not ' || type || "
            "' (customers are imported as customers)'",
        ),
        ("type = 'track' AND name IS NULL", "event", "'missing: a track event has a name'"),
        (f"length(name) > {MAX_ID}", "event", f"'longer than {MAX_ID} characters'"),
        (
            "user_id IS NULL AND anonymous_id IS NULL",
            "customer_external_id",
            "'either customer_external_id or anonymous_id is required'",
        ),
        ("occurred_text IS NULL", "occurred_at", "'missing'"),
        (
            "occurred_at IS NULL",
            "occurred_at",
            "'not a date and time: ' || occurred_text || ' (e.g. 2026-05-01T10:00:00+03:00)'",
        ),
        (
            f"occurred_at > TIMESTAMPTZ '{future}'",
            "occurred_at",
            "'more than a day in the future'",
        ),
        (
            "given_properties IS NOT NULL AND (NOT json_valid(given_properties) OR "
            "CASE WHEN json_valid(given_properties) THEN json_type(given_properties) END "
            "<> 'OBJECT')",
            "properties",
            "'not a JSON object'",
        ),
    ]
    for name, column in (
        ("customer_external_id", "user_id"),
        ("anonymous_id", "anonymous_id"),
        ("device_id", "device_id"),
    ):
        rules.append((f"length({column}) > {MAX_ID}", name, f"'longer than {MAX_ID} characters'"))
    return rules


def _checks(rules: list[tuple[str, str, str]]) -> str:
    field = " ".join(f"WHEN {condition} THEN '{name}'" for condition, name, _ in rules)
    reason = " ".join(f"WHEN {condition} THEN {text}" for condition, _, text in rules)
    return f"CASE {field} END AS field, CASE {reason} END AS reason"


def _stage(ctx: ImportContext) -> None:
    """The table ``rows``: every event typed, with the field and reason of a rejected one."""
    con, source = ctx.con, ctx.source
    values = [
        "line",
        f"coalesce(lower({source.text('type')}), 'track') AS type",
        f"{source.text('event')} AS name",
        f"{source.text('customer_external_id')} AS user_id",
        f"{source.text('anonymous_id')} AS anonymous_id",
        f"{source.text('device_id')} AS device_id",
        f"{source.moment('occurred_at')} AS occurred_at",
        f"{source.text('occurred_at')} AS occurred_text",
        f"lower({source.text('channel')}) AS channel",
        f"{source.text('properties')} AS given_properties",
        f"{source.text('event_id')} AS given_id",
        f"{people.who(source, list(CUSTOMER_FIELDS))} AS who",
        *(reader.quote(e) for e in source.extras),
    ]
    # extra columns join the properties object (a value that is not one is rejected first)
    properties = "given_properties"
    if source.extras:
        pairs = ", ".join(f"{reader.literal(e)}, {reader.quote(e)}" for e in source.extras)
        properties = (
            "CASE WHEN given_properties IS NULL OR CASE WHEN json_valid(given_properties) "
            "THEN json_type(given_properties) END = 'OBJECT' "
            f"THEN json_merge_patch(coalesce(given_properties, '{{}}'), json_object({pairs})) END"
        )
    # without an id, an event is known by its content: the same row imported again is ignored
    content = (
        "concat_ws(chr(31), type, name, user_id, anonymous_id, device_id, "
        "CAST(occurred_at AS VARCHAR), properties)"
    )
    con.execute(
        f"CREATE TABLE rows AS SELECT *, coalesce(given_id, 'import-' || md5({content})) "  # noqa: S608
        f"AS event_id FROM (SELECT line, type, name, user_id, anonymous_id, device_id, "
        f"occurred_at, occurred_text, channel, given_id, who, {properties} AS properties, "
        f"{_checks(_rules())} FROM (SELECT {', '.join(values)} FROM src))"
    )
    con.execute("INSERT INTO rejects SELECT line, field, reason FROM rows WHERE field IS NOT NULL")
    con.execute(
        "CREATE TABLE repeated AS SELECT event_id, min(line) AS first_line FROM rows "
        "WHERE field IS NULL GROUP BY event_id HAVING count(*) > 1"
    )


def run(ctx: ImportContext) -> Counts:
    """Check the staged file, then import its new events."""
    ctx.progress("checking rows", 0, ctx.source.total)
    _stage(ctx)
    ctx.progress("checking rows", ctx.source.total, ctx.source.total)
    con = ctx.con
    # an event id repeated in the file: the first row counts, the others are duplicates
    con.execute(
        "CREATE TABLE valid AS SELECT r.* FROM rows r LEFT JOIN repeated p USING (event_id) "
        "WHERE r.field IS NULL AND (p.first_line IS NULL OR r.line = p.first_line)"
    )
    _note_catalog(ctx)
    counts = _live(ctx) if ctx.options.live else _history(ctx)
    valid, unique = con.execute(
        "SELECT (SELECT count(*) FROM rows WHERE field IS NULL), (SELECT count(*) FROM valid)"
    ).fetchone()
    counts.duplicate += int(valid) - int(unique)
    return counts


def _note_catalog(ctx: ImportContext) -> None:
    samples = ctx.con.execute(
        "SELECT type, name, any_value(properties) FROM valid GROUP BY ALL"
    ).fetchall()
    items = [
        (ctx.workspace_id, kind, name, _object(properties)) for kind, name, properties in samples
    ]
    with ctx.runtime.db.scope() as session:
        store.note_catalog(session, catalog_rows(items))


def _object(text: str | None) -> dict[str, Any]:
    value = orjson.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


def _history(ctx: ImportContext) -> Counts:
    """Append the events the warehouse does not have yet, each with its customer."""
    con = ctx.con
    history.known_keys(
        ctx,
        table=EVENTS,
        probe="SELECT event_id FROM valid",
        keys=["event_id"],
        into="known_events",
    )
    con.execute(
        "CREATE TABLE fresh AS SELECT v.* FROM valid v ANTI JOIN known_events k USING (event_id)"
    )
    fresh = int(con.execute("SELECT count(*) FROM fresh").fetchone()[0])
    present = [f for f in CUSTOMER_FIELDS if ctx.source.has(f)]
    columns = {"customer_external_id": "user_id"}
    chosen = ", ".join(f"any_value({columns.get(f, f)}) AS {f}" for f in present)
    # rows naming a user id first: their anonymous ids then lead to that customer
    con.execute(
        f"CREATE TABLE people AS SELECT who, {chosen}, max(occurred_at) AS last_at, "  # noqa: S608
        "row_number() OVER (ORDER BY bool_and(user_id IS NULL), min(line)) AS position "
        "FROM fresh WHERE who IS NOT NULL GROUP BY who"
    )
    people.resolve(ctx, {f: CUSTOMER_FIELDS[f] for f in present}, "customers of events")
    received = reader.literal(clock.now().isoformat())
    history.append(
        ctx,
        table=EVENTS,
        sql=f"SELECT NULL, {ctx.workspace_id}, f.event_id, f.type, f.name, r.customer_id, "  # noqa: S608
        f"f.anonymous_id, f.user_id, f.occurred_at, CAST({received} AS TIMESTAMPTZ), "
        f"f.channel, coalesce(f.properties, '{{}}'), {reader.literal(ctx.tag)}, true, NULL "
        "FROM fresh f LEFT JOIN resolved r ON r.who = f.who ORDER BY f.line",
        stage="events",
        total=fresh,
    )
    unique = int(con.execute("SELECT count(*) FROM valid").fetchone()[0])
    return Counts(imported=fresh, duplicate=unique - fresh)


def _call(row: dict[str, Any]) -> dict[str, Any]:
    """One event as a Segment-spec call."""
    context: dict[str, Any] = {}
    if row["device_id"] is not None:
        context["device"] = {"id": row["device_id"]}
    if row["channel"] == "app":
        context["app"] = {"name": "import"}
    elif row["channel"] == "web":
        context["page"] = {}
    call: dict[str, Any] = {
        "type": row["type"],
        "messageId": row["event_id"],
        "timestamp": clock.ensure_utc(row["occurred_at"]).isoformat(),
        "properties": _object(row["properties"]),
        "context": context,
    }
    call["event" if row["type"] == "track" else "name"] = row["name"]
    if row["user_id"] is not None:
        call["userId"] = row["user_id"]
    if row["anonymous_id"] is not None:
        call["anonymousId"] = row["anonymous_id"]
    return call


def _live(ctx: ImportContext) -> Counts:
    """Send the events through the inbox, as calls to POST /v1/batch would."""
    counts = Counts()
    total = int(ctx.con.execute("SELECT count(*) FROM valid").fetchone()[0])
    done = 0
    ctx.progress("events", 0, total)
    for table in reader.batches(ctx.con, "SELECT * FROM valid ORDER BY line", size=LIVE_CHUNK):
        rows = table.to_pylist()
        rejects: list[tuple[int, str | None, str]] = []
        with ctx.runtime.db.scope() as session:
            workspace = session.get(Workspace, ctx.workspace_id)
            assert workspace is not None
            result = ingest_segment(
                session,
                IngestContext(workspace=workspace, source=ctx.tag, historical=False),
                [_call(row) for row in rows],
            )
        for row, item in zip(rows, result.results, strict=True):
            if item.status == "accepted":
                counts.imported += 1
            elif item.status == "duplicate":
                counts.duplicate += 1
            else:
                reason = "; ".join(f"{e.field}: {e.reason}" for e in item.errors)
                rejects.append((int(row["line"]), None, reason))
        reader.add_rejects(ctx.con, rejects)
        done += len(rows)
        ctx.progress("events", done, total)
    return counts
