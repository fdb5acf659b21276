"""Fail-closed sandboxes for the enclave runtime and the apps it runs (docs/sandbox.md)."""

from confide.sandbox.extract import extract_tar
from confide.sandbox.runner import KIND_VARIABLE, KINDS, backend, probe_kind, run, run_in_given_kind
from confide.sandbox.spec import Finished, Limits, Mount, SandboxError, SandboxSpec

__all__ = [
    "KINDS",
    "KIND_VARIABLE",
    "Finished",
    "Limits",
    "Mount",
    "SandboxError",
    "SandboxSpec",
    "backend",
    "extract_tar",
    "probe_kind",
    "run",
    "run_in_given_kind",
]
