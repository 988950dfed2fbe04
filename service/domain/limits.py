"""Limits every layer agrees on: the API refuses what the settings could never allow, and the other way round."""

from __future__ import annotations

MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
"""The longest an attempt may run, for a job's timeoutSeconds and for DEFAULT_TIMEOUT_SECONDS alike (30 days)."""
