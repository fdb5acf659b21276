"""Where Gramine is on this machine: its signing tools and its own files (the LibOS
loader and its patched glibc), which only an installed Gramine provides."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

SIGN = "gramine-sgx-sign"
VIEW = "gramine-sgx-sigstruct-view"
INSTALL = (
    "install Gramine (https://gramine.readthedocs.io/en/stable/installation.html; on Ubuntu "
    "or Debian: add packages.gramineproject.io and `sudo apt-get install gramine`), then "
    "run `confide app manifest DIR --tee sgx` again"
)


@dataclass(frozen=True)
class GramineLayout:
    """Where Gramine's own files are (``graminelibos``'s paths on Debian and Ubuntu)."""

    libos: Path = Path("/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so")
    runtime_dir: Path = Path("/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc")


@dataclass(frozen=True)
class GramineTools:
    sign: str | None
    view: str | None

    @classmethod
    def find(cls, search_path: str | None = None) -> GramineTools:
        return cls(shutil.which(SIGN, path=search_path), shutil.which(VIEW, path=search_path))

    def missing(self) -> list[str]:
        return [name for name, found in ((SIGN, self.sign), (VIEW, self.view)) if found is None]

    def layout(self) -> GramineLayout:
        """Gramine's loader and glibc paths: next to an installed gramine-sgx-sign's
        package (``<prefix>/lib/x86_64-linux-gnu/gramine``), else Debian's defaults."""
        if self.sign is not None:
            prefix = Path(self.sign).resolve().parent.parent
            for libdir in (prefix / "lib/x86_64-linux-gnu/gramine", prefix / "lib/gramine"):
                if (libdir / "libsysdb.so").is_file():
                    return GramineLayout(libdir / "libsysdb.so", libdir / "runtime/glibc")
        return GramineLayout()
