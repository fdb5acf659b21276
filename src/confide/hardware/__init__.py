"""Real hardware paths, built as far as a machine without SGX or TDX allows
(docs/hardware.md): the Gramine manifest of an app bundle and its ``sgx:`` measurement
(:mod:`confide.hardware.gramine`, :mod:`confide.hardware.sgx_sign`), quote generation
through Gramine's ``/dev/attestation`` and configfs-tsm (:mod:`confide.hardware.sgx_quote`,
:mod:`confide.hardware.tdx_quote`), and the TD image's typed measurement and RTMR3
extension (:mod:`confide.hardware.td`)."""
