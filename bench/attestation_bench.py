"""Attestation benchmark: hardware quote verification and the sim round trip.

    python bench/attestation_bench.py [--quick] [--rounds N] [--out FILE]

Results go to bench/results/attestation.json; a ``--quick`` run (200 rounds) or one with
fewer than the default rounds goes to the git-ignored bench/results/quick/attestation.json.

- ``sgx verify``: appraise the real SGX sample quote (tests/vectors/dcap) with a
  policy that accepts it (measurement, tolerations, ignored advisories): dcap-qvl's full
  signature, certificate-chain and collateral checks, then confide's policy. Collateral
  parsed once, as the sms keeps it cached; a second line includes reading and parsing
  the collateral file on every call.
- ``tdx verify``: the same for the TDX sample.
- ``sim round trip``: issue a nonce, make sim evidence (Ed25519 sign), verify it (nonce
  consumed, report data recomputed, signature, policy).

Each figure is the median (and p99) of single operations timed with perf_counter_ns.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dcap_qvl

from confide.attestation import (
    EnclaveBinding,
    Evidence,
    MemoryNonceStore,
    Policy,
    appraise_evidence,
    verify_attestation,
)
from confide.attestation.dcap import CollateralFile, DcapVerifier
from confide.attestation.measurement import Measurement
from confide.attestation.sim import MemoryPlatformRegistry, SimAttester, SimVerifier
from confide.crypto.signing import SigningKey

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "dcap"


DEFAULT_OUT = ROOT / "bench" / "results" / "attestation.json"
QUICK_OUT = ROOT / "bench" / "results" / "quick" / "attestation.json"  # git-ignored
ROUNDS = 2000
QUICK_ROUNDS = 200


class CachedCollateral:
    def __init__(self, path: Path) -> None:
        self._collateral = dcap_qvl.QuoteCollateralV3.from_json(path.read_text())

    def collateral(self, quote: bytes) -> Any:
        del quote
        return self._collateral


def timed(operation: Callable[[], object], rounds: int) -> dict[str, float]:
    for _ in range(min(50, rounds)):
        operation()  # warm-up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        operation()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 4),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 4),
        "per_second": round(1000 / statistics.median(samples)),
    }


def hardware(name: str, tee: str, now: int, policy: Policy, cached: bool, rounds: int) -> Any:
    quote = (VECTORS / name).read_bytes()
    collateral_path = VECTORS / f"{name}_collateral.json"
    source = CachedCollateral(collateral_path) if cached else CollateralFile(collateral_path)
    verifiers = {tee: DcapVerifier(tee, source)}
    evidence = Evidence(tee, quote)

    def verify() -> None:
        verdict = appraise_evidence(
            evidence, policy=policy, verifiers=verifiers, now=now, expected_report_data=None
        )
        assert verdict.ok, verdict.reasons

    return timed(verify, rounds)


def sim_round_trip(rounds: int) -> dict[str, float]:
    platform_key = SigningKey.generate()
    app = Measurement("sim", "ab" * 32)
    attester = SimAttester(platform_key, app)
    verifiers = {"sim": SimVerifier(MemoryPlatformRegistry({platform_key.public_bytes()}))}
    nonces = MemoryNonceStore()
    policy = Policy(measurements=frozenset({app}), tolerate=frozenset({"simulation"}))
    binding = EnclaveBinding(bytes(32), bytes(32), "sms", "session", "app", "0xworker")
    now = int(time.time())

    def round_trip() -> None:
        nonce = nonces.issue(now)
        evidence = attester.evidence(binding.report_data(nonce))
        verdict = verify_attestation(
            evidence,
            nonce=nonce,
            binding=binding,
            policy=policy,
            verifiers=verifiers,
            nonces=nonces,
            now=now,
        )
        assert verdict.ok

    return timed(round_trip, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds each")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {ROUNDS}")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default: bench/results/attestation.json; bench/results/quick/ "
        "for --quick or fewer rounds)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else ROUNDS
    if args.out is None:
        args.out = DEFAULT_OUT if args.rounds >= ROUNDS else QUICK_OUT
    if not VECTORS.is_dir():
        print(f"missing {VECTORS}", file=sys.stderr)
        return 1
    sgx_policy = Policy(
        measurements=frozenset(
            {
                Measurement.parse(
                    "sgx:33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
                )
            }
        ),
        tolerate=frozenset({"sw-hardening-needed", "configuration-needed"}),
        ignore_advisories=frozenset({"INTEL-SA-00289", "INTEL-SA-00615"}),
    )
    results = {
        "sgx verify (collateral cached)": hardware(
            "sgx_quote", "sgx", 1750334171, sgx_policy, True, args.rounds
        ),
        "sgx verify (collateral file read)": hardware(
            "sgx_quote", "sgx", 1750334171, sgx_policy, False, args.rounds
        ),
        "tdx verify (collateral cached)": hardware(
            "tdx_quote",
            "tdx",
            1750331763,
            Policy(tolerate=frozenset({"hyperthreading"})),
            True,
            args.rounds,
        ),
        "sim attest + verify round trip": sim_round_trip(args.rounds),
    }
    targets = {
        "sgx verify (collateral cached)": 2.0,
        "sim attest + verify round trip": 1.0,
    }
    print(f"{'operation':36} {'median ms':>10} {'p99 ms':>8} {'per s':>7}  target")
    for name, figures in results.items():
        limit = targets.get(name)
        verdict = (
            ""
            if limit is None
            else (f"{'PASS' if figures['median_ms'] <= limit else 'FAIL'} <= {limit} ms")
        )
        print(
            f"{name:36} {figures['median_ms']:>10.3f} {figures['p99_ms']:>8.3f} "
            f"{figures['per_second']:>7}  {verdict}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "python bench/attestation_bench.py",
                "rounds": args.rounds,
                "python": platform.python_version(),
                "dcap_qvl": dcap_qvl.version("dcap-qvl") if hasattr(dcap_qvl, "version") else "",
                "results": results,
                "targets_ms": targets,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
