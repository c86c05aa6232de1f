#!/usr/bin/env bash
# docs-assets.sh puts the API reference's renderer, Redoc's standalone bundle, into
# api/docs/assets/, which the binary embeds (api/openapi.go) so /docs works offline.
#
# The bundle is not kept in git: it comes from the npm package `redoc` at a pinned version,
# and the tarball must match the pinned sha512 integrity (the value npm's registry publishes,
# `npm view redoc@<version> dist.integrity`) before anything is extracted. Nothing of the
# package runs: `npm pack` only downloads it.
#
# One change is made to the bundle: Redoc's sidebar shows a "Redocly" logo loaded from
# https://cdn.redoc.ly, a third-party request on every page view that fails offline and that
# the page's Content-Security-Policy refuses (a console error). The script replaces that one
# URL with an empty inline SVG, and fails if the URL is not found exactly once (a new Redoc
# version then needs a look). Redoc's MIT licence and the bundle's
# third-party licence notices are kept next to it.
#
# Idempotent and offline once done: it does nothing when the stamp file names the pinned
# version and integrity. Override both with REDOC_VERSION and REDOC_INTEGRITY.
set -euo pipefail

version="${REDOC_VERSION:-2.5.4}"
integrity="${REDOC_INTEGRITY:-sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/api/docs/assets"
stamp="$dest/.redoc"

if [ -f "$dest/redoc.standalone.js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version $integrity" ]; then
	exit 0
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "docs-assets.sh: node and npm are required to fetch the API reference renderer (apt-get install nodejs npm)" >&2
	exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --loglevel=error "redoc@$version" >"$tmp/packed")
tgz="$tmp/$(tail -n 1 "$tmp/packed")"
got="$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tgz")"
if [ "$got" != "$integrity" ]; then
	echo "docs-assets.sh: redoc@$version has integrity $got, want $integrity: refusing it" >&2
	exit 1
fi

tar -xzf "$tgz" -C "$tmp" package/bundles/redoc.standalone.js package/bundles/redoc.standalone.js.LICENSE.txt package/LICENSE
node - "$tmp/package/bundles/redoc.standalone.js" <<'EOF'
const fs = require("fs");
const file = process.argv[2];
const logo = "https://cdn.redoc.ly/redoc/logo-mini.svg";
const empty = "data:image/svg+xml,%3Csvg%20xmlns%3D%27http%3A%2F%2Fwww.w3.org%2F2000%2Fsvg%27%2F%3E";
const src = fs.readFileSync(file, "utf8");
const n = src.split(logo).length - 1;
if (n !== 1) {
  console.error(`docs-assets.sh: expected the Redocly logo URL once in the bundle, found it ${n} times`);
  process.exit(1);
}
fs.writeFileSync(file, src.replace(logo, empty));
EOF

mkdir -p "$dest"
cp "$tmp/package/bundles/redoc.standalone.js" "$dest/redoc.standalone.js"
cp "$tmp/package/LICENSE" "$dest/redoc.LICENSE.txt"
cp "$tmp/package/bundles/redoc.standalone.js.LICENSE.txt" "$dest/redoc.standalone.js.LICENSE.txt"
echo "$version $integrity" >"$stamp"
echo "docs-assets.sh: redoc@$version in api/docs/assets" >&2
