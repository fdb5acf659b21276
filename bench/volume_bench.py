"""Encrypted-volume benchmark: confide against ``cp -r``, ``tar | age`` and gocryptfs.

Everything runs in one process, in one work directory (default: under /dev/shm), so
every tool reads and writes the same filesystem:

1. a large tree (8 x 128 MiB random files): ``cp -r``, library ``encrypt_tree`` /
   ``decrypt_tree``, ``tar | age`` / ``age -d | tar`` and ``cp -r`` into and out of a
   gocryptfs mount;
2. the same tree through the ``confide volume`` CLI (start-up included) against ``cp -r``;
3. 10,000 files of 4 KiB: library, CLI, ``cp -r`` and ``tar | age``;
4. peak RSS of the CLI (``ru_maxrss`` of the child from ``wait4``) for a 4 GiB sparse-ish
   file and for the large tree.

Methodology: writing into fresh tmpfs pages is slow and noisy, so each operation deletes
its own previous output (untimed) before it starts, the operations of a section run
interleaved round after round (cp, enc, dec, cp, enc, dec, ...), one untimed warm-up
round comes first, and the table reports the best and the median of the timed rounds.
Ratios use the best times. Nothing is ``sync``-ed: on a disk work directory the numbers
are page-cache numbers.

gocryptfs: *write* times ``cp -r SRC MOUNT/tree`` only (every write goes through FUSE to
gocryptfs, which encrypts into its cipher directory on the same filesystem; FUSE writes
are write-through, so the ciphertext is stored when ``cp`` returns). *read* times
``cp -r MOUNT/tree OUT`` after an untimed unmount and remount, so no plaintext is left in
the FUSE page cache. ``-init``, mount and unmount are not timed (scrypt logN=10 only
to make those quick: it does not change the data path).

Usage::

    python bench/volume_bench.py [--quick] [--workdir DIR] [--out bench/results/volume.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confide.crypto import SymmetricKey
from confide.volume import decrypt_tree, encrypt_tree, read_volume_info

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "volume.json"
DEFAULT_PLOT = ROOT / "docs" / "img" / "volume-bench.png"
QUICK_OUT = ROOT / "bench" / "results" / "quick" / "volume.json"  # git-ignored
QUICK_PLOT = ROOT / "bench" / "results" / "quick" / "volume.png"
MIB = 1 << 20
GIB = 1 << 30
RSS_TARGET_MIB = 200.0

Json = dict[str, Any]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    """Sizes and repetitions of one run."""

    quick: bool
    big_files: int
    big_file_bytes: int
    small_files: int
    small_dirs: int
    small_file_bytes: int
    sparse_bytes: int
    sparse_chunk_every: int
    rounds: int
    cli_rounds: int
    gocryptfs: bool

    @property
    def big_bytes(self) -> int:
        return self.big_files * self.big_file_bytes

    @classmethod
    def make(cls, quick: bool, rounds: int | None, gocryptfs: bool) -> Config:
        if quick:
            return cls(
                quick=True,
                big_files=8,
                big_file_bytes=8 * MIB,
                small_files=1_000,
                small_dirs=4,
                small_file_bytes=4096,
                sparse_bytes=256 * MIB,
                sparse_chunk_every=16 * MIB,
                rounds=rounds or 3,
                cli_rounds=rounds or 3,
                gocryptfs=gocryptfs,
            )
        return cls(
            quick=False,
            big_files=8,
            big_file_bytes=128 * MIB,
            small_files=10_000,
            small_dirs=10,
            small_file_bytes=4096,
            sparse_bytes=4 * GIB,
            sparse_chunk_every=64 * MIB,
            rounds=rounds or 5,
            cli_rounds=rounds or 5,
            gocryptfs=gocryptfs,
        )


# --------------------------------------------------------------------------- children


@dataclass(frozen=True)
class Child:
    """A finished child process: wall time, peak RSS and exit code."""

    seconds: float
    maxrss_kib: int
    returncode: int


class CommandError(RuntimeError):
    """A benchmarked command failed."""


def spawn(argv: list[str], log: Path, *, cwd: Path | None = None, check: bool = True) -> Child:
    """Run ``argv`` with stdout and stderr appended to ``log``; time it and get its RSS.

    ``os.wait4`` reaps the child itself, so ``ru_maxrss`` is that one child's peak
    (in KiB on Linux) and the wall time includes process start-up.
    """
    with log.open("ab") as sink:
        sink.write(f"$ {shlex.join(argv)}\n".encode())
        sink.flush()
        offset = sink.tell()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if check and code != 0:
        what = shlex.join(argv[:2]) if argv[0] != "bash" else argv[-1]
        raise CommandError(f"{what} exited {code}: {output_since(log, offset)}")
    return Child(seconds, int(usage.ru_maxrss), code)


def shell(script: str, log: Path, *, check: bool = True) -> Child:
    """Run a bash pipeline with ``pipefail``."""
    return spawn(["bash", "-o", "pipefail", "-c", script], log, check=check)


def output_since(log: Path, offset: int, lines: int = 2) -> str:
    """The last lines a command wrote to ``log`` after ``offset``."""
    try:
        with log.open("rb") as source:
            source.seek(offset)
            text = source.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:]) or "(no output)"


def quiet(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def tool_version(argv: list[str]) -> str:
    try:
        done = quiet(argv, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else f"exit {done.returncode}"


# --------------------------------------------------------------------------- timing


@dataclass
class Op:
    """One timed operation. ``run`` removes its own previous output, then times itself."""

    name: str
    label: str
    run: Callable[[], float]
    bytes: int = 0
    times: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def to_json(self) -> Json:
        data: Json = {
            "label": self.label,
            "best_s": rnd(self.best),
            "median_s": rnd(self.median),
            "runs_s": [rnd(t) for t in self.times],
        }
        if self.bytes and self.best:
            data["best_mib_per_s"] = round(self.bytes / MIB / self.best, 1)
        if self.error:
            data["error"] = self.error
        return data


def rnd(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def measure(ops: list[Op], rounds: int, title: str) -> None:
    """One untimed warm-up round, then ``rounds`` interleaved timed rounds.

    An operation that fails is recorded with its error and dropped from later rounds;
    operations that depend on it fail in turn and are recorded the same way.
    """
    for number in range(rounds + 1):
        tag = "warm-up" if number == 0 else f"round {number}/{rounds}"
        shown = []
        for op in ops:
            if op.error:
                continue
            try:
                seconds = op.run()
            except (CommandError, OSError, ValueError, RuntimeError) as exc:
                op.error = str(exc)[:500]
                shown.append(f"{op.name}=FAILED")
                continue
            if number:
                op.times.append(seconds)
            shown.append(f"{op.name}={seconds:.3f}")
        print(f"  [{title}] {tag}: " + " ".join(shown), flush=True)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- data


def write_random(path: Path, size: int, chunk: int = 8 * MIB) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            step = min(chunk, left)
            out.write(os.urandom(step))
            left -= step


def make_big_tree(root: Path, cfg: Config) -> None:
    for index in range(cfg.big_files):
        sub = root / ("a" if index < cfg.big_files // 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        write_random(sub / f"file{index}.bin", cfg.big_file_bytes)


def make_small_tree(root: Path, cfg: Config) -> None:
    per_dir = -(-cfg.small_files // cfg.small_dirs)
    blob = os.urandom(cfg.small_files * cfg.small_file_bytes)
    for index in range(cfg.small_files):
        sub = root / f"d{index // per_dir:02d}"
        if index % per_dir == 0:
            sub.mkdir(parents=True)
        start = index * cfg.small_file_bytes
        (sub / f"f{index:05d}.dat").write_bytes(blob[start : start + cfg.small_file_bytes])


def make_sparse_file(path: Path, cfg: Config) -> int:
    """A file of ``sparse_bytes``: holes with 1 MiB random blocks; returns random bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("wb") as out:
        out.truncate(cfg.sparse_bytes)
        for offset in range(0, cfg.sparse_bytes, cfg.sparse_chunk_every):
            out.seek(offset)
            out.write(os.urandom(MIB))
            written += MIB
    return written


