"""The known-answer vector of volume format 1: its description and how to rebuild it.

``python -m tests.vectors.volume_kat`` regenerates ``tests/vectors/volume-v1/`` (only
needed if the format changes, which means a new format version and a new vector).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
VECTOR_DIR = HERE / "volume-v1"
VOLUME_DIR = VECTOR_DIR / "volume"
DESCRIPTION = VECTOR_DIR / "vector.json"


def pattern(length: int, seed: int) -> bytes:
    """Deterministic file content: byte i is (i * 31 + seed) mod 251."""
    return bytes((i * 31 + seed) % 251 for i in range(length))


def counter_rng(label: bytes) -> Callable[[int], bytes]:
    """A deterministic stand-in for os.urandom: SHA-256(label || u32 counter), truncated."""
    state = {"counter": 0}

    def rng(size: int) -> bytes:
        block = hashlib.sha256(label + state["counter"].to_bytes(4, "big")).digest()
        state["counter"] += 1
        return block[:size]

    return rng


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DESCRIPTION.read_text())
    return document


def build_plain_tree(root: Path, description: dict[str, Any]) -> None:
    """Create the vector's plaintext tree under ``root`` with the listed modes."""
    root.mkdir()
    for entry in description["dirs"]:
        (root / entry["path"]).mkdir(parents=True, exist_ok=True)
    for entry in description["files"]:
        path = root / entry["path"]
        path.write_bytes(pattern(entry["size"], entry["seed"]))
        os.chmod(path, int(entry["mode"], 8))
    for entry in sorted(description["dirs"], key=lambda e: str(e["path"]), reverse=True):
        os.chmod(root / entry["path"], int(entry["mode"], 8))


DEFAULT = {
    "key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "rng_label": "confide-volume-kat-v1",
    "dirs": [
        {"path": "data", "mode": "755"},
        {"path": "data/deep", "mode": "750"},
        {"path": "empty-dir", "mode": "700"},
    ],
    "files": [
        {"path": "hello.txt", "mode": "640", "size": 13, "seed": 1},
        {"path": "data/empty", "mode": "644", "size": 0, "seed": 0},
        {"path": "data/deep/two-segments.bin", "mode": "600", "size": 1048576 + 5, "seed": 7},
        {"path": "data/deep/exactly-one-segment.bin", "mode": "644", "size": 1048576, "seed": 3},
        {"path": "data/caf\u00e9 \u2603.txt", "mode": "644", "size": 40, "seed": 11},
    ],
    "content_rule": "byte i of a file is (i * 31 + seed) mod 251",
    "rng_rule": (
        "the writer's random bytes come from SHA-256(rng_label || u32 counter) truncated to "
        "the size asked, counter from 0: first the 16-byte volume-version id, then one "
        "16-byte object id per file in manifest order"
    ),
}


def regenerate() -> None:
    from confide.crypto import SymmetricKey
    from confide.volume import encrypt_tree

    description: dict[str, Any] = dict(DEFAULT)
    work = VECTOR_DIR.parent / ".kat-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        build_plain_tree(work / "plain", description)
        result = encrypt_tree(
            work / "plain",
            work / "volume",
            SymmetricKey.from_hex(description["key"]),
            rng=counter_rng(description["rng_label"].encode()),
        )
        description["tag"] = result.tag
        shutil.rmtree(VECTOR_DIR, ignore_errors=True)
        VECTOR_DIR.mkdir()
        shutil.copytree(work / "volume", VOLUME_DIR)
        DESCRIPTION.write_text(json.dumps(description, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    regenerate()
    print(f"wrote {VECTOR_DIR}")
