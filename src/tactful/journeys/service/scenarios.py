"""Ready-made journeys a marketer starts from: each creates its message templates (once per
brand) and a draft journey that is valid as it stands and ready to be edited or published."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from tactful.core.errors import NotFound
from tactful.journeys import store
from tactful.journeys.models import Journey
from tactful.journeys.service.journeys import create_journey, update_journey
from tactful.messaging import service as messaging
from tactful.segments import service as segments

CHURN_SEGMENT = "Churning customers"
ITEMS = """{% for item in event.items %}<mj-text>{{ item.name | default: item.product_id }} ×
{{ item.quantity | default: 1 }} — {{ item.price }}</mj-text>{% endfor %}"""


def _email(headline: str, body: str, button: str = "") -> str:
    link = (
        f"<mj-button href=\"{{{{ journey.link | default: '#' }}}}\">{button}</mj-button>"
        if button
        else ""
    )
    return (
        "<mj-section><mj-column>"
        f'<mj-text font-size="20px">{headline}</mj-text>'
        f"<mj-text>{body}</mj-text>{link}"
        "</mj-column></mj-section>"
    )


@dataclass
class Builder:
    """Creates (or reuses) what a scenario needs in a brand."""

    session: Session
    workspace_id: int
    brand_id: int
    actor: str

    def template(self, key: str, name: str, parts: dict[str, dict[str, str]]) -> int:
        """A message template of the brand by key, created from ``parts`` if missing."""
        for row in messaging.list_templates(
            self.session, workspace_id=self.workspace_id, kind="message", brand_id=self.brand_id
        ):
            if row.key == key:
                return row.id
        row, _warnings = messaging.save_template(
            self.session,
            workspace_id=self.workspace_id,
            brand_id=self.brand_id,
            kind="message",
            key=key,
            name=name,
            parts=parts,
            actor=self.actor,
        )
        return row.id

    def churn_segment(self) -> int:
        """The segment of customers at risk or lapsed, refreshed as metrics change."""
        for row in segments.list_segments(self.session, workspace_id=self.workspace_id):
            if row.name == CHURN_SEGMENT:
                return row.id
        return segments.create_segment(
            self.session,
            workspace_id=self.workspace_id,
            name=CHURN_SEGMENT,
            description="Customers whose lifecycle stage is at risk or lapsed",
            definition={
                "type": "metric",
                "metric": "lifecycle_stage",
                "operator": "in",
                "value": ["at_risk", "lapsed"],
            },
            refresh_mode="continuous",
            actor=self.actor,
        ).id


def _abandoned_cart(b: Builder) -> dict[str, Any]:
    reminder = b.template(
        "journey_cart_reminder",
        "Your cart is waiting",
        {
            "email": {
                "subject": "{{ customer.first_name | default: 'Hello' }}, your cart is waiting",
                "body": _email("You left these in your cart", ITEMS, "Back to the cart"),
            },
            "push": {"title": "Your cart", "text": "{{ event.items.size }} items are waiting"},
            "sms": {"text": "Your cart ({{ event.items.size }} items) is waiting for you"},
        },
    )
    same_cart = {"event": "Order Completed", "same_as_trigger": ["cart_id"]}
    return {
        "trigger": {"type": "event", "event": "Checkout Started"},
        "steps": [
            {
                "key": "wait_for_order",
                "type": "wait_for_event",
                "title": "Did they order this cart within the hour?",
                "event": same_cart,
                "timeout": "PT1H",
                "on_event": None,
                "on_timeout": "remind",
            },
            {
                "key": "remind",
                "type": "send",
                "template_id": reminder,
                "channels": ["email"],
                "next": "wait_a_day",
            },
            {"key": "wait_a_day", "type": "wait", "duration": "P1D", "next": "remind_again"},
            {
                "key": "remind_again",
                "type": "send",
                "template_id": reminder,
                "channels": [{"channel": "push", "timeout": "PT4H"}, {"channel": "sms"}],
            },
        ],
        "exit": {"goal": {"events": [same_cart], "within": "P3D"}},
        "reentry": {"mode": "always"},
    }


def _welcome(b: Builder) -> dict[str, Any]:
    parts = {
        1: (
            "Welcome",
            "Welcome aboard, {{ customer.first_name | default: 'friend' }}!",
            "Here is what we are about.",
        ),
        2: ("Our bestsellers", "What our customers love", "The garden tools everyone asks for."),
        3: (
            "A gift for your first order",
            "Your first order is on us (almost)",
            "Show this e-mail at the till or use it online this week.",
        ),
    }
    ids = {
        n: b.template(
            f"journey_welcome_{n}",
            name,
            {"email": {"subject": subject, "body": _email(subject, text, "Visit the shop")}},
        )
        for n, (name, subject, text) in parts.items()
    }
    return {
        "trigger": {"type": "event", "event": "Signed Up"},
        "steps": [
            {
                "key": "welcome",
                "type": "send",
                "template_id": ids[1],
                "channels": ["email"],
                "next": "wait_2_days",
            },
            {"key": "wait_2_days", "type": "wait", "duration": "P2D", "next": "bestsellers"},
            {
                "key": "bestsellers",
                "type": "send",
                "template_id": ids[2],
                "channels": ["email"],
                "next": "wait_5_days",
            },
            {"key": "wait_5_days", "type": "wait", "duration": "P5D", "next": "first_order_gift"},
            {
                "key": "first_order_gift",
                "type": "send",
                "template_id": ids[3],
                "channels": ["email"],
            },
        ],
        "exit": {"goal": {"events": [{"event": "$purchase"}], "within": "P7D"}},
        "reentry": {"mode": "never"},
    }


def _birthday(b: Builder) -> dict[str, Any]:
    greeting = b.template(
        "journey_birthday",
        "Happy birthday",
        {
            "email": {
                "subject": "Happy birthday, {{ customer.first_name | default: 'friend' }}!",
                "body": _email(
                    "Happy birthday!", "A birthday gift is waiting for you.", "Claim it"
                ),
            },
            "sms": {"text": "Happy birthday! A gift is waiting for you in the shop."},
        },
    )
    return {
        "trigger": {"type": "date", "attribute": "birthday", "days_before": 0, "at": "10:00:00"},
        "steps": [
            {
                "key": "greet",
                "type": "send",
                "template_id": greeting,
                "channels": [{"channel": "email", "timeout": "PT6H"}, {"channel": "sms"}],
            }
        ],
        # one entry per birthday: the entry key is the date
        "reentry": {"mode": "always"},
    }


def _win_back(b: Builder) -> dict[str, Any]:
    churning = b.churn_segment()
    offer = b.template(
        "journey_win_back",
        "We miss you",
        {
            "email": {
                "subject": "We miss you, {{ customer.first_name | default: 'friend' }}",
                "body": _email("It has been a while", "Come back for 10% off.", "Shop now"),
            }
        },
    )
    stronger = b.template(
        "journey_win_back_2",
        "A bigger thank-you",
        {
            "email": {
                "subject": "20% off, just for you",
                "body": _email("Still thinking of you", "Here is 20% off anything.", "Shop now"),
            },
            "sms": {"text": "20% off anything this week, just for you."},
        },
    )
    return {
        "trigger": {"type": "segment", "segment_id": churning, "on": "enter"},
        "steps": [
            {
                "key": "offer",
                "type": "send",
                "template_id": offer,
                "channels": ["email"],
                "next": "two_weeks",
            },
            {"key": "two_weeks", "type": "wait", "duration": "P14D", "next": "still_churning"},
            {
                "key": "still_churning",
                "type": "branch",
                "title": "Is the customer still churning?",
                "branches": [
                    {
                        "label": "still_churning",
                        "condition": {"type": "segment", "segment_id": churning},
                        "next": "stronger_offer",
                    }
                ],
                "otherwise": "recovered",
            },
            {
                "key": "stronger_offer",
                "type": "send",
                "template_id": stronger,
                "channels": [{"channel": "email", "timeout": "P1D"}, {"channel": "sms"}],
            },
            {"key": "recovered", "type": "exit", "reason": "no_longer_churning"},
        ],
        "exit": {"goal": {"events": [{"event": "$purchase"}], "within": "P14D"}},
        "reentry": {"mode": "after", "days": 90},
    }


def _cross_sell(b: Builder) -> dict[str, Any]:
    template = b.template(
        "journey_cross_sell",
        "Goes well with your purchase",
        {
            "email": {
                "subject": "How are you getting on with your purchase?",
                "body": _email(
                    "Thank you for your order",
                    "You bought:" + ITEMS + "<mj-text>These go well with it.</mj-text>",
                    "See more",
                ),
            }
        },
    )
    return {
        "trigger": {"type": "event", "event": "$purchase"},
        "steps": [
            {"key": "wait_3_days", "type": "wait", "duration": "P3D", "next": "morning"},
            {"key": "morning", "type": "wait_until", "time": "10:00:00", "next": "cross_sell"},
            {"key": "cross_sell", "type": "send", "template_id": template, "channels": ["email"]},
        ],
        "exit": {"goal": {"events": [{"event": "$purchase"}], "within": "P7D"}},
        "reentry": {"mode": "after", "days": 30},
    }


def _confirmation_call(b: Builder) -> dict[str, Any]:
    confirm = b.template(
        "journey_confirm_email",
        "Confirm your e-mail",
        {
            "email": {
                "subject": "Please confirm your e-mail address",
                "body": _email(
                    "One more step", "Confirm your address to finish signing up.", "Confirm"
                ),
            }
        },
    )
    call = b.template(
        "journey_confirm_call",
        "Call: help to finish signing up",
        {
            "call": {
                "text": "Call {{ customer.name | default: 'the customer' }}: they signed up on "
                "{{ event.occurred_at | slice: 0, 10 }} and have not opened the confirmation "
                "e-mail. Offer help to finish signing up."
            }
        },
    )
    return {
        "trigger": {"type": "event", "event": "Signed Up"},
        "steps": [
            {
                "key": "confirm",
                "type": "send",
                "template_id": confirm,
                "channels": ["email"],
                "message_class": "service",
                "next": "wait_2_days",
            },
            {"key": "wait_2_days", "type": "wait", "duration": "P2D", "next": "opened"},
            {
                "key": "opened",
                "type": "branch",
                "title": "Did they open the confirmation?",
                # the condition names this journey: filled in once it has an id
                "branches": [{"label": "opened", "condition": {}, "next": None}],
                "otherwise": "call",
            },
            {"key": "call", "type": "call_task", "template_id": call},
        ],
        "reentry": {"mode": "never"},
    }


def _opened_condition(journey: Journey) -> dict[str, Any]:
    return {
        "type": "message",
        "action": "opened",
        "journey_id": str(journey.id),
        "window": {"days": 7},
    }


@dataclass(frozen=True)
class Scenario:
    """A ready-made journey."""

    key: str
    name: str
    description: str
    build: Callable[[Builder], dict[str, Any]]


SCENARIOS = {
    s.key: s
    for s in (
        Scenario(
            "abandoned_cart",
            "Abandoned cart",
            "Checkout started and no order of the same cart within an hour: an e-mail with the "
            "cart's items, and a day later a push (or an SMS). Ordering the cart ends it.",
            _abandoned_cart,
        ),
        Scenario(
            "welcome_series",
            "Welcome series",
            "Three e-mails over a week after signing up; the first purchase ends it.",
            _welcome,
        ),
        Scenario(
            "birthday",
            "Birthday",
            "A greeting at 10:00 on the customer's birthday in their time zone (e-mail, "
            "else SMS), every year.",
            _birthday,
        ),
        Scenario(
            "win_back",
            "Win-back",
            "Customers who start churning get an offer; two weeks later those still churning "
            "get a stronger one, the others leave. A purchase ends it.",
            _win_back,
        ),
        Scenario(
            "post_purchase_cross_sell",
            "Post-purchase cross-sell",
            "Three days after a purchase, at 10:00 their time, an e-mail about what goes well "
            "with the items bought.",
            _cross_sell,
        ),
        Scenario(
            "signup_confirmation_call",
            "Registered but did not confirm: call",
            "After signing up, a confirmation e-mail; if it was not opened within two days, a "
            "call task for a person.",
            _confirmation_call,
        ),
    )
}


def create_from_scenario(
    session: Session,
    *,
    workspace_id: int,
    brand_id: int,
    scenario: str,
    actor: str,
    name: str | None = None,
) -> Journey:
    """A draft journey from a ready-made scenario, with its templates (and segment)."""
    found = SCENARIOS.get(scenario)
    if found is None:
        raise NotFound(
            f"there is no scenario {scenario!r}; choose one of {sorted(SCENARIOS)}",
            field="scenario",
        )
    builder = Builder(session, workspace_id, brand_id, actor)
    graph = found.build(builder)
    title = name or found.name
    if name is None:
        number = 1
        while store.by_name(session, workspace_id, title) is not None:
            number += 1
            title = f"{found.name} {number}"
    if scenario == "signup_confirmation_call":
        # a draft first (the condition needs the journey's id), then the real condition
        journey = create_journey(
            session,
            workspace_id=workspace_id,
            brand_id=brand_id,
            name=title,
            graph=graph,
            description=found.description,
            scenario=scenario,
            actor=actor,
        )
        for step in graph["steps"]:
            if step["key"] == "opened":
                step["branches"][0]["condition"] = _opened_condition(journey)
        return update_journey(
            session, workspace_id=workspace_id, journey_id=journey.id, graph=graph, actor=actor
        )
    return create_journey(
        session,
        workspace_id=workspace_id,
        brand_id=brand_id,
        name=title,
        graph=graph,
        description=found.description,
        scenario=scenario,
        actor=actor,
    )
