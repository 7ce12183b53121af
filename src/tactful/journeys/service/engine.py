"""The engine: customers enter a journey's live version and move through its steps in
batches, inside the caller's transaction.

Each run takes the instances that can move now (those entering, those whose wait ended, those
whose awaited event arrived), groups them by journey, version and step, checks the exit
criteria for the group, runs the step once for the whole group (one policy call for a send,
one warehouse query per branch condition) and repeats with the instances that moved on,
until every one of them waits or has left. A step's effect and the instance's move commit
together, and every move appends one step-log row unique on (instance, visit): a retried job
either finds its work committed or does it once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tactful.core import clock
from tactful.core.jobs.queue import enqueue_many
from tactful.core.runtime import Runtime
from tactful.journeys import store
from tactful.journeys.graph import Graph, parse_graph
from tactful.journeys.models import (
    ACTIVE,
    COMPLETED,
    CRITERIA,
    EXITED,
    FAILED_STEP,
    LIVE_STATUSES,
    STOPPED,
    WAITING,
    Journey,
    JourneyInstance,
)
from tactful.journeys.service import inbox, steps

ADVANCE_JOB = "journeys.advance"
ADVANCE_BATCH = 2000  # instances per advance job: the policy's vectorised path starts here
MAX_FAILURES = 5


@dataclass(frozen=True)
class Entrant:
    """A customer asking to enter: why (a unique key per journey and customer) and with
    what (the triggering event, API data)."""

    customer_id: int
    entry_key: str
    context: dict[str, Any] = field(default_factory=dict)
    trigger_seq: int | None = None


@dataclass(frozen=True)
class EntryOutcome:
    """What became of one entrant."""

    customer_id: int
    entered: bool
    reason: str  # entered | inside | reentry_never | reentry_too_soon | cap_total | cap_day …
    instance_id: int | None = None


@dataclass
class Run:
    """One batch of moves inside one transaction."""

    runtime: Runtime | None
    session: Session
    now: datetime = field(default_factory=clock.now)
    logs: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # instances resuming a wait, and why: "due" (its time came) or "event" (with the event)
    resumed: dict[int, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)
    entered_now: set[int] = field(default_factory=set)
    _graphs: dict[tuple[int, int], Graph] = field(default_factory=dict)
    _journeys: dict[int, Journey] = field(default_factory=dict)

    def graph(self, journey_id: int, version: int) -> Graph:
        """A version's graph (parsed once per run; versions never change)."""
        found = self._graphs.get((journey_id, version))
        if found is None:
            row = store.version(self.session, journey_id, version)
            assert row is not None, f"journey {journey_id} has no version {version}"
            found = self._graphs[(journey_id, version)] = parse_graph(row.graph)
        return found

    def journey(self, journey_id: int) -> Journey:
        """A journey (looked up once per run: every instance of a batch asks for it)."""
        found = self._journeys.get(journey_id) or self.session.get(Journey, journey_id)
        assert found is not None
        self._journeys[journey_id] = found
        return found

    # -- moves ---------------------------------------------------------------------------

    def log(
        self,
        instance: JourneyInstance,
        kind: str,
        outcome: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.logs.append(
            {
                "instance_id": instance.id,
                "journey_id": instance.journey_id,
                "version": instance.version,
                "visit": instance.visit,
                "step_key": instance.step_key or "",
                "kind": kind,
                "outcome": outcome[:60],
                "details": details or {},
                "at": self.now,
            }
        )
        instance.visit += 1
        instance.updated_at = self.now

    def move(
        self,
        instance: JourneyInstance,
        kind: str,
        outcome: str,
        target: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """The step is done: on to ``target`` (None completes the journey)."""
        self.log(instance, kind, outcome, details)
        self.resumed.pop(instance.id, None)
        if target is None:
            self._finish(instance, COMPLETED, None)
            return
        instance.status, instance.step_key, instance.step_at = ACTIVE, target, self.now
        instance.next_at = instance.wait_event = None
        instance.failures, instance.last_error = 0, None

    def exit(
        self,
        instance: JourneyInstance,
        reason: str,
        details: dict[str, Any] | None = None,
        *,
        kind: str,
    ) -> None:
        """Leave the journey early, recording why."""
        self.log(instance, kind, f"exit:{reason}", details)
        self.resumed.pop(instance.id, None)
        self._finish(instance, EXITED, reason)

    def wait(
        self, instance: JourneyInstance, until: datetime | None, event: str | None = None
    ) -> None:
        instance.status, instance.next_at, instance.wait_event = WAITING, until, event
        instance.updated_at = self.now

    def retry_later(self, instance: JourneyInstance, error: str) -> None:
        """The step failed (the warehouse was unavailable …): try again with backoff, and
        give up after a few attempts."""
        instance.failures += 1
        instance.last_error = error[-2000:]
        if instance.failures >= MAX_FAILURES:
            self.exit(instance, "error", {"error": error[-500:]}, kind=FAILED_STEP)
            return
        instance.visit += 1  # a new visit: the next advance job gets a key of its own
        self.wait(instance, self.now + timedelta(minutes=2**instance.failures))

    def _finish(self, instance: JourneyInstance, status: str, reason: str | None) -> None:
        instance.status, instance.exit_reason = status, reason
        instance.finished_at = instance.updated_at = self.now
        instance.active_key = instance.next_at = instance.wait_event = None

    # -- running -------------------------------------------------------------------------

    def run(self, instances: Sequence[JourneyInstance]) -> None:
        """Move instances until each waits or has left the journey."""
        pending = [i for i in instances if i.status in LIVE_STATUSES]
        rounds = 0
        while pending:
            rounds += 1
            groups: dict[tuple[int, int, str], list[JourneyInstance]] = defaultdict(list)
            for instance in pending:
                assert instance.step_key is not None
                groups[(instance.journey_id, instance.version, instance.step_key)].append(instance)
            pending = []
            for (journey_id, version, key), standing in groups.items():
                graph = self.graph(journey_id, version)
                group = self._check_exits(graph, standing)
                if not group:
                    continue
                if rounds > len(graph.steps) + 1:
                    # publishing refuses cycles without a wait; never loop in one transaction
                    for instance in group:
                        self.retry_later(instance, "too many immediate steps in a row")
                    continue
                steps.run_step(self, graph, graph.step(key), group)
                pending.extend(i for i in group if i.status == ACTIVE)
        self.flush()

    def _check_exits(self, graph: Graph, group: list[JourneyInstance]) -> list[JourneyInstance]:
        """Exit criteria, before every step: a stopped journey, the goal, a left segment."""
        journey = self.journey(group[0].journey_id)
        if journey.status == STOPPED:
            for instance in group:
                self.exit(instance, "journey_stopped", kind=CRITERIA)
            return []
        criteria = graph.exit
        if criteria.goal is not None:
            # events of the batch being processed are matched by the trigger job itself
            older = [i for i in group if i.id not in self.entered_now]
            for instance, event in inbox.goal_events(self.session, graph, older, self.now):
                instance.converted_at = event.occurred_at
                self.exit(
                    instance,
                    "goal",
                    {"event": inbox.event_name(event), "message_id": event.message_id},
                    kind=CRITERIA,
                )
        if criteria.left_segment is not None:
            live = [i for i in group if i.status in LIVE_STATUSES]
            members = store.segment_members(
                self.session, criteria.left_segment, [i.customer_id for i in live]
            )
            for instance in live:
                if instance.customer_id not in members:
                    self.exit(
                        instance,
                        "left_segment",
                        {"segment_id": criteria.left_segment},
                        kind=CRITERIA,
                    )
        return [i for i in group if i.status in LIVE_STATUSES]

    def flush(self) -> None:
        """Write the step log and the webhook jobs, then the instances' changes."""
        store.add_log(self.session, self.logs)
        self.logs = []
        if self.webhooks:
            enqueue_many(self.session, steps.WEBHOOK_JOB, self.webhooks)
            self.webhooks = []
        self.session.flush()


# -- entering ------------------------------------------------------------------------------


def _admissible(
    run: Run, journey: Journey, graph: Graph, entrants: list[Entrant]
) -> tuple[list[Entrant], list[EntryOutcome], dict[int, int]]:
    """Entrants the re-entry rules and caps let in (with their entry numbers), and the
    refusals."""
    session = run.session
    history = store.entry_history(session, journey.id, [e.customer_id for e in entrants])
    rules = graph.reentry
    admitted: list[Entrant] = []
    refused: list[EntryOutcome] = []
    numbers: dict[int, int] = {}
    for entrant in entrants:
        count, last, live = history.get(entrant.customer_id, (0, run.now, False))
        reason = None
        if live:
            reason = "inside"
        elif count and rules.mode == "never":
            reason = "reentry_never"
        elif count and rules.mode == "after" and last > run.now - timedelta(days=rules.days or 0):
            reason = "reentry_too_soon"
        if reason is None:
            admitted.append(entrant)
            numbers[entrant.customer_id] = count + 1
        else:
            refused.append(EntryOutcome(entrant.customer_id, False, reason))
    caps = graph.caps
    if admitted and (caps.total is not None or caps.per_day is not None):
        store.journey(session, journey.workspace_id, journey.id, lock=True)  # serialise caps
        room = len(admitted)
        reason = "cap_total"
        if caps.total is not None:
            room = min(room, max(0, caps.total - store.count_entries(session, journey.id)))
        if caps.per_day is not None:
            today = steps.local_day_start(run, steps.workspace_timezone(run, journey))
            left = max(0, caps.per_day - store.count_entries(session, journey.id, today))
            if left < room:
                room, reason = left, "cap_day"
        refused.extend(EntryOutcome(e.customer_id, False, reason) for e in admitted[room:])
        admitted = admitted[:room]
    return admitted, refused, numbers


def enter(run: Run, journey: Journey, entrants: Sequence[Entrant]) -> list[EntryOutcome]:
    """Let customers into a journey's live version and move them as far as they can go now.

    Re-entry rules and caps decide who may enter; an entry key already used by the
    customer (a repeated trigger) or a second live instance is skipped.
    """
    if journey.status != "live" or journey.live_version is None:
        return [EntryOutcome(e.customer_id, False, "not_live") for e in entrants]
    graph = run.graph(journey.id, journey.live_version)
    unique: dict[int, Entrant] = {}
    for entrant in entrants:
        unique.setdefault(entrant.customer_id, entrant)
    admitted, outcomes, numbers = _admissible(run, journey, graph, list(unique.values()))
    first = graph.first
    rows = [
        {
            "journey_id": journey.id,
            "version": journey.live_version,
            "workspace_id": journey.workspace_id,
            "customer_id": e.customer_id,
            "entry_no": numbers[e.customer_id],
            "entry_key": e.entry_key[:200],
            "active_key": f"{journey.id}:{e.customer_id}",
            "status": ACTIVE,
            "step_key": first,
            "visit": 0,
            "next_at": None,
            "wait_event": None,
            "trigger_seq": e.trigger_seq,
            "context": e.context,
            "failures": 0,
            "last_error": None,
            "exit_reason": None,
            "converted_at": None,
            "entered_at": run.now,
            "step_at": run.now,
            "updated_at": run.now,
            "finished_at": None,
        }
        for e in admitted
    ]
    ids = store.insert_instances(run.session, rows)
    created = store.instances(run.session, ids)
    run.entered_now.update(ids)
    by_customer = {i.customer_id: i for i in created}
    for entrant in admitted:
        instance = by_customer.get(entrant.customer_id)
        outcomes.append(
            EntryOutcome(entrant.customer_id, True, "entered", instance.id)
            if instance is not None
            else EntryOutcome(entrant.customer_id, False, "duplicate")
        )
    run.run(created)
    return outcomes


def advance(run: Run, items: Sequence[tuple[int, int]]) -> int:
    """Run queued instances whose wait ended: ``(id, visit)`` pairs from the due monitor;
    one already moved (or left) since is skipped. Returns how many moved."""
    wanted = dict(items)
    found = [
        i
        for i in store.instances(run.session, sorted(wanted), lock=True)
        if i.status == "queued" and wanted.get(i.id) == i.visit
    ]
    for instance in found:
        run.resumed[instance.id] = ("due", None)
    run.run(found)
    return len(found)


def queue_due(session: Session, *, now: datetime, limit: int) -> int:
    """Waiting instances whose time has come become queued, with one advance job per batch
    keyed by its first instance and visit. Returns how many were queued."""
    due = store.claim_due(session, now, limit)
    jobs = []
    for start in range(0, len(due), ADVANCE_BATCH):
        chunk = due[start : start + ADVANCE_BATCH]
        first_id, first_visit = chunk[0]
        jobs.append(
            (f"{ADVANCE_JOB}:{first_id}:{first_visit}", {"items": [list(p) for p in chunk]})
        )
    if jobs:
        enqueue_many(session, ADVANCE_JOB, jobs)
    return len(due)
