"""The secret management service and CAS (DESIGN.md, "Secrets" and "Sessions").

Core logic is plain Python; the HTTP layer sits thinly on top.
"""
