"""Input files: fetched by the runtime through the relay, each checked against the
SHA-256 its order pins.

https only (plain http only with the job's test flag, which also lets the relay reach
loopback); redirects are followed here, one at a time, each new URL checked again (its
scheme here, its address by the relay, after resolution); the body is bounded and hashed
while it streams. A file is saved in ``IEXEC_IN`` under the last segment of its URL's
path (``input-N`` when that is not a plain file name), as iExec does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import posixpath
from pathlib import Path
from urllib.parse import unquote

import httpx

from confide.relay.addresses import AddressRefusedError, check_address
from confide.runtime.stages import PRE_COMPUTE_FAILED, TaskFailure

MAX_REDIRECTS = 5
MAX_INPUT_BYTES = 512 << 20  # each input file
MAX_TOTAL_BYTES = 1 << 30  # all of them
TIMEOUT_SECONDS = 60.0
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 16


def input_name(url: str, index: int) -> str:
    """The file name an input gets in IEXEC_IN: its URL's last path segment when that is
    a plain name, else ``input-{index}``."""
    path = httpx.URL(url).path
    name = unquote(posixpath.basename(path))
    plain = (
        name not in ("", ".", "..")
        and "/" not in name
        and "\x00" not in name
        and not name.startswith(".")
        and len(name.encode()) <= 200
        and name.isprintable()
    )
    return name if plain else f"input-{index}"


def check_url(url: httpx.URL, *, allow_loopback: bool) -> None:
    """The scheme (https; http only under the test flag) and, for a literal address, the
    address (the relay checks every address again after resolution)."""
    if url.scheme != "https" and not (allow_loopback and url.scheme == "http"):
        raise TaskFailure(PRE_COMPUTE_FAILED, f"input file URL {url} is not https")
    if url.userinfo:
        raise TaskFailure(PRE_COMPUTE_FAILED, f"input file URL {url.host} carries credentials")
    try:
        literal = ipaddress.ip_address(url.host)
    except ValueError:
        return
    try:
        check_address(literal, allow_loopback=allow_loopback)
    except AddressRefusedError as exc:
        raise TaskFailure(PRE_COMPUTE_FAILED, f"input file URL {url}: {exc}") from None


def fetch_inputs(
    files: tuple[tuple[str, str], ...],
    client: httpx.Client,
    dest: Path,
    *,
    allow_loopback: bool,
) -> list[str]:
    """Fetch each (url, sha256) into ``dest``; the names given, in order."""
    names: list[str] = []
    total = 0
    for index, (url, digest) in enumerate(files, start=1):
        name = input_name(url, index)
        if name in names:
            raise TaskFailure(
                PRE_COMPUTE_FAILED,
                f"input files {names.index(name) + 1} and {index} are both {name!r}",
            )
        total += fetch_one(url, digest, client, dest / name, allow_loopback=allow_loopback)
        if total > MAX_TOTAL_BYTES:
            raise TaskFailure(PRE_COMPUTE_FAILED, f"input files exceed {MAX_TOTAL_BYTES} bytes")
        names.append(name)
    return names


def fetch_one(
    url: str, digest: str, client: httpx.Client, target: Path, *, allow_loopback: bool
) -> int:
    """Fetch ``url`` (redirects followed and checked) into ``target``; its size."""
    current = httpx.URL(url)
    for _ in range(MAX_REDIRECTS + 1):
        check_url(current, allow_loopback=allow_loopback)
        try:
            with client.stream("GET", current, timeout=TIMEOUT_SECONDS) as response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise TaskFailure(
                            PRE_COMPUTE_FAILED, f"input file {url}: a redirect without Location"
                        )
                    current = current.join(location)
                    continue
                if response.status_code != 200:
                    raise TaskFailure(
                        PRE_COMPUTE_FAILED,
                        f"input file {url}: {current.host} answered {response.status_code}",
                    )
                return _save(response, url, digest, target)
        except httpx.HTTPError as exc:
            raise TaskFailure(
                PRE_COMPUTE_FAILED, f"input file {url}: cannot fetch {current}: {exc}"
            ) from None
    raise TaskFailure(PRE_COMPUTE_FAILED, f"input file {url}: more than {MAX_REDIRECTS} redirects")


def _save(response: httpx.Response, url: str, digest: str, target: Path) -> int:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_INPUT_BYTES:
        raise TaskFailure(
            PRE_COMPUTE_FAILED, f"input file {url} is larger than {MAX_INPUT_BYTES} bytes"
        )
    hasher, size = hashlib.sha256(), 0
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("xb") as handle:
            for chunk in response.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > MAX_INPUT_BYTES:
                    raise TaskFailure(
                        PRE_COMPUTE_FAILED,
                        f"input file {url} is larger than {MAX_INPUT_BYTES} bytes",
                    )
                hasher.update(chunk)
                handle.write(chunk)
        if hasher.hexdigest() != digest:
            raise TaskFailure(
                PRE_COMPUTE_FAILED,
                f"input file {url}: its SHA-256 is {hasher.hexdigest()}, the order pins {digest}",
            )
        os.chmod(partial, 0o444)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return size
