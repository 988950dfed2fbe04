"""Concurrent Job Manager: a persistent job service that runs native programs and keeps every attempt in PostgreSQL."""

__version__ = "0.1.0"
