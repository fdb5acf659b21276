"""CLI start-up benchmark: how long a user waits for a short command.

    python bench/cli_bench.py [--rounds N] [--quick] [--out bench/results/cli.json]
                              [--summary FILE.md]

Against a real ``confide serve sms --allow-sim`` on a free loopback port, with a fresh
``CONFIDE_HOME`` and wallet, it times as a user types them (the ``confide`` script of
this virtualenv, a new process each time):

- ``confide wallet show``: start-up and reading the keystore's address (target 0.25 s);
- ``confide requester push-secret bench --secret-value v --update``: a signed request: the
  keystore is opened (scrypt n=2^18, 0.6-0.7 s on its own, kept on purpose: it is what a
  stolen keystore costs per guessed password), the sms's ``/v1/info`` is fetched and its
  key checked, and a new version of a secret is stored (target 1.0 s);
- for scale: a bare ``python -c pass``, and a process that only opens the keystore (the
  floor of any signed command).

One untimed warm-up run each (it also pins the sms's key on first contact), then the
commands run interleaved round after round; the median (and min, max) of the wall times
is reported, with the child's CPU time (user + system, from ``wait4``), which a busy
machine inflates less (a signed command's CPU exceeds its wall time: scrypt runs on a
thread while the rest starts). With hyperfine installed it does the timing (one command
after the other, not interleaved). Figures depend on the machine and on what else runs:
the JSON records the CPU count and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "cli.json"
QUICK_OUT = ROOT / "bench" / "results" / "quick" / "cli.json"  # git-ignored
PASSWORD = "cli-bench-password"  # noqa: S105 (a throwaway wallet in a temporary directory)
OPEN_KEYSTORE = (
    "import os, sys, pathlib; from confide.crypto.wallet import load_wallet; "
    "load_wallet(pathlib.Path(sys.argv[1]), os.environ['CONFIDE_WALLET_PASSWORD'])"
)
TARGETS = {"wallet show": 0.25, "requester push-secret": 1.0}


def confide_command() -> list[str]:
    """The ``confide`` script beside this interpreter, as a user runs it."""
    script = Path(sys.executable).parent / "confide"
    return [str(script)] if script.exists() else [sys.executable, "-m", "confide"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed_run(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run; the run must succeed."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read().decode() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime


@contextmanager
def running_sms(home: Path, env: dict[str, str]) -> Iterator[str]:
    """``confide serve sms --allow-sim`` on 127.0.0.1, stopped (SIGTERM) at the end."""
    port = free_port()
    argv = [
        *confide_command(),
        "serve",
        "sms",
        "--allow-sim",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        f"sqlite:///{home}/sms.db",
    ]
    log = (home / "sms.log").open("wb")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sms did not start: {(home / 'sms.log').read_text()}")
            time.sleep(0.05)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def summary_of(walls: list[float], cpu: float, target: float | None) -> dict[str, Any]:
    median = statistics.median(walls)
    result: dict[str, Any] = {
        "runs": len(walls),
        "median_s": round(median, 3),
        "min_s": round(min(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_s": round(cpu, 3),
        "wall_s": [round(w, 3) for w in walls],
    }
    if target is not None:
        result["target_s"] = target
        result["meets_target"] = median <= target
    return result


def scrypt_seconds(wallet: Path, rounds: int = 3) -> float:
    """The median time of opening the keystore in-process (its scrypt, mostly)."""
    from confide.crypto.wallet import load_wallet

    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        load_wallet(wallet, PASSWORD)
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples), 3)


def with_loop(commands: dict[str, list[str]], env: dict[str, str], rounds: int) -> Any:
    """One warm-up run each, then the commands interleaved round after round."""
    samples: dict[str, tuple[list[float], list[float]]] = {c: ([], []) for c in commands}
    for argv in commands.values():
        timed_run(argv, env)
    for _ in range(rounds):
        for name, argv in commands.items():
            wall, cpu = timed_run(argv, env)
            samples[name][0].append(wall)
            samples[name][1].append(cpu)
    return {
        name: summary_of(walls, statistics.median(cpus), TARGETS.get(name))
        for name, (walls, cpus) in samples.items()
    }


def with_hyperfine(commands: dict[str, list[str]], env: dict[str, str], rounds: int) -> Any:
    """hyperfine, without a shell, one warm-up run; CPU is its mean user + system."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in commands.items():
            export = Path(tmp) / "hyperfine.json"
            hyperfine = ["hyperfine", "--shell=none", "--style=none", "--warmup", "1"]
            timing = ["--runs", str(rounds), "--export-json", str(export)]
            subprocess.run(
                [*hyperfine, *timing, shlex.join(argv)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            measured = json.loads(export.read_text())["results"][0]
            cpu = measured["user"] + measured["system"]
            results[name] = summary_of(measured["times"], cpu, TARGETS.get(name))
    return results


def run(rounds: int, use_hyperfine: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="confide-cli-bench-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "CONFIDE_HOME": str(home), "CONFIDE_WALLET_PASSWORD": PASSWORD}
        env.pop("CONFIDE_SMS", None)
        confide = confide_command()
        push = [*confide, "requester", "push-secret", "bench", "--secret-value", "v"]
        # The same command line every run (as hyperfine needs): a new version of one secret.
        commands = {
            "wallet show": [*confide, "wallet", "show"],
            "requester push-secret": [*push, "--update"],
            "python -c pass": [sys.executable, "-c", "pass"],
            # The floor of a signed command: a process that only opens the keystore.
            "open keystore only": [sys.executable, "-c", OPEN_KEYSTORE, str(home / "wallet.json")],
        }
        timed_run([*confide, "wallet", "create"], env)
        with running_sms(home, env) as base:
            env["CONFIDE_SMS"] = base
            timed_run(push, env)  # creates the secret; first contact pins the sms's key
            measure = with_hyperfine if use_hyperfine else with_loop
            results = measure(commands, env, rounds)
        scrypt = scrypt_seconds(home / "wallet.json")
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "tool": "hyperfine" if use_hyperfine else "subprocess loop",
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "kernel": platform.release(),
            "python": platform.python_version(),
            "rounds": rounds,
            "methodology": (
                "new process per run, as a user types the command, against a real sms "
                "(--allow-sim, SQLite) on a free loopback port with a fresh CONFIDE_HOME; "
                "one untimed warm-up run each; median, min and max wall time; CPU is the "
                "child's user + system time (the loop: median per run; hyperfine: mean)"
            ),
        },
        "commands": results,
        "keystore_open_in_process_s": scrypt,
    }


def markdown(report: dict[str, Any], out: Path) -> str:
    meta = report["meta"]
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    lines = [
        "# CLI start-up (bench/cli_bench.py)",
        "",
        f"Run `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, load average "
        f"{meta['load_average_before'][0]} before, {meta['load_average_after'][0]} after; "
        f"{meta['rounds']} rounds). Raw figures: `{shown}`.",
        "",
        "| command | target | median | min | max | CPU |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in report["commands"].items():
        target = f"≤ {result['target_s']:.2f} s" if "target_s" in result else "—"
        verdict = "" if "meets_target" not in result else (" ✓" if result["meets_target"] else " ✗")
        lines.append(
            f"| `{name}` | {target} | {result['median_s']:.3f} s{verdict} | "
            f"{result['min_s']:.3f} s | {result['max_s']:.3f} s | {result['cpu_s']:.3f} s |"
        )
    lines += [
        "",
        f"Opening the keystore in-process (scrypt n=2^18, r=8, p=1): "
        f"{report['keystore_open_in_process_s']:.3f} s, most of a signed command's time.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10, help="timed runs per command (≥ 5)")
    parser.add_argument("--quick", action="store_true", help="5 rounds, results to quick/")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON results (default: bench/results/cli.json; with --quick, "
        "bench/results/quick/cli.json, so a smoke run never replaces recorded results)",
    )
    parser.add_argument("--summary", type=Path, help="also write a markdown summary here")
    parser.add_argument(
        "--no-hyperfine",
        action="store_true",
        help="time with a subprocess loop even when hyperfine is installed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 5
    if args.rounds < 5:
        parser.error("--rounds: at least 5 (a median of fewer says little)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out: Path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    report = run(args.rounds, bool(shutil.which("hyperfine")) and not args.no_hyperfine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, out.resolve())
    if args.summary:
        args.summary.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
