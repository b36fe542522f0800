-- The status page (issue 18; see the PostgreSQL twin of this file): a person's orders, a group's
-- orders and the orders of one stage, newest first, each an ordered index scan that stops after one page; the open and failed orders
-- per group for the queue page (read from the index alone); the history by time for what each
-- agent finished in the last day.
CREATE INDEX IF NOT EXISTS adi_imports_user_id ON imports (user_name, id);
CREATE INDEX IF NOT EXISTS adi_imports_group_id ON imports (group_name, id);
CREATE INDEX IF NOT EXISTS adi_imports_stage_id ON imports (stage, id);
CREATE INDEX IF NOT EXISTS adi_imports_stage_group ON imports (stage, group_name, uuid, id);
CREATE INDEX IF NOT EXISTS adi_history_at ON adi_history (at);