def same_tree(left: Path, right: Path) -> bool:
    """Byte-for-byte comparison of two trees (files and directory layout)."""
    cmp = filecmp.dircmp(left, right)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(left / d, right / d) for d in cmp.common_dirs)


def space_problem(workdir: Path, need: int) -> str | None:
    """Why ``need`` more bytes may not fit in ``workdir`` (tmpfs also needs RAM)."""
    free = shutil.disk_usage(workdir).free
    if free < need:
        return f"needs {need / GIB:.1f} GiB in {workdir}, {free / GIB:.1f} GiB free"
    if filesystem_type(workdir) == "tmpfs":
        available = mem_available()
        if available is not None and available < need + GIB:
            return f"needs {need / GIB:.1f} GiB of tmpfs, {available / GIB:.1f} GiB RAM available"
    return None


def mem_available() -> int | None:
    with suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def filesystem_type(path: Path) -> str:
    done = quiet(["stat", "-f", "-c", "%T", str(path)], timeout=10)
    return done.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- tools


class Age:
    """``tar | age`` with an X25519 identity made by ``age-keygen``."""

    def __init__(self, work: Path, log: Path) -> None:
        self.identity = work / "age-identity.txt"
        self.log = log
        if not shutil.which("age") or not shutil.which("age-keygen"):
            raise CommandError("age or age-keygen not installed (bench/install-tools.sh)")
        remove(self.identity)
        spawn(["age-keygen", "-o", str(self.identity)], log)
        done = quiet(["age-keygen", "-y", str(self.identity)])
        self.recipient = done.stdout.strip()
        if done.returncode != 0 or not self.recipient.startswith("age1"):
            raise CommandError(f"age-keygen -y failed: {done.stderr.strip()}")

    def encrypt_op(self, name: str, src: Path, out: Path, size: int) -> Op:
        script = (
            f"tar -C {shlex.quote(str(src))} -cf - . | "
            f"age -r {shlex.quote(self.recipient)} > {shlex.quote(str(out))}"
        )

        def run() -> float:
            remove(out)
            return shell(script, self.log).seconds

        return Op(name, "tar -cf - | age -r", run, size)

    def decrypt_op(self, name: str, archive: Path, out: Path, size: int) -> Op:
        script = (
            f"age -d -i {shlex.quote(str(self.identity))} {shlex.quote(str(archive))} | "
            f"tar -C {shlex.quote(str(out))} -xf -"
        )

        def run() -> float:
            remove(out)
            out.mkdir()
            return shell(script, self.log).seconds

        return Op(name, "age -d | tar -xf -", run, size)


