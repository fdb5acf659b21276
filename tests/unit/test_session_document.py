"""Session documents: the docs/sms.md example, templates, references, errors with lines,
and the limits that bound what reading any document costs."""

from __future__ import annotations

import time

import pytest
import yaml

from confide.errors import SessionError
from confide.sms import session_yaml
from confide.sms.session_document import MAX_ENVIRONMENT, MAX_SERVICES, parse_session

EXAMPLE = """\
name: cubic-prod
version: "0.3"
predecessor: null
access_policy: {read: [owner], update: [owner]}
services:
  - name: app
    measurements: ["sim:$SIM", "sgx:${SGX}"]
    command: python3 /app/app.py --n 3
    pwd: /app
    environment:
      MODE: production
      API_KEY: "$$confide:secrets:api_key$$"
      PRICE: "$$5"
    volumes: [input, output]
volumes:
  - name: input
  - name: output
    mode: output
secrets:
  - name: api_key
    kind: ascii
    value: "s3cret-value"
  - name: signing
    kind: key
security:
  tolerate: [simulation, outdated-tcb]
  ignore_advisories: [INTEL-SA-00289]
"""
VARS = {"SIM": "ab" * 32, "SGX": "cd" * 32}


def test_the_design_example() -> None:
    session = parse_session(EXAMPLE, VARS, "s.yml")
    assert session.name == "cubic-prod" and session.version == "0.3"
    (app,) = session.services
    assert [str(m) for m in app.measurements] == ["sim:" + "ab" * 32, "sgx:" + "cd" * 32]
    env = dict(app.environment)
    assert env["API_KEY"] == "$$confide:secrets:api_key$$"  # a reference, kept as such
    assert env["PRICE"] == "$5"  # $$ elsewhere is a literal $
    assert [(v.name, v.mode, v.path) for v in session.volumes] == [
        ("input", "input", "/encryptedInputs"),
        ("output", "output", "/encryptedOutputs"),
    ]
    assert session.read == session.update == ("owner",)
    assert session.tolerate == ("simulation", "outdated-tcb")


def test_hash_never_holds_a_secret_and_is_stable() -> None:
    session = parse_session(EXAMPLE, VARS)
    assert "s3cret-value" not in str(session.canonical())
    assert "s3cret-value" not in repr(session)
    assert session.session_hash() == parse_session(EXAMPLE, VARS).session_hash()
    changed = parse_session(EXAMPLE.replace("--n 3", "--n 4"), VARS)
    assert changed.session_hash() != session.session_hash()


def test_a_template_value_cannot_inject_structure() -> None:
    hostile = {"SIM": "ab" * 32, "SGX": 'cd"]\n    command: evil'}
    with pytest.raises(SessionError, match="sgx measurement is 64 hex"):
        parse_session(EXAMPLE, hostile)
    text = EXAMPLE.replace("MODE: production", "MODE: $MODE")
    session = parse_session(text, {**VARS, "MODE": "x\nsecrets: []"})
    assert dict(session.services[0].environment)["MODE"] == "x\nsecrets: []"
    assert len(session.secrets) == 2  # the "structure" stayed a string


def test_variables_come_only_from_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM", "ab" * 32)
    with pytest.raises(SessionError, match=r"s.yml:7: .*template variable \$SIM is not set"):
        parse_session(EXAMPLE, {"SGX": "cd" * 32}, "s.yml")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("    pwd: /app", "    pwd: /app\n    comand: x"), r":10: unknown field 'comand'"),
        (("name: cubic-prod", "name: cubic-prod\nextra: 1"), r":2: unknown field 'extra'"),
        (
            ('    measurements: ["sim:$SIM", "sgx:${SGX}"]', "    measurements: []"),
            "has no measurements",
        ),
        (('"sgx:${SGX}"', '"${SGX}"'), r":7: .*is not typed"),
        (("  - name: output\n", "  - name: input\n"), r":17: duplicate volume name 'input'"),
        (
            ("  - name: signing\n    kind: key", "  - name: api_key\n    kind: key"),
            "duplicate secret name",
        ),
        (("secrets:api_key$$", "secrets:missing$$"), r":12: secret 'missing' is not declared"),
        (('version: "0.3"\n', ""), "needs a 'version' field"),
        (("[simulation, outdated-tcb]", "[everything]"), "unknown toleration 'everything'"),
        (("MODE: production", "MODE: cost $5"), "lone '\\$'"),
        (("[input, output]", "[input, scratch]"), "undeclared volume 'scratch'"),
        (("{read: [owner], update: [owner]}", "{read: [bob]}"), "'owner' or a wallet address"),
        (('    kind: ascii\n    value: "s3cret-value"', "    kind: ascii"), "needs a value"),
        (("predecessor: null", "predecessor: abc"), "predecessor is a session hash"),
    ],
)
def test_errors_name_the_line(edit: tuple[str, str], message: str) -> None:
    assert edit[0] in EXAMPLE
    with pytest.raises(SessionError, match=message):
        parse_session(EXAMPLE.replace(*edit), VARS, "s.yml")


