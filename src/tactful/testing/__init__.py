"""Real local peers for tests and benchmarks (a throwaway PostgreSQL server, …)."""
