"""The relay: the enclave runtime's only way out of its sandbox (docs/runtime.md).

The worker serves it (:mod:`confide.relay.server`); the runtime uses it for its
connections and request signatures (:mod:`confide.relay.client`); which addresses it may
reach is :mod:`confide.relay.addresses`.
"""
