#!/usr/bin/env bash
# The volumes and CAS tour (`make demo` runs it after `confide demo`, the seed tutorial):
# encrypt a tree into a volume, inspect it, verify it, catch tampering and a rollback,
# and decrypt it back byte for byte; then run the secret service, push a secret, create a
# CAS session, and have a (simulated) enclave attest and receive its sealed
# configuration, while other code is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
confide=.venv/bin/confide
work=$(mktemp -d "${TMPDIR:-/tmp}/confide-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. a directory tree to protect (generated)"
mkdir -p "$work/data/reports/2026" "$work/data/empty"
printf 'patient,score\nA,3\nB,5\n' > "$work/data/reports/2026/q3.csv"
.venv/bin/python -c "import os,sys; sys.stdout.buffer.write(os.urandom(3*1024*1024+17))" > "$work/data/model.bin"
chmod 600 "$work/data/reports/2026/q3.csv"
find "$work/data" | sed "s|$work/||"

step "2. confide volume encrypt data vol.v1 --key-file vol.key   (a new key, mode 0600)"
tag=$("$confide" volume encrypt "$work/data" "$work/vol.v1" --key-file "$work/vol.key")
echo "tag of vol.v1: $tag"
ls -l "$work/vol.key" | awk '{print "key file:", $1, $NF}'

step "3. confide volume info vol.v1   (no key needed; the stored tag is unverified)"
"$confide" volume info "$work/vol.v1"

step "4. confide volume verify vol.v1 --key-file vol.key --tag TAG"
"$confide" volume verify "$work/vol.v1" --key-file "$work/vol.key" --tag "$tag"

step "5. a new version: change a file, encrypt again with the same key"
printf 'C,8\n' >> "$work/data/reports/2026/q3.csv"
tag2=$("$confide" volume encrypt "$work/data" "$work/vol.v2" --key-file "$work/vol.key")
echo "tag of vol.v2: $tag2"

step "6. rollback: someone hands back the old volume where the new one is expected"
if "$confide" volume decrypt "$work/vol.v1" "$work/out" --key-file "$work/vol.key" --tag "$tag2"; then
    echo "demo failed: rollback was not detected" >&2; exit 1
fi
[ ! -e "$work/out" ] && echo "refused, and nothing was written"

step "7. tampering: one flipped bit in an object"
cp -r "$work/vol.v2" "$work/vol.bad"
obj=$(ls "$work/vol.bad/objects" | head -1)
.venv/bin/python - "$work/vol.bad/objects/$obj" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
data[len(data) // 2] ^= 0x01
open(path, "wb").write(bytes(data))
PY
if "$confide" volume verify "$work/vol.bad" --key-file "$work/vol.key"; then
    echo "demo failed: tampering was not detected" >&2; exit 1
fi

step "8. confide volume decrypt vol.v2 out --key-file vol.key --tag TAG2"
"$confide" volume decrypt "$work/vol.v2" "$work/out" --key-file "$work/vol.key" --tag "$tag2"
diff -r "$work/data" "$work/out" && echo "restored tree is identical to the source (contents, names, empty dirs)"

step "9. the secret service: confide serve sms --allow-sim (development only), on loopback"
export CONFIDE_HOME="$work/home" CONFIDE_WALLET_PASSWORD="demo-only-password"
port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
export CONFIDE_SMS="http://127.0.0.1:$port"
"$confide" serve sms --port "$port" --allow-sim 2>"$work/sms.log" &
sms_pid=$!
trap 'kill "$sms_pid" 2>/dev/null || true; wait "$sms_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
.venv/bin/python - "$CONFIDE_SMS/health" <<'PY'
import sys, time, httpx
for _ in range(200):  # up to 20 s for the first start (migrations)
    try:
        if httpx.get(sys.argv[1]).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.1)
else:
    sys.exit("the sms did not start")
PY
cat "$work/sms.log"

step "10. confide wallet create; confide requester push-secret api_key (value from stdin)"
"$confide" wallet create
printf 'demo-api-key-value' | "$confide" requester push-secret api_key
"$confide" requester check-secret api_key

step "11. confide session create cubic.yml --var MODE=production   (a CAS session)"
measurement="sim:$(printf 'demo app' | sha256sum | cut -d' ' -f1)"
cat > "$work/cubic.yml" <<YAML
name: cubic
version: "1"
services:
  - name: app
    measurements: ["$measurement"]
    command: python3 /app/app.py --mode \$MODE
    environment:
      API_KEY: "\$\$confide:secrets:api_key\$\$"
    volumes: [output]
volumes:
  - name: output
secrets:
  - name: api_key
    kind: ascii
    value: "session-api-key-value"
security:
  tolerate: [simulation]
YAML
"$confide" session create "$work/cubic.yml" --var MODE=production
owner=$("$confide" wallet show --json | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['address'])")
hash=$("$confide" session show cubic --json | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['hash'])")

step "12. an enclave attests (sim) and receives its configuration, sealed to it"
.venv/bin/python scripts/demo_enclave.py "$CONFIDE_SMS" "$owner" cubic "$hash" "$measurement"

step "13. other code (another measurement) asks for the same session: refused, with the reason"
.venv/bin/python scripts/demo_enclave.py "$CONFIDE_SMS" "$owner" cubic "$hash" \
    "sim:$(printf 'other app' | sha256sum | cut -d' ' -f1)" --expect-refusal

step "14. confide audit verify   (every write, grant and refusal, hash-chained; never a value)"
"$confide" audit show --limit 20
"$confide" audit verify

step "done: the demo ran every step; see README.md for what comes next"
