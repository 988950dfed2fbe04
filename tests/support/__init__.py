"""Helpers shared by the end-to-end tests: polling with a deadline and a real `python -m service` process."""
