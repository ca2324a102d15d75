"""popbsmtp: let mail users relay through Postfix after a POP3/IMAP login.

The package follows the mail log, turns successful logins into time-limited
grants and projects them into a Postfix lookup table (see docs/).
"""

__version__ = "0.1.0"
