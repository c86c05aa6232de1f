-- Documents of projects, their immutable versions, and the reservations of
-- uploads in flight. Blobs live in the bucket under
-- tenants/<tenant-id>/documents/<document-id>/v<version>; a version row is
-- written only after its blob was stored.

CREATE TABLE documents (
    id              uuid PRIMARY KEY,          -- UUIDv7: ordered by creation time
    project_id      uuid NOT NULL REFERENCES projects (id),
    title           text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    current_version integer NOT NULL CHECK (current_version >= 1),
    -- next_version is the number the next upload reserves; allocating it
    -- under the row lock is what gives concurrent uploads distinct numbers.
    next_version    integer NOT NULL CHECK (next_version > current_version),
    version         bigint NOT NULL DEFAULT 1,  -- row version (ETag)
    created_by      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    purge_after     timestamptz                 -- blobs of a deleted document are purged after it
);
CREATE INDEX documents_project_idx ON documents (project_id, id) WHERE deleted_at IS NULL;
CREATE INDEX documents_purge_idx ON documents (purge_after) WHERE deleted_at IS NOT NULL;

CREATE TABLE document_versions (
    document_id   uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version >= 1),
    size          bigint NOT NULL CHECK (size >= 0),
    sha256        text NOT NULL,
    md5           text NOT NULL,
    content_type  text NOT NULL,
    filename      text NOT NULL DEFAULT '',
    restored_from integer,
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, version)
);

-- An upload in flight: its version number is taken and its bytes count
-- against the quota until it commits (the row is replaced by a version) or
-- fails (the row is deleted). Rows of crashed uploads expire and the worker
-- removes them with their blobs. No foreign key: the document row of a first
-- upload does not exist until it commits.
CREATE TABLE document_uploads (
    document_id    uuid NOT NULL,
    version        integer NOT NULL CHECK (version >= 1),
    reserved_bytes bigint NOT NULL CHECK (reserved_bytes >= 0),
    created_by     uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (document_id, version)
);
CREATE INDEX document_uploads_expires_idx ON document_uploads (expires_at);
