"""The HTTP edge every confide service shares (the sms now; the hub and storage next).

Service-independent: signed requests and their replay records (:mod:`.signed`), one
table from exception class to problem+json answer (:mod:`.problems`), bounded bodies
and path helpers (:mod:`.bodies`), and the handlers' base with its database threads
(:mod:`.handlers`). Nothing here imports a service.
"""
