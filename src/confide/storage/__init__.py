"""The storage: content-addressed blobs (ciphertext, by SHA-256) for apps, datasets and
results, read only by their uploaders or with a grant from the hub or the sms.

:mod:`~confide.storage.service` is the core (no HTTP), :mod:`~confide.storage.http` its
routes; the bytes live behind :class:`~confide.storage.backend.Backend`: a local
directory (:mod:`~confide.storage.local`) or an S3 bucket (:mod:`~confide.storage.s3`).
"""
