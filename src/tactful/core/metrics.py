"""Prometheus metrics shared across features. Gauges that need the database are collected
on scrape by collectors the app registers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_FINISHED = Counter(
    "tactful_jobs_finished_total",
    "Jobs that finished an attempt, by job and outcome",
    ["job", "status"],
)
JOB_DURATION = Histogram(
    "tactful_job_duration_seconds",
    "Time spent running a job attempt",
    ["job"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
)
HTTP_REQUESTS = Counter(
    "tactful_http_requests_total",
    "HTTP requests by route and status class",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "tactful_http_request_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
DISPATCH_SECONDS = Counter(
    "tactful_dispatch_seconds_total",
    "Time dispatch runs spent, by provider kind and phase: preparing (policy re-check, "
    "rendering, MIME, the 'sending' commit), sending (on the wire) and recording (the "
    "outcomes' commit); in runs of several groups the first and last overlap sending",
    ["kind", "phase"],
)
