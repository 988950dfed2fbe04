"""Claiming queued jobs, launching their processes, recording outcomes, and reconciling after a restart."""
