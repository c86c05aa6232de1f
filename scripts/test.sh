#!/usr/bin/env bash
# Runs the test suite against real services: PostgreSQL and Redis (which must
# answer; .ci/run starts them), and a Kratos built from its Go module that
# this script starts on 127.0.0.1:4533/4534 with its own database.
set -euo pipefail
cd "$(dirname "$0")/.."

# Said again when the script ends, whatever the outcome.
browser_note=""
on_exit() { if [ -n "$browser_note" ]; then echo "!!! $browser_note" >&2; fi; }
trap on_exit EXIT

PG_URL=${PROMANAGE_TEST_PG:-postgres://postgres@127.0.0.1:5432}
export PROMANAGE_TEST_DATABASE_URL=${PROMANAGE_TEST_DATABASE_URL:-$PG_URL/promanage_test?sslmode=disable}
export PROMANAGE_TEST_REDIS_URL=${PROMANAGE_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
KRATOS_DSN=$PG_URL/promanage_test_kratos?sslmode=disable
# The test Kratos listens on PROMANAGE_TEST_KRATOS_PORT (public) and the
# next port (admin); another port gives a checkout its own Kratos.
KRATOS_PORT=${PROMANAGE_TEST_KRATOS_PORT:-4533}
export PROMANAGE_TEST_KRATOS_URL=http://127.0.0.1:$KRATOS_PORT
export PROMANAGE_TEST_KRATOS_ADMIN_URL=http://127.0.0.1:$((KRATOS_PORT + 1))

for db in promanage_test promanage_test_kratos; do
  psql "$PG_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
    || psql "$PG_URL/postgres" -qc "CREATE DATABASE $db"
done

# The test Kratos' secrets (cookie and cipher secrets, the tokenizer's
# signing keys) are generated at run time, never committed: once per Kratos
# port in a directory every checkout on this machine finds, so a run that
# reuses a Kratos another run started knows its keys. Tests read them from
# PROMANAGE_TEST_SECRETS_DIR.
KRATOS_STATE=${PROMANAGE_TEST_KRATOS_STATE:-${TMPDIR:-/tmp}/promanage-test-kratos-$KRATOS_PORT}
export PROMANAGE_TEST_SECRETS_DIR=$KRATOS_STATE/secrets
if ! curl -sf "$PROMANAGE_TEST_KRATOS_URL/health/ready" >/dev/null; then
  if [ ! -f "$PROMANAGE_TEST_SECRETS_DIR/kratos.json" ]; then
    go run ./cmd/promanage dev -secrets-only -for-tests -data-dir "$KRATOS_STATE" -log-level error >/dev/null
  fi
  DSN=$KRATOS_DSN bin/kratos migrate sql -e --yes -c deploy/kratos/kratos.yml >/dev/null
  mkdir -p .data
  DSN=$KRATOS_DSN SERVE_PUBLIC_PORT=$KRATOS_PORT SERVE_ADMIN_PORT=$((KRATOS_PORT + 1)) \
  SERVE_PUBLIC_BASE_URL=$PROMANAGE_TEST_KRATOS_URL/ SERVE_ADMIN_BASE_URL=$PROMANAGE_TEST_KRATOS_ADMIN_URL/ \
    bin/kratos serve -c deploy/kratos/kratos.yml -c "$PROMANAGE_TEST_SECRETS_DIR/kratos.json" --dev >.data/kratos-test.log 2>&1 &
  KRATOS_PID=$!
  trap 'kill $KRATOS_PID 2>/dev/null || true; on_exit' EXIT
  for _ in $(seq 1 100); do
    curl -sf "$PROMANAGE_TEST_KRATOS_URL/health/ready" >/dev/null && break
    sleep 0.2
  done
  curl -sf "$PROMANAGE_TEST_KRATOS_URL/health/ready" >/dev/null || { cat .data/kratos-test.log; echo "kratos did not start"; exit 1; }
elif [ ! -f "$PROMANAGE_TEST_SECRETS_DIR/jwks.public.json" ]; then
  echo "a Kratos answers on port $KRATOS_PORT but its secrets are not in $PROMANAGE_TEST_SECRETS_DIR:"
  echo "stop it, or run with another PROMANAGE_TEST_KRATOS_PORT"
  exit 1
fi

# The API reference and its contract checks: the renderer built into the binary, the two
# independent OpenAPI validators (pinned in tools/openapi-validators/package-lock.json), and
# Debian's chromium for the browser test. Missing assets or validators fail the run; a
# browser that cannot be installed skips that one test, loudly (here and at the end).
mkdir -p .data
bash scripts/docs-assets.sh
export PROMANAGE_TEST_DOCS=require
validators=tools/openapi-validators
if ! cmp -s "$validators/package-lock.json" "$validators/node_modules/.installed-lock.json" 2>/dev/null; then
  npm ci --prefix "$validators" --no-audit --no-fund --loglevel=error >&2
  cp "$validators/package-lock.json" "$validators/node_modules/.installed-lock.json"
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends chromium >.data/chromium-install.log 2>&1 \
      || { apt-get update >>.data/chromium-install.log 2>&1 && apt-get install -y --no-install-recommends chromium >>.data/chromium-install.log 2>&1; } || true
  fi
fi
if command -v chromium >/dev/null 2>&1; then
  export PROMANAGE_TEST_BROWSER=require
else
  browser_note="chromium could not be installed (see .data/chromium-install.log): TestDocsPageInChromium was SKIPPED, not passed"
  echo "!!! $browser_note" >&2
fi

# PgBouncer (Debian's, 1.18 here) for the tests behind a transaction pooler; they
# start their own on private ports. Missing and not installable: those tests fail
# and say how to install it.
if ! command -v pgbouncer >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y --no-install-recommends pgbouncer >.data/pgbouncer-install.log 2>&1 \
      || { apt-get update >>.data/pgbouncer-install.log 2>&1 && apt-get install -y --no-install-recommends pgbouncer >>.data/pgbouncer-install.log 2>&1; } || true
  fi
fi

if [ -x scripts/azurite.sh ] || [ -f scripts/azurite.sh ]; then
  bash scripts/azurite.sh || echo "azurite could not be installed: the Azure conformance tests will say so"
fi

if [ "${BENCH:-}" = 1 ]; then
  go test -run '^$' -bench . -benchmem -count=1 ./...
  exit 0
fi

if [ -n "${PKGS:-}" ]; then # a quick subset: PKGS=./cmd/... RUN=TestX make test
  go test -count=1 -timeout 20m ${RUN:+-run "$RUN"} $PKGS
  exit 0
fi
go vet ./...
go test -count=1 -p 2 -timeout 20m ./...
if [ -f deploy/validate/go.mod ]; then
  (cd deploy/validate && go test -count=1 ./...)
fi
