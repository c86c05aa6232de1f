-- Platform tables in the public schema. None of these names may ever be used
-- by a tenant schema, so that a query which forgot its tenant scope fails with
-- "relation does not exist" instead of reading another tenant's rows.

CREATE TABLE tenants (
    id             uuid PRIMARY KEY,
    slug           text NOT NULL,
    name           text NOT NULL,
    state          text NOT NULL CHECK (state IN ('provisioning', 'active', 'suspended', 'deleted')),
    schema_name    text NOT NULL UNIQUE,
    schema_version integer NOT NULL DEFAULT 0,
    settings       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    purge_after    timestamptz
);
-- A slug stays reserved until the tenant is purged (the row is removed then).
CREATE UNIQUE INDEX tenants_slug_key ON tenants (slug);
CREATE INDEX tenants_schema_version_idx ON tenants (schema_version) WHERE state <> 'deleted';

CREATE TABLE users (
    id         uuid PRIMARY KEY,          -- the Kratos identity id
    email      text NOT NULL DEFAULT '',
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_email_idx ON users (lower(email));

CREATE TABLE memberships (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- Casbin rules, in the layout of github.com/casbin/gorm-adapter (v0 = subject,
-- v1 = domain for p rules; v0 = user, v1 = role, v2 = domain for g rules).
CREATE TABLE casbin_rule (
    id    bigserial PRIMARY KEY,
    ptype varchar(100) NOT NULL DEFAULT '',
    v0    varchar(100) NOT NULL DEFAULT '',
    v1    varchar(100) NOT NULL DEFAULT '',
    v2    varchar(100) NOT NULL DEFAULT '',
    v3    varchar(100) NOT NULL DEFAULT '',
    v4    varchar(100) NOT NULL DEFAULT '',
    v5    varchar(100) NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX idx_casbin_rule ON casbin_rule (ptype, v0, v1, v2, v3, v4, v5);
CREATE INDEX casbin_rule_p_domain_idx ON casbin_rule (v1) WHERE ptype = 'p';
CREATE INDEX casbin_rule_g_domain_idx ON casbin_rule (v2) WHERE ptype = 'g';
