#!/usr/bin/env bash
# Install the external tools that bench/volume_bench.py compares against:
# age (age, age-keygen), gocryptfs and fuse3 (fusermount3); and wrk, the HTTP load
# generator of bench/sms_bench.py. Idempotent: a tool
# that is already on PATH is left alone, and apt-get runs only when something is
# missing. Needs root (or sudo) and Debian's package registry.
set -euo pipefail

declare -A package_for=(
    [age]=age
    [age-keygen]=age
    [gocryptfs]=gocryptfs
    [fusermount3]=fuse3
    [wrk]=wrk
)

missing=()
for tool in age age-keygen gocryptfs fusermount3 wrk; do
    if command -v "$tool" >/dev/null 2>&1; then
        echo "install-tools: $tool already present ($(command -v "$tool"))"
    else
        pkg=${package_for[$tool]}
        if [[ " ${missing[*]-} " != *" $pkg "* ]]; then
            missing+=("$pkg")
        fi
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install-tools: nothing to install"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "install-tools: need root to install: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-tools: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; then
    echo "install-tools: first attempt failed; running apt-get update and retrying"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi
echo "install-tools: installed ${missing[*]}"

if [[ ! -e /dev/fuse ]]; then
    echo "install-tools: note: /dev/fuse is missing; the gocryptfs comparison will be skipped"
fi
