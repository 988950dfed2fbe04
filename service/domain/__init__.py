"""The core vocabulary of the service: statuses, outcomes, the state machine and job identifiers."""