class Gocryptfs:
    """A gocryptfs file system initialised and mounted inside the work directory."""

    def __init__(self, work: Path, log: Path) -> None:
        self.cipher = work / "gocryptfs-cipher"
        self.mount = work / "gocryptfs-mount"
        self.passfile = work / "gocryptfs-pass"
        self.log = log

    def setup(self) -> None:
        """Init and mount, or raise ``CommandError`` saying why it cannot work here."""
        if not shutil.which("gocryptfs"):
            raise CommandError("gocryptfs not installed (bench/install-tools.sh)")
        if not Path("/dev/fuse").exists():
            raise CommandError("/dev/fuse does not exist in this sandbox")
        if not (shutil.which("fusermount3") or shutil.which("fusermount")):
            raise CommandError("fusermount3/fusermount not installed (fuse3)")
        for path in (self.cipher, self.mount):
            remove(path)
            path.mkdir()
        self.passfile.write_text("confide-bench-not-a-secret\n")
        self.passfile.chmod(0o600)
        spawn(
            [
                "gocryptfs",
                "-init",
                "-q",
                "-scryptn",
                "10",
                "-passfile",
                str(self.passfile),
                str(self.cipher),
            ],
            self.log,
        )
        self.mount_now()
        probe = self.mount / "probe"
        probe.write_bytes(b"probe")
        if probe.read_bytes() != b"probe":
            raise CommandError("a file written into the mount read back differently")
        probe.unlink()

    def mount_now(self) -> None:
        spawn(
            [
                "gocryptfs",
                "-q",
                "-nosyslog",
                "-passfile",
                str(self.passfile),
                str(self.cipher),
                str(self.mount),
            ],
            self.log,
        )
        if not os.path.ismount(self.mount):
            raise CommandError(f"gocryptfs exited 0 but {self.mount} is not a mount point")

    def unmount(self) -> None:
        if not os.path.ismount(self.mount):
            return
        for argv in (
            ["fusermount3", "-u", str(self.mount)],
            ["fusermount", "-u", str(self.mount)],
            ["umount", str(self.mount)],
            ["fusermount3", "-uz", str(self.mount)],
        ):
            if shutil.which(argv[0]):
                spawn(argv, self.log, check=False)
            if not os.path.ismount(self.mount):
                return
            time.sleep(0.2)
        raise CommandError(f"cannot unmount {self.mount}")

    def write_op(self, name: str, src: Path, size: int) -> Op:
        target = self.mount / "tree"

        def run() -> float:
            remove(target)
            return spawn(["cp", "-r", str(src), str(target)], self.log).seconds

        return Op(name, "cp -r into gocryptfs", run, size)

    def read_op(self, name: str, out: Path, size: int) -> Op:
        def run() -> float:
            remove(out)
            self.unmount()
            self.mount_now()
            return spawn(["cp", "-r", str(self.mount / "tree"), str(out)], self.log).seconds

        return Op(name, "cp -r out of gocryptfs", run, size)


