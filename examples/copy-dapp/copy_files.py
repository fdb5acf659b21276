"""The copy DApp where no C compiler is at hand: every file of /encryptedInputs copied to
/encryptedOutputs, as copy_files.c does."""

import shutil
from pathlib import Path

copied = 0
for source in sorted(Path("/encryptedInputs").iterdir()):
    if source.is_file():
        shutil.copyfile(source, Path("/encryptedOutputs") / source.name)
        copied += 1
print(f"copied {copied} files")
