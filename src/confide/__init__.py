"""confide: a confidential-computing platform.

Encrypted volumes, attested secret delivery and TEE tasks, after iExec and SCONE.
See docs/ and ../shared/DESIGN.md for the architecture.
"""

__version__ = "0.1.0"