@pytest.mark.parametrize("text", ["", "[1, 2]", "name: [unclosed", "a: b\na: c"])
def test_not_a_session(text: str) -> None:
    with pytest.raises(SessionError):
        parse_session(text, {}, "s.yml")


def test_the_hash_is_a_known_answer() -> None:
    """The hash of a session is what it was when sessions were first stored (computed with
    the code before services could carry tdx pins): a field added later must not change
    the hash of a document that does not use it, or every stored session's hash would."""
    expected = "a42e429377c87f366a8133839d322eaafde4fdcb67e09d5979d271edd05384fa"
    assert parse_session(EXAMPLE, VARS).session_hash() == expected


MR_TD = "91" * 48
TDX_SERVICE = EXAMPLE.replace(
    '    measurements: ["sim:$SIM", "sgx:${SGX}"]',
    '    measurements: ["tdx:$MRTD"]\n'
    "    tdx:\n"
    "      rtmr1: $RTMR1\n"
    f"      rtmr2: {'B2' * 48}\n"
    f'      td_attributes: "0000001000000000"',
)
TDX_VARS = {"MRTD": MR_TD, "RTMR1": "a1" * 48}


def test_a_tdx_service_pins_its_kernel() -> None:
    session = parse_session(TDX_SERVICE, TDX_VARS, "s.yml")
    (app,) = session.services
    pins = {"rtmr1": "a1" * 48, "rtmr2": "b2" * 48, "td_attributes": "0000001000000000"}
    assert dict(app.tdx) == pins  # templates substituted, hex in lower case
    assert session.canonical()["services"][0]["tdx"] == pins
    other = parse_session(TDX_SERVICE.replace("B2" * 48, "b3" * 48), TDX_VARS)
    assert other.session_hash() != session.session_hash()  # the pins are in the hash
    assert "tdx" not in parse_session(EXAMPLE, VARS).canonical()["services"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("    tdx:\n      rtmr1: $RTMR1\n", "    tdx:\n"), r":9: .*must pin rtmr1 and rtmr2"),
        (
            ("    tdx:\n", "    nothing: here\n    tdx:\n"),
            r":8: unknown field 'nothing' in services\[0\]",
        ),
        (("rtmr1: $RTMR1", "rtmr1: abc"), r":9: services\[0\]: tdx.rtmr1: expected 96 hex"),
        (("rtmr1: $RTMR1", "rtmr4: $RTMR1"), r":9: unknown field 'rtmr4' in services\[0\].tdx"),
        (('"tdx:$MRTD"', '"sgx:' + "cd" * 32 + '"'), r":9: .*has tdx pins but no tdx measurement"),
        (("rtmr1: $RTMR1", "rtmr1: $NOPE"), r":9: .*template variable \$NOPE is not set"),
        ((f"rtmr2: {'B2' * 48}", "rtmr2: b2"), r":10: services\[0\]: tdx.rtmr2: expected 96 hex"),
        # bytes.fromhex would skip the spaces; such a pin could never match a quote
        ((f"rtmr2: {'B2' * 48}", f'rtmr2: "{"b2 " * 32}"'), r":10: .*tdx.rtmr2: expected 96 hex"),
        (('"0000001000000000"', '"00000010 0000000"'), r":11: .*tdx.td_attributes: expected 16"),
    ],
)
def test_tdx_pin_errors_name_the_line(edit: tuple[str, str], message: str) -> None:
    assert edit[0] in TDX_SERVICE
    with pytest.raises(SessionError, match=message):
        parse_session(TDX_SERVICE.replace(*edit), TDX_VARS, "s.yml")


def test_a_tdx_measurement_without_pins_is_refused_when_written() -> None:
    """The sms refuses TDX evidence for a policy that does not pin RTMR1 and RTMR2 (MRTD
    measures only the firmware): such a session is refused at once, not at attestation."""
    text = EXAMPLE.replace('"sgx:${SGX}"', f'"tdx:{MR_TD}"')
    with pytest.raises(SessionError, match=r"s.yml:7: service 'app' lists a tdx measurement"):
        parse_session(text, VARS, "s.yml")


def _timed_refusal(text: str, variables: dict[str, str], message: str) -> float:
    start = time.perf_counter()
    with pytest.raises(SessionError, match=message):
        parse_session(text, variables, "s.yml")
    return time.perf_counter() - start


def _service(index: int, environment: str) -> str:
    return (
        f"  - name: s{index}\n"
        f"    measurements: ['sim:{'ab' * 32}']\n"
        f"    command: c\n"
        f"    environment:\n{environment}"
    )


