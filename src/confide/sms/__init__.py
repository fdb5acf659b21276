"""The secret management service and CAS (docs/architecture.md, "Secrets" and "Sessions";
the API: docs/sms.md).

Core logic is plain Python; the HTTP layer sits thinly on top.
"""
