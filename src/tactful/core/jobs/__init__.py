"""core/jobs."""
