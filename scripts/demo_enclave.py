"""The demo's stand-in for an enclave runtime (the real one comes with the worker).

It does what a runtime does on a machine without TEE hardware, with the simulation
backend: make its two keys, register its sim platform key (signed by the session owner's
wallet), ask the sms for a challenge, attest, check the sms's signature over the sealed
configuration against the pinned key, and open it. It prints what it received by name and
size only: the demo never prints a secret value.

    demo_enclave.py SMS_URL OWNER SESSION HASH MEASUREMENT [--service S] [--expect-refusal]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from confide.attestation.measurement import Measurement
from confide.attestation.sim import SimAttester
from confide.client.enclave import attest_and_open
from confide.client.sms import SmsClient
from confide.crypto.info_proof import jwks_key
from confide.crypto.sealing import EnclaveKeys
from confide.crypto.signing import SigningKey
from confide.crypto.wallet import load_wallet
from confide.errors import ConfideError


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("sms", "owner", "session", "hash", "measurement"):
        parser.add_argument(name)
    parser.add_argument("--service", default="app")
    parser.add_argument("--expect-refusal", action="store_true")
    args = parser.parse_args()
    home = Path(os.environ["CONFIDE_HOME"])
    wallet = load_wallet(home / "wallet.json", os.environ["CONFIDE_WALLET_PASSWORD"])
    owner = SmsClient(args.sms, wallet=wallet, trust_dir=home / "trust")
    platform = SigningKey.generate()
    owner.register_platform(platform)
    print(f"sim platform {platform.public_bytes().hex()[:16]}… registered by {wallet.address}")
    keys = EnclaveKeys.generate()
    target = {"session": {"owner": args.owner, "name": args.session, "hash": args.hash}}
    try:
        released = attest_and_open(
            SmsClient(args.sms),
            SimAttester(platform, Measurement.parse(args.measurement)),
            keys,
            sms_key=jwks_key(owner.info()["jwks"]),
            target=target,
            service=args.service,
            worker="demo-host",
        )
    except ConfideError as exc:
        if args.expect_refusal:
            print(f"refused as expected: {exc}")
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.expect_refusal:
        print("error: the attestation should have been refused", file=sys.stderr)
        return 1
    config = released.config
    print(f"attested: status {released.status} (simulation is never better than warning)")
    print(f"sealed configuration opened; its hash {released.config_hash[:16]}…")
    print(f"command: {len(config['command'])} characters")
    for name, value in sorted(config["environment"].items()):
        print(f"environment {name}: {len(value)} bytes (delivered sealed; not shown)")
    for volume in config["volumes"]:
        print(
            f"volume {volume['name']} ({volume['mode']}) at {volume['path']}: key delivered, "
            f"expected tag {volume['tag'] or 'none yet'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
