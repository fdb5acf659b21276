"""examples/copy-dapp/run.sh as a new user runs it, against ``confide up``: the seed's
copy DApp built (C, or Python without a compiler), its three steps, OUTPUTS equal to
INPUTS byte for byte, and the older input volume refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_cli_up_platform import Up, up  # noqa: F401 (fixture)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "copy-dapp" / "run.sh"


@pytest.mark.parametrize("language", ["c", "python"])
def test_the_copy_dapp_example_runs_the_seeds_three_steps(
    up: Up,  # noqa: F811
    language: str,
) -> None:
    if language == "c" and shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    user = f"eli-{language}"
    up.wallet(user)
    work = up.root / user / "example"
    env = {
        **up.env(user),
        "CONFIDE": f"{sys.executable} -m confide",
        "SESSION": f"copy-{language}",
        "COPY_DAPP_LANG": language,
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "done: OUTPUTS equals INPUTS, and the older volume was refused" in done.stdout
    assert "is not the session's current version" in done.stderr
    assert (work / "EXAMPLE" / "OUTPUTS" / "f1.txt").read_text() == "Hello world\n"
    assert (work / "EXAMPLE" / "OUTPUTS" / "f2.txt").read_text() == "Hello together\n"
    assert f"{'native' if language == 'c' else 'python'} app, sim:" in done.stdout
