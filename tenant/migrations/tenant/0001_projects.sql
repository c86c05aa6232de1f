-- Runs with search_path set to the tenant's schema (transaction-local).

CREATE TABLE projects (
    id           uuid PRIMARY KEY,          -- UUIDv7: ordered by creation time
    key          text NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    status       text NOT NULL,
    start_date   date,
    deadline     date,
    budget_minor bigint NOT NULL DEFAULT 0 CHECK (budget_minor >= 0),
    currency     text,
    version      bigint NOT NULL DEFAULT 1,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    search       tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', key || ' ' || name || ' ' || description)
    ) STORED,
    CHECK (deadline IS NULL OR start_date IS NULL OR deadline >= start_date)
);
CREATE UNIQUE INDEX projects_key_live_key ON projects (key) WHERE deleted_at IS NULL;
CREATE INDEX projects_search_idx ON projects USING gin (search);
CREATE INDEX projects_deadline_idx ON projects (deadline) WHERE deleted_at IS NULL;

CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    uuid,
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL DEFAULT '',
    outcome     text NOT NULL DEFAULT 'success',
    request_id  text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
