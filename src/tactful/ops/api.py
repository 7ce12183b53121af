"""The job queue over HTTP: list jobs, see dead ones with their error, retry them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query

from tactful.core.api import SessionDep, api_router, require_scope
from tactful.core.auth import Principal
from tactful.core.jobs import queue
from tactful.ops.schemas import JobOut, RetryResult

router = api_router(prefix="/v1/admin", tags=["operations"])
Admin = Annotated[Principal, require_scope("admin")]


@router.get("/jobs", summary="Jobs, newest first; status=dead lists failed jobs with errors")
def list_jobs(
    session: SessionDep,
    _principal: Admin,
    status: Literal["queued", "running", "done", "dead"] | None = None,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    jobs = queue.list_jobs(session, status=status, name=name, limit=limit)
    return [JobOut.model_validate(j) for j in jobs]


@router.get("/jobs/counts", summary="How many jobs are in each status")
def job_counts(session: SessionDep, _principal: Admin) -> dict[str, int]:
    return queue.counts_by_status(session)


@router.post("/jobs/{job_id}/retry", summary="Put a dead job back in the queue")
def retry_job(job_id: int, session: SessionDep, _principal: Admin) -> RetryResult:
    return RetryResult(requeued=queue.retry_dead(session, job_id))


@router.post("/jobs/retry-dead", summary="Put every dead job back in the queue")
def retry_all(session: SessionDep, _principal: Admin) -> RetryResult:
    return RetryResult(requeued=queue.retry_dead(session))
