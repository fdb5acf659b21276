"""``confide up``: the hub, the sms and the storage in one process on one port."""
