"""The name rule: what a secret, session, service or volume may be called.

1 to 64 of ``A-Z a-z 0-9 _ -``: safe in a URL path, a file name and a log line without
quoting. Kept in a module of its own, with no dependency, so a client can check a name
without importing the sms and its database layer.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "1 to 64 of A-Z a-z 0-9 _ -"
