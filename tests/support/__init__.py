"""Real local services (Kafka, PostgreSQL, gunicorn, job workers) for integration tests, drills
and benchmarks: each on its own loopback port and data dir, started and stopped by the caller."""