class Cli:
    """The ``confide volume`` command line, run as a fresh process each time."""

    def __init__(self, work: Path, log: Path) -> None:
        self.exe = shutil.which("confide", path=str(Path(sys.executable).parent)) or shutil.which(
            "confide"
        )
        self.key_file = work / "cli.key"
        self.log = log
        self.problem = self._probe()

    def _probe(self) -> str | None:
        if self.exe is None:
            return "no confide executable next to this Python or on PATH"
        try:
            done = quiet([self.exe, "volume", "--help"], timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"confide volume --help: {exc}"
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return f"confide volume --help exited {done.returncode}: " + (
                lines[-1] if lines else ""
            )
        return None

    def encrypt(self, src: Path, dst: Path) -> Child:
        assert self.exe is not None
        argv = [self.exe, "volume", "encrypt", str(src), str(dst), "--key-file"]
        return spawn([*argv, str(self.key_file)], self.log)

    def decrypt(self, src: Path, dst: Path) -> Child:
        assert self.exe is not None
        tag = read_volume_info(src).stored_tag
        argv = [self.exe, "volume", "decrypt", str(src), str(dst)]
        return spawn([*argv, "--key-file", str(self.key_file), "--tag", tag], self.log)

    def help_rss(self) -> Child:
        assert self.exe is not None
        return spawn([self.exe, "volume", "--help"], self.log)

    def encrypt_op(self, name: str, src: Path, dst: Path, size: int) -> Op:
        def run() -> float:
            remove(dst)
            return self.encrypt(src, dst).seconds

        return Op(name, "confide volume encrypt (CLI)", run, size)

    def decrypt_op(self, name: str, src: Path, dst: Path, size: int) -> Op:
        def run() -> float:
            remove(dst)
            return self.decrypt(src, dst).seconds

        return Op(name, "confide volume decrypt (CLI)", run, size)


def library_rss(src: Path, dst: Path, out: Path, log: Path) -> tuple[Child, Child]:
    """Peak RSS of the library in a fresh interpreter (used when the CLI is missing)."""
    code = (
        "import sys; from pathlib import Path\n"
        "from confide.crypto import SymmetricKey\n"
        "from confide.volume import encrypt_tree, decrypt_tree\n"
        "key = SymmetricKey.from_hex(Path(sys.argv[4]).read_text().strip())\n"
        "if sys.argv[1] == 'enc': encrypt_tree(Path(sys.argv[2]), Path(sys.argv[3]), key)\n"
        "else: decrypt_tree(Path(sys.argv[2]), Path(sys.argv[3]), key)\n"
    )
    key_file = log.parent / "library-rss.key"
    key_file.write_text(SymmetricKey.generate().to_hex())
    key_file.chmod(0o600)
    remove(dst)
    enc = spawn([sys.executable, "-c", code, "enc", str(src), str(dst), str(key_file)], log)
    remove(out)
    dec = spawn([sys.executable, "-c", code, "dec", str(dst), str(out), str(key_file)], log)
    return enc, dec


# --------------------------------------------------------------------------- library ops


def library_ops(
    prefix: str, src: Path, enc_out: Path, dec_out: Path, key: SymmetricKey, size: int
) -> tuple[Op, Op]:
    tags: list[str] = []

    def encrypt() -> float:
        remove(enc_out)
        tags.clear()
        return timed(lambda: tags.append(encrypt_tree(src, enc_out, key).tag))

    def decrypt() -> float:
        remove(dec_out)
        if not tags:
            raise RuntimeError("no volume to decrypt (the encryption failed)")
        return timed(lambda: decrypt_tree(enc_out, dec_out, key, expected_tag=tags[0]))

    return (
        Op(f"{prefix}enc", "confide encrypt_tree (library)", encrypt, size),
        Op(f"{prefix}dec", "confide decrypt_tree (library)", decrypt, size),
    )


def cp_op(name: str, src: Path, out: Path, size: int, log: Path) -> Op:
    def run() -> float:
        remove(out)
        return spawn(["cp", "-r", str(src), str(out)], log).seconds

    return Op(name, "cp -r", run, size)


# --------------------------------------------------------------------------- sections


class Bench:
    """Runs the sections and collects their results."""

    def __init__(self, cfg: Config, work: Path) -> None:
        self.cfg = cfg
        self.work = work
        self.log = work / "commands.log"
        self.key = SymmetricKey.generate()
        self.cli = Cli(work, self.log)
        self.age: Age | None = None
        self.age_problem: str | None = None
        try:
            self.age = Age(work, self.log)
        except (CommandError, OSError) as exc:
            self.age_problem = f"unavailable: {exc}"
        self.gocryptfs: Gocryptfs | None = None
        self.gocryptfs_status = "not run"
        self.results: Json = {}
        self.targets: list[Json] = []
        self.sections: dict[str, list[Op]] = {}

    # -- helpers

    def target(self, name: str, value: float | None, op: str, limit: float) -> None:
        """Record a target check: ``value <= limit`` or ``value >= limit``."""
        passed = None if value is None else (value <= limit if op == "<=" else value >= limit)
        self.targets.append(
            {"target": name, "value": rnd(value, 3), "op": op, "limit": limit, "pass": passed}
        )

    @staticmethod
    def ratio(num: Op | None, den: Op | None) -> float | None:
        if num is None or den is None or not num.best or not den.best:
            return None
        return num.best / den.best

    # -- 1: large tree

    def large_tree(self, src: Path) -> None:
        cfg, work = self.cfg, self.work
        size = cfg.big_bytes
        print(
            f"\n== 1. {size / MIB:.0f} MiB tree ({cfg.big_files} x "
            f"{cfg.big_file_bytes // MIB} MiB): library, tar|age, gocryptfs",
            flush=True,
        )
        cp = cp_op("cp", src, work / "big-cp", size, self.log)
        enc, dec = library_ops("", src, work / "big-enc", work / "big-dec", self.key, size)
        ops = [cp, enc, dec]
        # cp and confide first, interleaved on their own: with the peers in the same
        # rounds, each round holds ~6 GiB of outputs and fresh-page costs on this VM
        # swing cp -r between 0.5 and 1.3 s. The peers then run against our best time.
        measure(ops, cfg.rounds, "tree")
        peers: list[Op] = []
        age_enc = age_dec = None
        if self.age:
            age_enc = self.age.encrypt_op("age-enc", src, work / "big.tar.age", size)
            age_dec = self.age.decrypt_op("age-dec", work / "big.tar.age", work / "big-age", size)
            peers += [age_enc, age_dec]
        gc_write = gc_read = None
        if not cfg.gocryptfs:
            self.gocryptfs_status = "skipped (--no-gocryptfs)"
        else:
            self.gocryptfs = Gocryptfs(work, self.log)
            try:
                self.gocryptfs.setup()
            except (CommandError, OSError) as exc:
                self.gocryptfs_status = f"unavailable: {exc}"
                with suppress(CommandError, OSError):
                    self.gocryptfs.unmount()
                self.gocryptfs = None
            else:
                self.gocryptfs_status = "mounted"
                gc_write = self.gocryptfs.write_op("gc-write", src, size)
                gc_read = self.gocryptfs.read_op("gc-read", work / "big-gc-out", size)
                peers += [gc_write, gc_read]
        print(f"  gocryptfs: {self.gocryptfs_status}; age: {self.age_problem or 'ok'}")
        problem = space_problem(work, (len(peers) + 1) * size)
        if problem:
            print(f"  warning: {problem}")
        measure(peers, cfg.rounds, "peers")
        ops += peers
        checks = {
            "cp": work / "big-cp",
            "library": work / "big-dec",
            "age": work / "big-age",
            "gocryptfs": work / "big-gc-out",
        }
        verified = {k: same_tree(src, p) for k, p in checks.items() if p.is_dir()}
        if self.gocryptfs:
            self.gocryptfs.unmount()
        for path in (*checks.values(), work / "big-enc", work / "big.tar.age"):
            remove(path)
        remove(work / "gocryptfs-cipher")
        self.sections["1 large tree"] = ops
        ratios = {
            "encrypt_ours_over_cp": self.ratio(enc, cp),
            "decrypt_ours_over_cp": self.ratio(dec, cp),
            "encrypt_age_over_ours": self.ratio(age_enc, enc),
            "decrypt_age_over_ours": self.ratio(age_dec, dec),
            "encrypt_gocryptfs_over_ours": self.ratio(gc_write, enc),
            "decrypt_gocryptfs_over_ours": self.ratio(gc_read, dec),
        }
        self.target("tree encrypt: library / cp -r", ratios["encrypt_ours_over_cp"], "<=", 1.5)
        self.target("tree decrypt: library / cp -r", ratios["decrypt_ours_over_cp"], "<=", 1.5)
        self.target("tree encrypt: tar|age / library", ratios["encrypt_age_over_ours"], ">=", 3)
        self.target("tree decrypt: age|tar / library", ratios["decrypt_age_over_ours"], ">=", 3)
        self.target(
            "tree encrypt: gocryptfs / library", ratios["encrypt_gocryptfs_over_ours"], ">=", 5
        )
        self.target(
            "tree decrypt: gocryptfs / library", ratios["decrypt_gocryptfs_over_ours"], ">=", 5
        )
        self.results["large_tree"] = {
            "files": cfg.big_files,
            "bytes": size,
            "rounds": cfg.rounds,
            "ops": {op.name: op.to_json() for op in ops},
            "ratios_best": {k: rnd(v, 3) for k, v in ratios.items()},
            "gocryptfs": self.gocryptfs_status,
            "age": self.age_problem or "ok",
            "outputs_identical_to_source": verified,
        }

    # -- 2: CLI on the large tree

    def cli_tree(self, src: Path) -> None:
        cfg, work = self.cfg, self.work
        size = cfg.big_bytes
        print(
            f"\n== 2. {size / MIB:.0f} MiB tree through the CLI (best of {cfg.cli_rounds})",
            flush=True,
        )
        if self.cli.problem:
            print(f"  CLI unavailable: {self.cli.problem}")
            self.results["cli_tree"] = {"status": f"unavailable: {self.cli.problem}"}
            return
        cp = cp_op("cp", src, work / "cli-cp", size, self.log)
        enc = self.cli.encrypt_op("cli-enc", src, work / "cli-enc", size)
        dec = self.cli.decrypt_op("cli-dec", work / "cli-enc", work / "cli-dec", size)
        ops = [cp, enc, dec]
        measure(ops, cfg.cli_rounds, "cli")
        startup = min(self.cli.help_rss().seconds for _ in range(3))
        print(f"  CLI start-up (confide volume --help, best of 3): {startup:.3f} s")
        identical = (work / "cli-dec").is_dir() and same_tree(src, work / "cli-dec")
        for name in ("cli-cp", "cli-enc", "cli-dec"):
            remove(work / name)
        self.sections["2 CLI tree"] = ops
        ratios = {
            "encrypt_cli_over_cp": self.ratio(enc, cp),
            "decrypt_cli_over_cp": self.ratio(dec, cp),
        }
        self.target("tree CLI encrypt / cp -r", ratios["encrypt_cli_over_cp"], "<=", 1.5)
        self.target("tree CLI decrypt / cp -r", ratios["decrypt_cli_over_cp"], "<=", 1.5)
        self.results["cli_tree"] = {
            "status": "ok",
            "rounds": cfg.cli_rounds,
            "startup_help_best_s": rnd(startup),
            "ops": {op.name: op.to_json() for op in ops},
            "ratios_best": {k: rnd(v, 3) for k, v in ratios.items()},
            "output_identical_to_source": identical,
        }

    # -- 3: many small files

    def small_files(self) -> None:
        cfg, work = self.cfg, self.work
        size = cfg.small_files * cfg.small_file_bytes
        src = work / "small-src"
        print(
            f"\n== 3. {cfg.small_files:,} files of {cfg.small_file_bytes // 1024} KiB in "
            f"{cfg.small_dirs} directories",
            flush=True,
        )
        make_small_tree(src, cfg)
        cp = cp_op("cp", src, work / "small-cp", size, self.log)
        enc, dec = library_ops("", src, work / "small-enc", work / "small-dec", self.key, size)
        ops = [cp, enc, dec]
        cli_enc = age_enc = None
        if not self.cli.problem:
            cli_enc = self.cli.encrypt_op("cli-enc", src, work / "small-cli-enc", size)
            cli_dec = self.cli.decrypt_op(
                "cli-dec", work / "small-cli-enc", work / "small-cli-dec", size
            )
            ops += [cli_enc, cli_dec]
        if self.age:
            age_enc = self.age.encrypt_op("age-enc", src, work / "small.tar.age", size)
            age_dec = self.age.decrypt_op(
                "age-dec", work / "small.tar.age", work / "small-age", size
            )
            ops += [age_enc, age_dec]
        measure(ops, cfg.rounds, "small")
        identical = (work / "small-dec").is_dir() and same_tree(src, work / "small-dec")
        for name in (
            "small-src",
            "small-cp",
            "small-enc",
            "small-dec",
            "small-cli-enc",
            "small-cli-dec",
            "small.tar.age",
            "small-age",
        ):
            remove(work / name)
        self.sections["3 small files"] = ops
        ratios = {
            "encrypt_ours_over_age": self.ratio(enc, age_enc),
            "encrypt_cli_over_age": self.ratio(cli_enc, age_enc),
            "encrypt_ours_over_cp": self.ratio(enc, cp),
        }
        self.target("small files: library encrypt seconds", enc.best, "<=", 0.5)
        self.target(
            "small files: CLI encrypt seconds", cli_enc.best if cli_enc else None, "<=", 0.5
        )
        self.target(
            "small files: library encrypt / tar|age", ratios["encrypt_ours_over_age"], "<=", 4
        )
        self.target("small files: CLI encrypt / tar|age", ratios["encrypt_cli_over_age"], "<=", 4)
        self.results["small_files"] = {
            "files": cfg.small_files,
            "directories": cfg.small_dirs,
            "file_bytes": cfg.small_file_bytes,
            "rounds": cfg.rounds,
            "cli": "ok" if not self.cli.problem else f"unavailable: {self.cli.problem}",
            "ops": {op.name: op.to_json() for op in ops},
            "ratios_best": {k: rnd(v, 3) for k, v in ratios.items()},
            "library_output_identical_to_source": identical,
        }

    # -- 4: peak RSS

    def peak_rss(self, big_src: Path) -> None:
        cfg, work = self.cfg, self.work
        print("\n== 4. peak RSS (ru_maxrss of a fresh child process)", flush=True)
        how = "CLI" if not self.cli.problem else "library in a fresh python (CLI unavailable)"
        result: Json = {"measured": how, "target_mib": RSS_TARGET_MIB, "cases": {}}
        if not self.cli.problem:
            baseline = self.cli.help_rss()
            result["cli_help_baseline_mib"] = round(baseline.maxrss_kib / 1024, 1)
        sparse_src = work / "sparse-src"
        cases: list[tuple[str, Path, int, int]] = []
        random_bytes = make_sparse_file(sparse_src / "disk.img", cfg)
        cases.append(
            (
                f"1 x {cfg.sparse_bytes / GIB:g} GiB sparse-ish",
                sparse_src,
                cfg.sparse_bytes,
                random_bytes,
            )
        )
        cases.append(
            (
                f"{cfg.big_files} x {cfg.big_file_bytes // MIB} MiB",
                big_src,
                cfg.big_bytes,
                cfg.big_bytes,
            )
        )
        for name, src, size, random_part in cases:
            enc_dir, dec_dir = work / "rss-enc", work / "rss-dec"
            problem = space_problem(work, 2 * size + 64 * MIB)
            if problem:
                result["cases"][name] = {"status": f"skipped: {problem}"}
                print(f"  {name}: skipped: {problem}")
                continue
            try:
                if not self.cli.problem:
                    remove(enc_dir)
                    enc = self.cli.encrypt(src, enc_dir)
                    remove(dec_dir)
                    dec = self.cli.decrypt(enc_dir, dec_dir)
                else:
                    enc, dec = library_rss(src, enc_dir, dec_dir, self.log)
                identical = same_tree(src, dec_dir)
            except (CommandError, OSError) as exc:
                result["cases"][name] = {"status": f"failed: {exc}"}
                print(f"  {name}: failed: {exc}")
                continue
            finally:
                remove(enc_dir)
                remove(dec_dir)
            entry = {
                "status": "ok",
                "bytes": size,
                "random_bytes": random_part,
                "encrypt_mib": round(enc.maxrss_kib / 1024, 1),
                "decrypt_mib": round(dec.maxrss_kib / 1024, 1),
                "encrypt_s": rnd(enc.seconds),
                "decrypt_s": rnd(dec.seconds),
                "output_identical_to_source": identical,
            }
            result["cases"][name] = entry
            print(
                f"  {name}: encrypt {entry['encrypt_mib']} MiB ({enc.seconds:.2f} s), "
                f"decrypt {entry['decrypt_mib']} MiB ({dec.seconds:.2f} s), "
                f"identical={identical}"
            )
            self.target(
                f"peak RSS MiB, encrypt {name}", enc.maxrss_kib / 1024, "<=", RSS_TARGET_MIB
            )
            self.target(
                f"peak RSS MiB, decrypt {name}", dec.maxrss_kib / 1024, "<=", RSS_TARGET_MIB
            )
        remove(sparse_src)
        self.results["peak_rss"] = result


# --------------------------------------------------------------------------- output


def print_table(bench: Bench) -> None:
    print("\n" + "=" * 88)
    print(
        f"{'section':<15} {'op':<9} {'what':<32} {'best s':>8} {'median s':>9} "
        f"{'MiB/s':>8} {'n':>3}"
    )
    print("-" * 88)
    for section, ops in bench.sections.items():
        for op in ops:
            if op.error:
                print(f"{section:<15} {op.name:<9} {op.label:<32} FAILED: {op.error[:60]}")
                continue
            best, median = op.best or 0.0, op.median or 0.0
            rate = f"{op.bytes / MIB / best:8.0f}" if best else f"{'':>8}"
            print(
                f"{section:<15} {op.name:<9} {op.label:<32} {best:8.3f} {median:9.3f} "
                f"{rate} {len(op.times):>3}"
            )
    print("-" * 88)
    print(f"gocryptfs: {bench.gocryptfs_status}")
    print(f"age: {bench.age_problem or 'ok'}")
    print(f"CLI: {'ok' if not bench.cli.problem else 'unavailable: ' + bench.cli.problem}")
    print("\ntargets (ratios from best-of-N):")
    for t in bench.targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        print(f"  {verdict}  {t['target']:<44} {value:>9} {t['op']} {t['limit']:g}")


def plot(bench: Bench, path: Path) -> str | None:
    """Write the PNG; return why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib unavailable: {exc}"
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    colors = {
        "cp -r": "#888888",
        "library": "#1f77b4",
        "CLI": "#17becf",
        "tar|age": "#ff7f0e",
        "gocryptfs": "#d62728",
    }

    def best(section: str, name: str) -> float:
        for op in bench.sections.get(section, []):
            if op.name == name and op.best:
                return op.best
        return 0.0

    def bars(ax: Any, title: str, rows: dict[str, tuple[float, float]]) -> None:
        width = 0.8 / max(1, len(rows))
        for i, (what, (enc, dec)) in enumerate(rows.items()):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(2)]
            ax.bar(xs, [enc, dec], width, label=what, color=colors.get(what))
            for x, v in zip(xs, (enc, dec), strict=True):
                if v:
                    ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks([0, 1], ["encrypt / write", "decrypt / read"])
        ax.set_ylabel("seconds (best of N, lower is better)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)

    cfg = bench.cfg
    tree = "1 large tree"
    rows = {
        "cp -r": (best(tree, "cp"), best(tree, "cp")),
        "library": (best(tree, "enc"), best(tree, "dec")),
        "CLI": (best("2 CLI tree", "cli-enc"), best("2 CLI tree", "cli-dec")),
        "tar|age": (best(tree, "age-enc"), best(tree, "age-dec")),
        "gocryptfs": (best(tree, "gc-write"), best(tree, "gc-read")),
    }
    bars(
        axes[0],
        f"{cfg.big_bytes / MIB:.0f} MiB tree, {cfg.big_files} files",
        {k: v for k, v in rows.items() if any(v)},
    )
    small = "3 small files"
    rows = {
        "cp -r": (best(small, "cp"), best(small, "cp")),
        "library": (best(small, "enc"), best(small, "dec")),
        "CLI": (best(small, "cli-enc"), best(small, "cli-dec")),
        "tar|age": (best(small, "age-enc"), best(small, "age-dec")),
    }
    bars(
        axes[1],
        f"{cfg.small_files:,} files x {cfg.small_file_bytes // 1024} KiB",
        {k: v for k, v in rows.items() if any(v)},
    )
    ax = axes[2]
    cases = bench.results.get("peak_rss", {}).get("cases", {})
    labels, enc_rss, dec_rss = [], [], []
    for name, entry in cases.items():
        if entry.get("status") == "ok":
            labels.append(name)
            enc_rss.append(entry["encrypt_mib"])
            dec_rss.append(entry["decrypt_mib"])
    xs = list(range(len(labels)))
    ax.bar([x - 0.2 for x in xs], enc_rss, 0.4, label="encrypt", color="#1f77b4")
    ax.bar([x + 0.2 for x in xs], dec_rss, 0.4, label="decrypt", color="#17becf")
    ax.axhline(RSS_TARGET_MIB, color="#d62728", linestyle="--", label="target")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("peak RSS MiB")
    ax.set_title("peak RSS, " + bench.results.get("peak_rss", {}).get("measured", ""), fontsize=10)
    ax.legend(fontsize=8)
    meta = bench.results.get("meta", {})
    fig.suptitle(
        f"confide volume benchmark ({'quick, ' if cfg.quick else ''}"
        f"{meta.get('filesystem', '?')} at {meta.get('workdir_parent', '?')}, "
        f"{os.cpu_count()} CPUs, {dt.date.today().isoformat()})",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def metadata(cfg: Config, work: Path, parent: Path) -> Json:
    import cryptography

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "workdir_parent": str(parent),
        "filesystem": filesystem_type(work),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "age": tool_version(["age", "--version"]),
        "gocryptfs": tool_version(["gocryptfs", "-version"]),
        "cp": tool_version(["cp", "--version"]),
        "tar": tool_version(["tar", "--version"]),
        "methodology": (
            "each op deletes its own previous output untimed, ops run interleaved per "
            "round after one untimed warm-up round; best and median of the timed rounds; "
            "ratios from best; subprocess times include process start-up; no sync; "
            "gocryptfs write = cp -r into the mount, read = cp -r out after an untimed "
            "remount, init/mount/unmount untimed"
        ),
    }


# --------------------------------------------------------------------------- main


@contextmanager
def workdir(parent: Path, keep: bool) -> Iterator[Path]:
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="confide-volume-bench-", dir=parent))
    try:
        yield work
    finally:
        mount = work / "gocryptfs-mount"
        if os.path.ismount(mount):
            with suppress(CommandError, OSError):
                Gocryptfs(work, work / "commands.log").unmount()
        if os.path.ismount(mount):
            print(f"warning: {mount} is still mounted; leaving {work} in place", file=sys.stderr)
        elif keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_parent = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for a smoke check (< 1 minute)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=default_parent,
        help="parent of the scratch directory; every tool uses this "
        "filesystem (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results file (default: bench/results/volume.json; with --quick, "
        "--rounds or --no-gocryptfs, bench/results/quick/volume.json, so a smoke or partial "
        "run never replaces recorded results)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="PNG plot (default: docs/img/volume-bench.png; with --quick, --rounds or "
        "--no-gocryptfs, bench/results/quick/volume.png)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds per section (default: 5; quick: 3)",
    )
    parser.add_argument("--no-gocryptfs", action="store_true", help="skip gocryptfs")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    partial = args.quick or args.no_gocryptfs or args.rounds is not None
    if args.out is None:
        args.out = QUICK_OUT if partial else DEFAULT_OUT
    if args.plot is None:
        args.plot = QUICK_PLOT if partial else DEFAULT_PLOT
    if args.rounds is not None and args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    cfg = Config.make(args.quick, args.rounds, not args.no_gocryptfs)
    started = time.perf_counter()
    parent = args.workdir.resolve()
    with workdir(parent, args.keep) as work:
        bench = Bench(cfg, work)
        bench.results["meta"] = metadata(cfg, work, parent)
        print(
            f"work directory {work} ({bench.results['meta']['filesystem']}); "
            f"log of every command: {bench.log}"
        )
        problem = space_problem(work, 3 * cfg.big_bytes)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        big_src = work / "big-src"
        print(f"making {cfg.big_bytes / MIB:.0f} MiB of random files...", flush=True)
        make_big_tree(big_src, cfg)
        bench.large_tree(big_src)
        bench.cli_tree(big_src)
        bench.peak_rss(big_src)
        remove(big_src)
        bench.small_files()
        bench.results["targets"] = bench.targets
        bench.results["meta"]["total_seconds"] = round(time.perf_counter() - started, 1)
        print_table(bench)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(bench.results, indent=2) + "\n")
        print(f"\nwrote {args.out}")
        why_not = plot(bench, args.plot)
        print(f"wrote {args.plot}" if why_not is None else f"no plot: {why_not}")
        if any(op.error for ops in bench.sections.values() for op in ops):
            print("some operations failed: see the table and", bench.log)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
