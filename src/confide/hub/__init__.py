"""The hub: a registry of owner-signed records and the task queue (docs/hub.md).

The hub schedules; it never decides who gets a secret. Its core (``service``, ``records``,
``tasks``, ``lifecycle``, ``orders``) is plain Python over the database; ``http`` is a
thin Starlette layer on top.
"""
