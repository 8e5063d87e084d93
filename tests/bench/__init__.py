"""Benchmarks behind `make bench`: each module runs real local stacks and prints a table."""
