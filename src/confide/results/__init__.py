"""Task results: the salted result digest (``digest``), the stored (encrypted) zip and
sealed logs (``sealed``, ``archive``, ``logs``), the enclave's signed statement
(``statement``), safe opening (``opening``), downloads (``fetch``) and offline
verification (``verify``); docs/results.md.

Import from the modules: this package re-exports nothing, so that the enclave runtime,
which builds and signs results, does not import the requester's verification and
opening code at every task.
"""
