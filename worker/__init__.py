"""Kafka consumer-group worker: runs jobs, retries them with backoff, dead-letters the hopeless."""
