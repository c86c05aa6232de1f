-- Plugin registry (issue 6). Platform tables in public with tenant_id on each
-- row: the wasm runtime is per process, not per tenant schema, and the worker
-- finds a tenant's notification plugins without touching its schema.
-- JSON values are jsonb bound as text (pgx exec mode sends []byte as bytea);
-- module bytes are bytea (at most PROMANAGE_PLUGIN_MAX_MODULE_BYTES, 8 MiB).

-- One row per plugin name and tenant; the settings a tenant can PATCH live
-- here, the code in plugin_versions.
CREATE TABLE plugins (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name            text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    current_version integer NOT NULL,
    config          jsonb NOT NULL DEFAULT '{}',
    failure_policy  text NOT NULL DEFAULT 'fail_closed' CHECK (failure_policy IN ('fail_closed', 'fail_open')),
    allowed_hosts   jsonb NOT NULL DEFAULT '[]',
    priority        integer NOT NULL DEFAULT 0,
    timeout_ms      integer NOT NULL DEFAULT 0,
    -- HMAC key of the plugin's webhooks; shown once, when the plugin is created.
    signing_secret  text NOT NULL,
    revision        bigint NOT NULL DEFAULT 1, -- the ETag
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX plugins_tenant_name_key ON plugins (tenant_id, name);

-- Every uploaded module, immutable. A re-upload of a name is a new version.
CREATE TABLE plugin_versions (
    id         uuid PRIMARY KEY,
    plugin_id  uuid NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    tenant_id  uuid NOT NULL,
    version    integer NOT NULL,
    hooks      jsonb NOT NULL,
    manifest   jsonb NOT NULL,
    module     bytea NOT NULL,
    size       integer NOT NULL,
    sha256     text NOT NULL,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (plugin_id, version)
);

-- Recent calls, written asynchronously in batches (no foreign key: a batch
-- must not fail because a plugin was deleted meanwhile); pruned by the worker.
CREATE TABLE plugin_invocations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    plugin_id   uuid NOT NULL,
    version     integer NOT NULL,
    hook        text NOT NULL,
    outcome     text NOT NULL, -- allowed, rejected, ok, failed
    message     text NOT NULL DEFAULT '',
    error       text NOT NULL DEFAULT '',
    result      jsonb,
    logs        jsonb NOT NULL DEFAULT '[]',
    duration_us bigint NOT NULL DEFAULT 0,
    dry_run     boolean NOT NULL DEFAULT false,
    event_id    uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plugin_invocations_plugin_idx ON plugin_invocations (tenant_id, plugin_id, id DESC);
CREATE INDEX plugin_invocations_created_idx ON plugin_invocations (created_at);

-- Webhooks asked for by notification plugins. id is the ProManage-Delivery
-- header, stable per (event, plugin, index): a retried event reuses the
-- stored request and skips deliveries already made.
CREATE TABLE plugin_deliveries (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    plugin_id  uuid NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    event_id   uuid NOT NULL,
    idx        integer NOT NULL,
    request    jsonb NOT NULL,
    state      text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts   integer NOT NULL DEFAULT 0,
    status     integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plugin_deliveries_event_idx ON plugin_deliveries (event_id, plugin_id);
CREATE INDEX plugin_deliveries_plugin_idx ON plugin_deliveries (tenant_id, plugin_id, created_at DESC);
