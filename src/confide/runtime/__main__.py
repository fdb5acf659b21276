"""``python -m confide.runtime JOB_DIR`` (docs/runtime.md)."""

from confide.runtime.main import main

raise SystemExit(main())
