"""``confide demo``: the iExec requester-secrets tutorial, run end to end on confide."""
