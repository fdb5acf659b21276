"""The real Intel DCAP quotes vendored in tests/vectors/dcap (see its PROVENANCE.md)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

DCAP_DIR = Path(__file__).resolve().parent / "dcap"


@dataclass(frozen=True)
class QuoteVector:
    name: str
    tee: str
    now: int  # pinned inside the collateral's validity window (PROVENANCE.md)

    @property
    def quote(self) -> Path:
        return DCAP_DIR / self.name

    @property
    def collateral(self) -> Path:
        return DCAP_DIR / f"{self.name}_collateral.json"

    def validity(self) -> tuple[int, int]:
        """(latest issueDate, earliest nextUpdate) of the TCB info and QE identity."""
        data = json.loads(self.collateral.read_text())
        documents = [json.loads(data["tcb_info"]), json.loads(data["qe_identity"])]
        issued = max(_seconds(d["issueDate"]) for d in documents)
        expires = min(_seconds(d["nextUpdate"]) for d in documents)
        return issued, expires


def _seconds(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


SGX = QuoteVector("sgx_quote", "sgx", 1750334171)
TDX = QuoteVector("tdx_quote", "tdx", 1750331763)
TDX_OUTDATED = QuoteVector("tdx_quote_outdated", "tdx", 1771415931)
SGX_MR_ENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_MR_SIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
TDX_MR_TD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7"
)
# The sample TD's RTMR1 and RTMR2 (its kernel, command line and initrd), as its quote says.
TDX_RTMR1 = (
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7"
    "aea8c323c173019b3093d54e579e9378"
)
TDX_RTMR2 = (
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3"
    "ba80b70870d7330733642e01d48c3132"
)
