"""Benchmarks and chaos drills: each starts a real server and prints its figures next to a baseline."""
