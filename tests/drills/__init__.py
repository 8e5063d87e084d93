"""Drills against a running job stack: fault drills (python -m tests.drills) and API fuzzing."""
