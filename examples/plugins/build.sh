#!/usr/bin/env bash
# Rebuilds every committed .wasm: the example plugins here and the fixtures of
# the hostile-plugin suite in plugins/testdata.
#   Go examples: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared (WASI reactors)
#   WAT sources: wat2wasm (Debian: apt-get install -y wabt)
# Usage: examples/plugins/build.sh        (from anywhere in the repo)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

if ! command -v wat2wasm >/dev/null; then
	echo "build.sh: wat2wasm not found (apt-get install -y wabt)" >&2
	exit 1
fi

for dir in examples/plugins/budget-guard examples/plugins/webhook-notifier; do
	name="$(basename "$dir")"
	echo "go   $dir/$name.wasm"
	# -trimpath and stripped symbols keep the output reproducible and small.
	(cd "$dir" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o "$name.wasm" .)
done

for wat in examples/plugins/naming-policy/*.wat plugins/testdata/*.wat; do
	echo "wat  ${wat%.wat}.wasm"
	wat2wasm "$wat" -o "${wat%.wat}.wasm"
done
