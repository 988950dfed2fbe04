#!/usr/bin/env python3
"""The bundled sample job: sleeps a random 0.1-2 s, then succeeds or fails at random.

Its odds are documented so that GET /stats has something true to find on the very first run:
  start at 90 % success;
  -30 points when the job name (JOB_NAME) contains a digit;
  -20 points when it was given 2 or more arguments.
So "task-123" with two arguments succeeds 40 % of the time, and "backup" with none 90 %.
It prints what it decided, to stdout, so an attempt's output explains itself.
"""

from __future__ import annotations

import os
import random
import sys
import time

BASE_SUCCESS = 0.90
DIGIT_IN_NAME_PENALTY = 0.30
TWO_OR_MORE_ARGUMENTS_PENALTY = 0.20


def success_probability(job_name: str, argument_count: int) -> float:
    probability = BASE_SUCCESS
    if any(character.isdigit() for character in job_name):
        probability -= DIGIT_IN_NAME_PENALTY
    if argument_count >= 2:
        probability -= TWO_OR_MORE_ARGUMENTS_PENALTY
    return probability


def main() -> int:
    job_name = os.environ.get("JOB_NAME", "")
    arguments = sys.argv[1:]
    probability = success_probability(job_name, len(arguments))
    duration = random.uniform(0.1, 2.0)
    succeeded = random.random() < probability
    print(f"sample job {job_name!r} args={arguments}: p(success)={probability:.2f}, sleeping {duration:.2f} s")
    time.sleep(duration)
    print("succeeded" if succeeded else "failed", flush=True)
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
