"""Where log lines come from: a rotating file followed by position (tail.py),
woken by watchdog (watch.py).  "When to read" is kept apart from "how to read"."""
