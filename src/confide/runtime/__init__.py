"""The enclave runtime: the trusted code that runs one task inside the TEE (or, for
``tee sim``, inside the worker's sandbox), measured with the app (docs/runtime.md)."""
