#!/usr/bin/env bash
# azurite.sh installs Azurite, the Azure Storage emulator, into .tools/azurite
# (once) and prints the path of its azurite-blob executable.
#
# The storage conformance tests run it to exercise azblob:// buckets; a
# developer can also start it by hand:
#   "$(scripts/azurite.sh)" --blobHost 127.0.0.1 --blobPort 10000 --inMemoryPersistence --skipApiVersionCheck
#
# The version is pinned: Azurite 3.36 and later require Node 21+, and the
# machines have Node 20. Override with AZURITE_VERSION.
set -euo pipefail

version="${AZURITE_VERSION:-3.35.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$root/.tools/azurite"
bin="$prefix/node_modules/.bin/azurite-blob"
stamp="$prefix/.version"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "azurite.sh: node and npm are required (apt-get install nodejs npm)" >&2
	exit 2
fi

if [ ! -x "$bin" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
	mkdir -p "$prefix"
	# Quiet on stdout: the only line this script prints there is the path.
	npm install --prefix "$prefix" --no-save --no-audit --no-fund --omit=dev \
		--loglevel=error "azurite@$version" >&2
	echo "$version" >"$stamp"
fi

echo "$bin"
