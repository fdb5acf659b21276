"""``python -m confide.runtime JOB_DIR`` (docs/runtime.md)."""

import sys

# httpx imports its command-line client (rich, click: ~60 ms) unless that import fails;
# the runtime never uses it, and starts once per task.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from confide.runtime.main import main  # noqa: E402

raise SystemExit(main())
