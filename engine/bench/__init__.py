"""Benchmarks behind `star bench ...`: each prints a table and writes JSON (with the machine)."""
