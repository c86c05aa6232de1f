-- Tasks, milestones and expenses: workflow constraints and the indexes of
-- their filters and of the scheduler. Runs with search_path set to the
-- tenant's schema (transaction-local).

ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('todo', 'in_progress', 'blocked', 'done'));
ALTER TABLE tasks ADD CONSTRAINT tasks_title_check CHECK (length(title) BETWEEN 1 AND 1000);
CREATE INDEX tasks_due_idx ON tasks (project_id, due_date) WHERE deleted_at IS NULL AND status <> 'done';

-- The scheduler looks for milestones due soon.
CREATE INDEX milestones_due_idx ON milestones (due_date) WHERE deleted_at IS NULL AND NOT done;

ALTER TABLE expenses ADD CONSTRAINT expenses_currency_check CHECK (currency ~ '^[A-Z]{3}$');
-- Expense lists page by id within a project.
CREATE INDEX expenses_project_id_idx ON expenses (project_id, id) WHERE deleted_at IS NULL;
