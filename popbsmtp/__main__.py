"""Allow ``python -m popbsmtp``."""

from popbsmtp.cli import main

raise SystemExit(main())
