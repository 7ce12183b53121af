"""The "eleven e-mails in twelve minutes" situation, end to end: one customer enters several
chains at once (a welcome series, six price drops on favourites, an abandoned cart, a
campaign sent twice by mistake, an order confirmation). Under the default rules (two
marketing messages a calendar day, four hours apart, 09:00–21:00 local) the customer
receives what the rules allow, the price drops bundled into one e-mail listing every
product, and every other intent is accounted for by a decision with its reason."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from tests.messaging.conftest import (
    AT,
    Brand,
    MakeCustomer,
    SmtpSink,
    request,
    run_jobs,
)

from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tactful.messaging import service
from tactful.messaging.models import Delivery
from tactful.messaging.schemas import SendOutcome
from tactful.policy import service as policy
from tactful.policy.models import ContactDecision

PRICE_DROP = """<mj-section><mj-column>
<mj-text>Your favourites are cheaper now:</mj-text>
{% for item in items %}<mj-text>{{ item.name }}: {{ item.price }} ₽</mj-text>{% endfor %}
</mj-column></mj-section>"""
FAVOURITES = [
    ("Rake", 790),
    ("Hose 25 m", 1290),
    ("Pruner", 990),
    ("Watering can", 450),
    ("Gloves", 190),
    ("Seed tray", 120),
]


def _templates(runtime: Runtime, brand: Brand) -> dict[str, int]:
    """One message template per chain (subjects tell the e-mails apart)."""
    ids: dict[str, int] = {}
    with runtime.db.scope() as session:
        for key, subject, content in (
            ("welcome", "Welcome to Garden Shop", "<mj-section><mj-column><mj-text>Hi"),
            ("price-drop", "Prices dropped on your favourites", PRICE_DROP),
            ("cart-reminder", "Your cart is waiting", "<mj-section><mj-column><mj-text>Cart"),
            ("sale", "Spring sale", "<mj-section><mj-column><mj-text>Sale"),
            ("order", "Order 1001 confirmed", "<mj-section><mj-column><mj-text>Order"),
        ):
            body = content
            if not content.startswith("<mj-section><mj-column>\n"):
                body += "</mj-text></mj-column></mj-section>"
            template, _ = service.save_template(
                session,
                workspace_id=brand.tenant.workspace_id,
                brand_id=brand.tenant.brand_id,
                kind="message",
                key=key,
                name=subject,
                layout_id=brand.layout_id,
                parts={"email": {"subject": subject, "body": body}},
                actor="test",
            )
            ids[key] = template.id
    return ids


def test_eleven_emails_in_twelve_minutes_become_what_the_rules_allow(
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    worker: Worker,
) -> None:
    sink, _port = smtp
    cid = make_customer()
    templates = _templates(runtime, brand)

    def subjects() -> list[str]:
        return [str(m["Subject"]) for m in sink.parsed()]

    # (minute, label, request options): what the chains ask for, one call each as they fire
    arrivals: list[tuple[int, str, dict[str, object]]] = [
        (0, "welcome", {"source": "journey:1:v1:step:welcome", "dedupe_key": "welcome-1"}),
    ]
    for n, (name, price) in enumerate(FAVOURITES, start=1):
        arrivals.append(
            (
                n,
                "price-drop",
                {
                    "source": "journey:2:v1:step:notify",
                    "bundle_key": "price-drop",
                    "bundle_item": {"name": name, "price": price},
                    "dedupe_key": f"price-drop:{name}",
                },
            )
        )
    arrivals += [
        (7, "cart-reminder", {"source": "journey:3:v1:step:remind", "priority": 10}),
        (8, "sale", {"source": "campaign:5", "dedupe_key": "campaign:5"}),
        (9, "sale", {"source": "campaign:5", "dedupe_key": "campaign:5"}),  # sent twice
        (
            11,
            "order",
            {"source": "api:key:1", "message_class": "transactional", "topic": None},
        ),
    ]
    assert len(arrivals) == 11
    outcomes: list[SendOutcome] = []
    for minute, label, options in arrivals:
        at = AT + timedelta(minutes=minute)
        with clock.frozen(at), runtime.db.scope() as session:
            [outcome] = service.send(
                session, [request(brand, cid, template_id=templates[label], **options)]
            )
        outcomes.append(outcome)
        with clock.frozen(at):
            run_jobs(worker)

    day2 = AT + timedelta(days=1)  # 09:00 the next day in Moscow
    assert [(o.outcome, o.reason, o.send_at) for o in outcomes] == [
        ("scheduled", "ok", AT),
        # the first price drop leads the bundle; four hours after the welcome (spacing)
        ("scheduled", "deferred_spacing", AT + timedelta(hours=4)),
        *[("bundled", "bundled", AT + timedelta(hours=4))] * 5,
        # the day's two marketing messages are taken: the cart waits for tomorrow
        ("scheduled", "deferred_cap", day2),
        ("scheduled", "deferred_cap", day2 + timedelta(hours=4)),
        ("suppressed", "duplicate", None),
        ("scheduled", "ok", AT + timedelta(minutes=11)),  # transactional: never capped
    ]
    # within the twelve minutes: the welcome and the order confirmation
    assert subjects() == ["Welcome to Garden Shop", "Order 1001 confirmed"]

    for moment in (AT + timedelta(hours=4), day2, day2 + timedelta(hours=4)):
        with clock.frozen(moment):
            with runtime.db.scope() as session:
                service.queue_due(session)  # what the messaging.queue_due monitor does
            run_jobs(worker)
    assert subjects() == [
        "Welcome to Garden Shop",
        "Order 1001 confirmed",
        "Prices dropped on your favourites",
        "Your cart is waiting",
        "Spring sale",
    ]
    bundle = sink.parsed()[2].get_body(preferencelist=("plain",))
    assert bundle is not None
    text = bundle.get_content()
    for name, price in FAVOURITES:  # one e-mail listing all six products
        assert f"{name}: {price} ₽" in text

    # every intent is accounted for: five sent, five bundled into one, one duplicate
    with runtime.db.scope(readonly=True) as session:
        sent = session.scalars(
            select(Delivery.status).where(Delivery.customer_id == cid).order_by(Delivery.id)
        ).all()
        reasons = session.execute(
            select(ContactDecision.status, ContactDecision.reason)
            .where(ContactDecision.customer_id == cid)
            .order_by(ContactDecision.id)
        ).all()
        why = policy.why(session, workspace_id=brand.tenant.workspace_id, customer_id=cid)
    assert sorted(sent) == ["bundled"] * 5 + ["sent"] * 5 + ["suppressed"]
    # the ledger follows each delivery: scheduled decisions are now sent
    assert [tuple(r) for r in reasons] == [
        ("sent" if o.outcome == "scheduled" else o.outcome, o.reason) for o in outcomes
    ]
    assert len(why) == 11
    assert {w["reason"] for w in why} == {
        "ok",
        "deferred_spacing",
        "bundled",
        "deferred_cap",
        "duplicate",
    }