def test_anchors_and_aliases_are_refused_before_any_expansion() -> None:
    """Services that alias one service with an aliased environment: read node by node,
    services x entries (the old parser took seconds per 50 KB, holding the sms). Refused
    at the first anchor, naming its line."""
    environment = "".join(f"      E{i}: value-{i}\n" for i in range(2_000))
    bomb = (
        "name: bomb\nversion: '1'\nservices:\n  - &one\n    name: app\n"
        f"    measurements: ['sim:{'ab' * 32}']\n    command: c\n    environment: &env\n"
        + environment
        + "  - *one\n" * 2_000
    )
    assert _timed_refusal(bomb, {}, r"^s.yml:4: anchor &one: anchors and aliases") < 2.0
    alias_only = EXAMPLE.replace("MODE: production", "MODE: *nothing")
    _timed_refusal(alias_only, VARS, r"^s.yml:11: alias \*nothing: anchors and aliases")
    value_anchor = EXAMPLE.replace("MODE: production", "MODE: &m production")
    _timed_refusal(value_anchor, VARS, r"^s.yml:11: anchor &m")


@pytest.mark.parametrize("loader", ["libyaml", "python"])
def test_both_yaml_parsers_give_the_same_session(
    loader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libyaml's events when PyYAML has it, the pure-Python parser otherwise: the same
    nodes, so the same session and hash (the known answer)."""
    if loader == "python":
        monkeypatch.setattr(session_yaml, "_Loader", yaml.SafeLoader)
    expected = "a42e429377c87f366a8133839d322eaafde4fdcb67e09d5979d271edd05384fa"
    assert parse_session(EXAMPLE, VARS).session_hash() == expected
    with pytest.raises(SessionError, match=r"^s.yml:11: anchor &m"):
        parse_session(EXAMPLE.replace("MODE: production", "MODE: &m x"), VARS, "s.yml")
    with pytest.raises(SessionError, match=r"^s.yml:1: nested deeper than 32 levels"):
        parse_session("[" * 10_000, {}, "s.yml")
    with pytest.raises(SessionError, match=r"^s.yml:3: not valid YAML"):  # libyaml: bytes
        parse_session("name: " + "é" * 20 + "\nversion: é\nx: \x01", {}, "s.yml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, r"^s.yml:1: nested deeper than 32 levels \(MAX_DEPTH\)"),
        ("a:\n" + "".join(" " * i + "a:\n" for i in range(1, 100)), r"^s.yml:33: nested deeper"),
        ("[" + "a," * 130_000 + "a]", r"^s.yml:1: more than 20000 YAML values \(MAX_NODES\)"),
        ("".join(f"k{i}: v\n" for i in range(21_000)), r"^s.yml:10000: more than 20000 YAML"),
        ("name: x\n" + "#" * (256 * 1024), r"^s.yml:2: the document is 262152 bytes, over the"),
        ("name: é\n" + "x" * (256 * 1024 - 8), r"^s.yml:2: the document is 262145 bytes"),
        ("name: x\nversion: \ud800", r"^s.yml:2: not valid text"),
        ("name: x\nversion: \x01", r"^s.yml:2: not valid YAML"),
        ("name: x\n---\nname: y", r"^s.yml:2: a session is one YAML document"),
        ("", r"^s.yml:1: the document is empty"),
    ],
)
def test_documents_over_a_limit_are_refused_quickly_naming_the_line(
    text: str, message: str
) -> None:
    """A deep document was a RecursionError (an HTTP 500); nothing here may be one."""
    assert _timed_refusal(text, {}, message) < 2.0


def test_a_document_at_the_limits_parses_in_bounded_time() -> None:
    """The largest document of services and environment entries that fits the limits
    (38 services x 256 entries, about 20,000 values) parses well under a second."""
    services = "".join(
        _service(n, "".join(f"      E{i}: $V\n" for i in range(256))) for n in range(38)
    )
    text = "name: big\nversion: '1'\nservices:\n" + services
    assert len(text.encode()) <= session_yaml.MAX_DOCUMENT_BYTES
    start = time.perf_counter()
    session = parse_session(text, {"V": "v"}, "s.yml")
    assert time.perf_counter() - start < 2.0
    assert len(session.services) == 38 and len(session.services[0].environment) == 256


def test_services_environment_and_template_growth_are_capped() -> None:
    one_entry = "      E: v\n"
    services = "".join(_service(n, one_entry) for n in range(MAX_SERVICES + 1))
    text = "name: many\nversion: '1'\nservices:\n" + services
    line = 3 + 5 * MAX_SERVICES + 1
    _timed_refusal(text, {}, rf"^s.yml:{line}: more than 64 services \(MAX_SERVICES\)")
    wide = "".join(f"      E{i}: v\n" for i in range(MAX_ENVIRONMENT + 1))
    text = "name: wide\nversion: '1'\nservices:\n" + _service(0, wide)
    _timed_refusal(text, {}, rf"^s.yml:{8 + MAX_ENVIRONMENT}: service 's0' has more than 256")
    # a template value repeated: 60,000 references to a 100 KB value would be 6 GB
    grow = "name: grow\nversion: '1'\nservices:\n" + _service(0, f"      E: {'$V' * 60_000}\n")
    assert _timed_refusal(grow, {"V": "x" * 100_000}, r"^s.yml:8: .*MAX_TEMPLATE_GROWTH") < 2.0
