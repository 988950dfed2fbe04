"""Helpers shared by the test modules: real processes, polling with a deadline, supervisors, the server under test."""
