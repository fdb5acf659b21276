"""``python -m confide.runtime JOB_DIR`` (docs/runtime.md)."""

import sys

# The runtime starts once per task, so what it imports is paid by every task (its CPU
# sets how many tasks a worker host runs per second). Three imports it never needs are
# made to fail, each down a path its importer takes when the module is not installed:
# - httpx's command-line client (rich, click: ~60 ms);
# - anyio, which httpcore imports for async locks (~9 ms): the runtime is synchronous;
# - cffi, which pycryptodome (eth-hash's Keccak) prefers to ctypes: it parses C
#   declarations with pycparser at every start (~30 ms). coincurve's compiled module
#   does not import it.
for _unused in ("httpx._main", "anyio", "cffi"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]

from confide.runtime.main import main  # noqa: E402

raise SystemExit(main())
