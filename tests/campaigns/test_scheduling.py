"""When messages go: a local time in each customer's time zone, throttling, recurring runs
with their own recipients, and the planning arithmetic behind them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
from fastapi.testclient import TestClient

from tactful.campaigns import planning
from tactful.campaigns.models import CampaignWave
from tactful.campaigns.schemas import RecurringSchedule
from tactful.core import clock
from tactful.core.jobs.runner import Worker
from tactful.core.runtime import Runtime
from tests.campaigns.conftest import (
    AT,
    Brand,
    MakeCustomer,
    MakeSegment,
    SmtpSink,
    add_members,
    count,
    deliveries,
    recipients,
    spec,
    tick,
)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_throttle_spreads_sends_and_never_sends_early() -> None:
    wished = np.array([0, 0, 0, 0, 0, 30, 30, 500], dtype=np.int64)
    # 2 a minute: the first slot holds two, the 30 s group waits for free slots
    assert planning.throttle(wished, 2).tolist() == [0, 0, 60, 60, 120, 120, 180, 500]
    assert planning.throttle(wished, None).tolist() == wished.tolist()
    # a later group that fits in the current slot keeps its own (later) time
    assert planning.throttle(np.array([0, 20], dtype=np.int64), 5).tolist() == [0, 20]


def test_waves_by_time_and_size() -> None:
    ids = np.array([5, 3, 9, 1, 7], dtype=np.int64)
    wished = np.array([100, 100, 40, 100, 40], dtype=np.int64)
    cut = planning.waves(ids, wished, per_minute=None, size=2)
    assert [(int(w.send_at.timestamp()), w.customer_ids.tolist()) for w in cut] == [
        (40, [7, 9]),
        (100, [1, 3]),
        (100, [5]),
    ]
    throttled = planning.waves(ids, wished, per_minute=1)
    # one a minute: 9 waits for the 40 s slot to pass, the 100 s group queues behind it
    assert [(int(w.send_at.timestamp()), w.customer_ids.tolist()) for w in throttled] == [
        (40, [7]),
        (100, [9]),
        (160, [1]),
        (220, [3]),
        (280, [5]),
    ]


def test_local_moments_per_zone() -> None:
    ids = np.array([1, 2, 3, 4], dtype=np.int64)
    zones = {"Asia/Vladivostok": np.array([2]), "America/New_York": np.array([3, 4])}
    start = _utc(2026, 6, 1, 20, 0)
    wished = planning.desired_times(
        ids,
        zones,
        start=start,
        local_date=date(2026, 6, 2),
        local_time="10:00",
        workspace_tz="Europe/Moscow",
    )
    assert [datetime.fromtimestamp(int(s), UTC) for s in wished] == [
        _utc(2026, 6, 2, 7, 0),  # Moscow (the workspace's zone)
        _utc(2026, 6, 2, 0, 0),  # Vladivostok
        _utc(2026, 6, 2, 14, 0),  # New York
        _utc(2026, 6, 2, 14, 0),
    ]
    late = planning.desired_times(
        ids,
        zones,
        start=_utc(2026, 6, 2, 3, 0),
        local_date=date(2026, 6, 2),
        local_time="10:00",
        workspace_tz="Europe/Moscow",
    )
    # where 10:00 has passed when the run starts, customers get it at once
    assert int(late[1]) == int(_utc(2026, 6, 2, 3, 0).timestamp())


def test_next_occurrences() -> None:
    weekly = RecurringSchedule(
        kind="recurring", frequency="weekly", time="10:00", weekdays=["mon", "thu"]
    )
    monday = _utc(2026, 6, 1, 6, 0)  # a Monday, 09:00 in Moscow
    first = planning.next_occurrence(
        weekly, after=monday, workspace_tz="Europe/Moscow", runs_so_far=0
    )
    assert first == planning.Occurrence(_utc(2026, 6, 1, 7, 0))
    second = planning.next_occurrence(
        weekly, after=first.start if first else monday, workspace_tz="Europe/Moscow", runs_so_far=1
    )
    assert second == planning.Occurrence(_utc(2026, 6, 4, 7, 0))
    ended = weekly.model_copy(update={"until": date(2026, 6, 3)})
    assert (
        planning.next_occurrence(
            ended, after=_utc(2026, 6, 1, 8, 0), workspace_tz="Europe/Moscow", runs_so_far=1
        )
        is None
    )
    capped = weekly.model_copy(update={"max_runs": 1})
    assert (
        planning.next_occurrence(capped, after=monday, workspace_tz="Europe/Moscow", runs_so_far=1)
        is None
    )
    local = RecurringSchedule(
        kind="recurring", frequency="daily", time="10:00", customer_local=True
    )
    assert planning.next_occurrence(
        local, after=monday, workspace_tz="Europe/Moscow", runs_so_far=0
    ) == planning.Occurrence(monday, date(2026, 6, 1), "10:00")


def test_local_time_sends_at_ten_in_each_customers_zone(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    sink, _port = smtp
    with runtime.db.scope() as session:
        moscow = make_customer(session=session)
        vladivostok = make_customer(session=session, timezone="Asia/Vladivostok")
        new_york = make_customer(session=session, timezone="America/New_York")
    schedule = {"kind": "local_time", "date": "2026-06-02", "time": "10:00"}
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=brand.tenant.headers,
            json=spec(brand, [make_segment([moscow, vladivostok, new_york])], schedule=schedule),
        ).json()["id"]
        launched = client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=brand.tenant.headers,
            json={"expected_recipients": 3},
        ).json()
        # the run starts when 10:00 on that day first happens anywhere (UTC+14)
        assert launched["next_run_at"] == "2026-06-01T20:00:00Z"
        tick(worker)
        assert count(runtime, CampaignWave) == 0
    sent_at = {
        vladivostok: _utc(2026, 6, 2, 0, 0),
        moscow: _utc(2026, 6, 2, 7, 0),
        new_york: _utc(2026, 6, 2, 14, 0),
    }
    with clock.frozen(_utc(2026, 6, 1, 20, 0)):
        tick(worker)
    with runtime.db.scope(readonly=True) as session:
        waves = session.query(CampaignWave).order_by(CampaignWave.number).all()
        assert [(w.send_at, w.size, w.status) for w in waves] == [
            (at, 1, "pending") for at in sorted(sent_at.values())
        ]
    assert {r.customer_id: r.wave for r in recipients(runtime, cid)} == {
        vladivostok: 0,
        moscow: 1,
        new_york: 2,
    }
    for customer, at in sorted(sent_at.items(), key=lambda item: item[1]):
        with clock.frozen(at - timedelta(minutes=1)):
            tick(worker)
            assert customer not in {d.customer_id for d in deliveries(runtime, cid)}
        with clock.frozen(at):
            tick(worker)
        [row] = [d for d in deliveries(runtime, cid) if d.customer_id == customer]
        assert (row.status, row.send_at, row.sent_at) == ("sent", at, at)
    assert len(sink.messages) == 3
    assert client.get(f"/v1/campaigns/{cid}", headers=brand.tenant.headers).json()["status"] == (
        "done"
    )


def test_throttled_campaign_goes_out_at_the_rate(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    with runtime.db.scope() as session:
        people = sorted(make_customer(session=session) for _ in range(5))
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns",
            headers=brand.tenant.headers,
            json=spec(brand, [make_segment(people)], throttle_per_minute=2),
        ).json()["id"]
        client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=brand.tenant.headers,
            json={"expected_recipients": 5},
        )
        tick(worker)
        assert [d.customer_id for d in deliveries(runtime, cid)] == people[:2]
        for _minute in (1, 2):
            clock.advance(timedelta(minutes=1))
            tick(worker)
    rows = deliveries(runtime, cid)
    assert [(d.customer_id, d.send_at, d.status) for d in rows] == [
        (c, AT + timedelta(minutes=n // 2), "sent") for n, c in enumerate(people)
    ]


def test_recurring_runs_take_their_own_audience(
    client: TestClient,
    runtime: Runtime,
    brand: Brand,
    smtp: tuple[SmtpSink, int],
    make_customer: MakeCustomer,
    make_segment: MakeSegment,
    worker: Worker,
) -> None:
    sink, _port = smtp
    with runtime.db.scope() as session:
        first, second, newcomer = (make_customer(session=session) for _ in range(3))
    segment = make_segment([first, second])
    schedule = {"kind": "recurring", "frequency": "daily", "time": "10:00", "max_runs": 2}
    headers = brand.tenant.headers
    ten = _utc(2026, 6, 1, 7, 0)  # 10:00 in Moscow, the workspace's zone
    with clock.frozen(AT):
        cid = client.post(
            "/v1/campaigns", headers=headers, json=spec(brand, [segment], schedule=schedule)
        ).json()["id"]
        launched = client.post(
            f"/v1/campaigns/{cid}/launch",
            headers=headers,
            json={"expected_recipients": 2, "tolerance": 0.5},
        ).json()
        assert (launched["status"], launched["next_run_at"]) == (
            "scheduled",
            "2026-06-01T07:00:00Z",
        )
    with clock.frozen(ten):
        tick(worker)
        after_first = client.get(f"/v1/campaigns/{cid}", headers=headers).json()
        assert (after_first["status"], after_first["runs_started"], after_first["next_run_at"]) == (
            "scheduled",
            1,
            "2026-06-02T07:00:00Z",
        )
        with runtime.db.scope() as session:
            add_members(session, segment, [newcomer])
    with clock.frozen(ten + timedelta(days=1)):
        tick(worker)
    runs = client.get(f"/v1/campaigns/{cid}/runs", headers=headers).json()
    assert [(r["number"], r["status"], r["targeted"], r["scheduled_at"]) for r in runs] == [
        (1, "done", 2, "2026-06-01T07:00:00Z"),
        (2, "done", 3, "2026-06-02T07:00:00Z"),
    ]
    final = client.get(f"/v1/campaigns/{cid}", headers=headers).json()
    assert (final["status"], final["next_run_at"]) == ("done", None)
    by_run = [(r.run_id, r.customer_id) for r in recipients(runtime, cid)]
    run_ids = sorted({run for run, _c in by_run})
    assert by_run == [
        (run_ids[0], first),
        (run_ids[0], second),
        (run_ids[1], first),
        (run_ids[1], second),
        (run_ids[1], newcomer),
    ]
    rows = deliveries(runtime, cid)
    assert sorted((d.customer_id, d.send_at) for d in rows) == sorted(
        [(first, ten), (second, ten)]
        + [(c, ten + timedelta(days=1)) for c in (first, second, newcomer)]
    )
    assert len(sink.messages) == 5
