#!/usr/bin/env bash
# The SCONE seed's copy DApp with confide's commands: build the copy program, measure it,
# create the session from copy_dapp.yml, then the seed's three steps (encrypted push,
# attested run with --push, decrypt) and a check that OUTPUTS equals INPUTS; last, an
# older copy of the input volume refused before the program starts.
#
#   examples/copy-dapp/run.sh [WORKDIR]
#
# Needs a platform (`confide up` in another terminal, or CONFIDE_HUB) and a wallet
# (`confide wallet create`). CONFIDE names the command (default: confide);
# COPY_DAPP_LANG=python builds the Python version even where a C compiler exists.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
read -r -a confide <<< "${CONFIDE:-confide}"
work=${1:-$(mktemp -d)}
session=${SESSION:-copy-dapp-$(date +%s)}
say() { printf '\n== %s\n' "$*"; }

mkdir -p "$work/EXAMPLE/INPUTS" "$work/bundle"
echo "Hello world" > "$work/EXAMPLE/INPUTS/f1.txt"
echo "Hello together" > "$work/EXAMPLE/INPUTS/f2.txt"

say "build the copy DApp and measure it"
if [ "${COPY_DAPP_LANG:-c}" = c ] && command -v cc > /dev/null; then
    cc -O2 -Wall -o "$work/bundle/copy_files" "$here/copy_files.c"
    entrypoint=copy_files runtime=native command=/app/copy_files
else  # no C compiler: the Python version
    cp "$here/copy_files.py" "$work/bundle/"
    entrypoint=copy_files.py runtime=python command="python3 /app/copy_files.py"
fi
printf 'name: copy-dapp\nentrypoint: %s\nruntime: %s\nheap: 64M\nstack: 8M\nthreads: 4\n' \
    "$entrypoint" "$runtime" > "$work/bundle/confide-app.yml"
measurement=$("${confide[@]}" app measure "$work/bundle" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["measurement"])')
echo "$runtime app, $measurement"

say "the session, from the template"
"${confide[@]}" session create "$here/copy_dapp.yml" --var "SESSION=$session" \
    --var "MEASUREMENT=$measurement" --var "COMMAND=$command"

say "step 1: encrypt and push the inputs (a copy of the encrypted volume kept in inputs-v1)"
"${confide[@]}" volume push "$work/EXAMPLE/INPUTS" --session "$session" \
    --volume encrypted-input-files --keep "$work/inputs-v1"

say "step 2: the attested run, its output volume pushed"
"${confide[@]}" dapp run --session "$session" --app "$work/bundle" --tee sim --push

say "step 3: decrypt the outputs"
"${confide[@]}" volume pull "$work/EXAMPLE/OUTPUTS" --session "$session" \
    --volume encrypted-output-files
diff -r "$work/EXAMPLE/INPUTS" "$work/EXAMPLE/OUTPUTS"
cat "$work/EXAMPLE/OUTPUTS/f1.txt" "$work/EXAMPLE/OUTPUTS/f2.txt"

say "rollback: a new input version, then a run given the old copy"
echo "Hello again" > "$work/EXAMPLE/INPUTS/f1.txt"
"${confide[@]}" volume push "$work/EXAMPLE/INPUTS" --session "$session" \
    --volume encrypted-input-files
if "${confide[@]}" dapp run --session "$session" --app "$work/bundle" --tee sim \
    --volume "encrypted-input-files=$work/inputs-v1" 2> "$work/rollback.err"; then
    echo "the older input volume was accepted" >&2
    exit 1
fi
cat "$work/rollback.err" >&2
grep -q "is not the session's current version" "$work/rollback.err"
say "done: OUTPUTS equals INPUTS, and the older volume was refused"
