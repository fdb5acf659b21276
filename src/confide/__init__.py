"""confide: a confidential-computing platform.

Encrypted volumes, attested secret delivery and TEE tasks, after iExec and SCONE.
See docs/architecture.md for the architecture (components, trust model, protocols).
"""

__version__ = "0.1.0"
