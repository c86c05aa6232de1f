#!/usr/bin/env bash
# Optional: `tofu fmt -check` on deploy/terraform with a real OpenTofu binary built
# from its Go module (no release download needed). The Go tests already check
# formatting with hclwrite.Format, which is what `tofu fmt` runs; this script is
# the belt-and-braces variant for `make deploy-check`.
#
# `go install github.com/opentofu/opentofu/cmd/tofu@VERSION` is refused because
# OpenTofu's go.mod has replace directives, so the module is downloaded and
# built in place. Cold: ~5-10 minutes on 2 cores; then cached in $TOFU_CACHE.
set -euo pipefail
cd "$(dirname "$0")/../../terraform"

TOFU_VERSION=${TOFU_VERSION:-v1.12.6}
TOFU_CACHE=${TOFU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promanage/tofu-$TOFU_VERSION}
tofu="$TOFU_CACHE/tofu"

if [ ! -x "$tofu" ]; then
  src=$(go mod download -json "github.com/opentofu/opentofu@$TOFU_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  mkdir -p "$TOFU_CACHE"
  (cd "$work" && GOFLAGS=-mod=mod go build -trimpath -o "$tofu" ./cmd/tofu)
fi

TF_CLI_CONFIG_FILE=/dev/null "$tofu" fmt -check -recursive -diff .
echo "tofu fmt -check: deploy/terraform is formatted"
