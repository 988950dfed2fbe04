#!/bin/sh
# The simplest sample job: sleep 0.1-2 s, then exit 0 (80 %) or 1 (20 %).
# Set JOB_SCRIPT_PATH to this file to use it. The Python sample has name- and argument-dependent odds.
tenths=$(awk 'BEGIN { srand(); print int(1 + rand() * 20) }')
sleep "$(awk -v t="$tenths" 'BEGIN { print t / 10 }')"
roll=$(awk 'BEGIN { srand(); print int(rand() * 100) }')
echo "sample job ${JOB_NAME:-} slept 0.$tenths s"
[ "$roll" -lt 80 ]
