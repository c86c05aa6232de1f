-- Tasks, milestones and expenses of projects.

CREATE TABLE tasks (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id),
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    status      text NOT NULL,
    assignee_id uuid,
    due_date    date,
    version     bigint NOT NULL DEFAULT 1,
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    done_at     timestamptz,
    deleted_at  timestamptz,
    search      tsvector GENERATED ALWAYS AS (to_tsvector('simple', title || ' ' || description)) STORED
);
CREATE INDEX tasks_project_idx ON tasks (project_id, id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id) WHERE deleted_at IS NULL;
CREATE INDEX tasks_search_idx ON tasks USING gin (search);

CREATE TABLE milestones (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id),
    name       text NOT NULL,
    due_date   date,
    done       boolean NOT NULL DEFAULT false,
    version    bigint NOT NULL DEFAULT 1,
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX milestones_project_idx ON milestones (project_id, id) WHERE deleted_at IS NULL;

CREATE TABLE expenses (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency     text NOT NULL,
    category     text NOT NULL DEFAULT '',
    spent_on     date NOT NULL,
    note         text NOT NULL DEFAULT '',
    version      bigint NOT NULL DEFAULT 1,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX expenses_project_idx ON expenses (project_id, spent_on) WHERE deleted_at IS NULL;
