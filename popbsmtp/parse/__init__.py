"""Parse: a raw log line or journal entry into an event (envelope, matcher, addresses).

The server profiles it uses live in :mod:`popbsmtp.profiles`.
"""
