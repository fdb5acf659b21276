"""``confide app init``: a bundle that already follows the iExec app contract."""

from __future__ import annotations

from pathlib import Path

import yaml

from confide.bundle.measure import MANIFEST_NAME, RUNTIMES
from confide.errors import ConfideError

_MANIFEST_HEADER = (
    "# The app bundle's manifest: every field here is part of the app's measurement.\n"
)

_PYTHON = '''\
"""A confide app. It follows the iExec contract:

- inputs: IEXEC_IN (read-only), IEXEC_INPUT_FILES_NUMBER, IEXEC_INPUT_FILE_NAME_1..N,
  IEXEC_DATASET_FILENAME, command-line arguments;
- secrets: IEXEC_APP_DEVELOPER_SECRET, IEXEC_REQUESTER_SECRET_1..N (never print them);
- output: write files to IEXEC_OUT and describe them in IEXEC_OUT/computed.json.
"""

import json
import os
import sys
from pathlib import Path


def main() -> None:
    out = Path(os.environ.get("IEXEC_OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    inputs = int(os.environ.get("IEXEC_INPUT_FILES_NUMBER", "0"))
    summary = {
        "arguments": sys.argv[1:],
        "input_files": inputs,
        "has_app_secret": "IEXEC_APP_DEVELOPER_SECRET" in os.environ,
        "requester_secrets": sorted(
            k.removeprefix("IEXEC_REQUESTER_SECRET_")
            for k in os.environ
            if k.startswith("IEXEC_REQUESTER_SECRET_")
        ),
    }
    result = out / "result.json"
    result.write_text(json.dumps(summary, indent=2) + "\\n")
    computed = {"deterministic-output-path": str(result)}
    (out / "computed.json").write_text(json.dumps(computed) + "\\n")


if __name__ == "__main__":
    main()
'''

_NODE = """\
// A confide app. It follows the iExec contract:
// inputs: IEXEC_IN (read-only), IEXEC_INPUT_FILES_NUMBER, IEXEC_INPUT_FILE_NAME_1..N,
// IEXEC_DATASET_FILENAME, command-line arguments; secrets: IEXEC_APP_DEVELOPER_SECRET,
// IEXEC_REQUESTER_SECRET_1..N (never print them); output: files in IEXEC_OUT, described
// in IEXEC_OUT/computed.json.
const fs = require("fs");
const path = require("path");

const out = process.env.IEXEC_OUT || "out";
fs.mkdirSync(out, { recursive: true });
const summary = {
  arguments: process.argv.slice(2),
  input_files: Number(process.env.IEXEC_INPUT_FILES_NUMBER || "0"),
  has_app_secret: "IEXEC_APP_DEVELOPER_SECRET" in process.env,
  requester_secrets: Object.keys(process.env)
    .filter((k) => k.startsWith("IEXEC_REQUESTER_SECRET_"))
    .map((k) => k.slice("IEXEC_REQUESTER_SECRET_".length))
    .sort(),
};
const result = path.join(out, "result.json");
fs.writeFileSync(result, JSON.stringify(summary, null, 2) + "\\n");
fs.writeFileSync(
  path.join(out, "computed.json"),
  JSON.stringify({ "deterministic-output-path": result }) + "\\n"
);
"""


_NATIVE = """\
#!/bin/sh
# A confide app run as is (runtime: native): any executable of the bundle, a compiled
# program or a script, measured with its mode. It follows the iExec contract:
# inputs: IEXEC_IN (read-only), IEXEC_INPUT_FILES_NUMBER, IEXEC_INPUT_FILE_NAME_1..N,
# IEXEC_DATASET_FILENAME, command-line arguments; secrets: IEXEC_APP_DEVELOPER_SECRET,
# IEXEC_REQUESTER_SECRET_1..N (never print them); output: files in IEXEC_OUT, described
# in IEXEC_OUT/computed.json.
set -eu
out="${IEXEC_OUT:-out}"
mkdir -p "$out"
printf '{"arguments": %d, "input_files": %s}\\n' "$#" "${IEXEC_INPUT_FILES_NUMBER:-0}" \\
    > "$out/result.json"
printf '{"deterministic-output-path": "%s/result.json"}\\n' "$out" > "$out/computed.json"
"""


def init_bundle(directory: Path, runtime: str = "python", name: str | None = None) -> list[Path]:
    """Write ``confide-app.yml`` and ``app.py`` (``app.js``, or an executable ``app.sh``
    for a native app); refuse to overwrite."""
    if runtime not in RUNTIMES:
        raise ConfideError(f"--lang is one of {', '.join(RUNTIMES)}")
    entrypoint = RUNTIMES[runtime]
    targets = [directory / MANIFEST_NAME, directory / entrypoint]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise ConfideError(f"{existing[0]} already exists; nothing was written")
    directory.mkdir(parents=True, exist_ok=True)
    app_name = name or directory.resolve().name or "app"
    fields = {
        "name": app_name,
        "entrypoint": entrypoint,
        "runtime": runtime,
        "heap": "64M",
        "stack": "8M",
        "threads": 4,
    }
    # Dumped, not formatted: a name can never inject a field.
    targets[0].write_text(_MANIFEST_HEADER + yaml.safe_dump(fields, sort_keys=False))
    targets[1].write_text({"python": _PYTHON, "node": _NODE, "native": _NATIVE}[runtime])
    if runtime == "native":
        targets[1].chmod(0o755)  # run as is: its mode is measured with it
    return targets
