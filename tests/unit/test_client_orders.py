"""``app run``'s option parsers (confide.client.orders): what is accepted, and each refusal
naming the option and the value."""

from __future__ import annotations

import pytest

from confide.client.orders import (
    RunOptionError,
    RunOptions,
    parse_category,
    parse_duration,
    parse_input_files,
    parse_secret_mappings,
    parse_tag,
)

HEX = "ab" * 32


def test_secret_mappings_in_one_option_or_several_agree() -> None:
    assert parse_secret_mappings(["1=x1 3=y"]) == ((1, "x1"), (3, "y"))
    assert parse_secret_mappings(["3=y", "1=x1"]) == ((1, "x1"), (3, "y"))
    assert parse_secret_mappings(["1=x1,2=z"]) == ((1, "x1"), (2, "z"))
    assert parse_secret_mappings([]) == ()
    assert parse_secret_mappings(["1000=Z_z-9"]) == ((1000, "Z_z-9"),)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["1="], "'1='"),
        (["0=x"], "'0=x'"),
        (["a=b"], "'a=b'"),
        (["01=x"], "'01=x'"),
        (["1001=x"], "'1001=x'"),
        (["-1=x"], "'-1=x'"),
        (["=x"], "'=x'"),
        (["x"], "'x'"),
        (["1=a/b"], "'a/b'"),
        (["1=" + "n" * 65], "is not 1 to 64"),
        (["1=x 1=y"], "index 1 is already mapped to 'x'"),
        (["2=x", "2=x"], "index 2 is already mapped"),
        ([""], "without an index=name"),
        (["\u00b9=x"], "'\u00b9=x'"),
    ],
)
def test_malformed_secret_mappings_are_refused_naming_them(values: list[str], named: str) -> None:
    with pytest.raises(RunOptionError, match="--secret") as raised:
        parse_secret_mappings(values)
    assert named in str(raised.value)


def test_too_many_mappings_are_refused() -> None:
    with pytest.raises(RunOptionError, match="at most 64"):
        parse_secret_mappings([" ".join(f"{i}=s{i}" for i in range(1, 66))])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("30m", 1800), ("7d", 7 * 86400), ("1h30m", 5400), ("90s", 90), ("2D", 172800)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "8d", "7d1s", "1", "h", "1h 5", "-1h", "1w", "1.5h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(RunOptionError, match="--valid-for"):
        parse_duration(text)


def test_tags_map_to_tees_and_tolerations() -> None:
    assert parse_tag("tee,sgx") == (("sgx",), ())
    assert parse_tag("tee,scone") == parse_tag("tee,gramine") == (("sgx",), ())
    assert parse_tag("TEE, tdx") == (("tdx",), ())
    assert parse_tag("tee,sim") == (("sim",), ("simulation",))
    for bad in ("sgx", "tee", "tee,sgx,tdx", "tee,foo", ""):
        with pytest.raises(RunOptionError, match="--tag"):
            parse_tag(bad)


def test_input_files_need_their_digest() -> None:
    url = "https://example.org/a.csv"
    assert parse_input_files([f"{url}#sha256={HEX.upper()}"]) == ((url, HEX),)
    two = parse_input_files([f"{url}#sha256={HEX} {url}2#sha256={HEX}"])
    assert [u for u, _ in two] == [url, url + "2"]
    for bad in (url, f"{url}#sha256=ab", f"ftp://x/y#sha256={HEX}", f"{url}#md5={HEX}"):
        with pytest.raises(RunOptionError, match="--input-files"):
            parse_input_files([bad])
    with pytest.raises(RunOptionError, match="at most 32"):
        parse_input_files([" ".join(f"{url}{i}#sha256={HEX}" for i in range(33))])


def test_categories_and_attempts_and_args() -> None:
    assert parse_category("xs") == "XS" and parse_category("XL") == "XL"
    with pytest.raises(RunOptionError, match="--category 'XXL'"):
        parse_category("XXL")
    for attempts in (0, 11, -1):
        with pytest.raises(RunOptionError, match="--max-attempts"):
            RunOptions(app="a", workerpool="p", max_attempts=attempts)
    with pytest.raises(RunOptionError, match="--args"):
        RunOptions(app="a", workerpool="p", args="x" * 4097)
    with pytest.raises(RunOptionError, match="--args"):
        RunOptions(app="a", workerpool="p", args="a\x00b")
