"""The ``confide`` command: a thin layer over the library, shaped after iExec and SCONE."""
