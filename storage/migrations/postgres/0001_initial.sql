-- Schema 1 (PostgreSQL): the layout this server first shipped with. Every statement is
-- idempotent (IF NOT EXISTS / ignore duplicates), so a database made before versioned migrations
-- existed is adopted as version 1 unchanged.
--
-- kfp_meta: named counters. `revision` is the global revision, incremented inside every write
--   transaction (its row lock orders commits); `compacted` is the oldest replayable revision;
--   `schema` is the layout's version (an older server refuses a newer layout).
-- kfp_objects: current state, one row per object, with indexed columns.
-- kfp_labels: one row per label, for label selectors in SQL.
-- kfp_changes: the change feed, one row per write with the object after and before.

CREATE TABLE IF NOT EXISTS kfp_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);

INSERT INTO kfp_meta (name, value) VALUES ('revision', 0), ('compacted', 0), ('schema', 1) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS kfp_objects (
        resource TEXT COLLATE "C" NOT NULL, namespace TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL,
        uid TEXT NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL,
        display_name TEXT NOT NULL, pipeline_name TEXT NOT NULL, pipeline_uid TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name));

CREATE UNIQUE INDEX IF NOT EXISTS kfp_objects_uid ON kfp_objects (resource, uid);

CREATE INDEX IF NOT EXISTS kfp_objects_created ON kfp_objects (resource, namespace, created_at, uid);

CREATE INDEX IF NOT EXISTS kfp_objects_pipeline ON kfp_objects (resource, pipeline_uid);

CREATE TABLE IF NOT EXISTS kfp_labels (
        resource TEXT COLLATE "C" NOT NULL, namespace TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL,
        label_key TEXT NOT NULL, label_value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name, label_key));

CREATE INDEX IF NOT EXISTS kfp_labels_kv ON kfp_labels (resource, label_key, label_value);

CREATE TABLE IF NOT EXISTS kfp_changes (
        revision BIGINT PRIMARY KEY, resource TEXT COLLATE "C" NOT NULL, namespace TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL, event TEXT NOT NULL, value TEXT NOT NULL, prev_value TEXT,
        created_ms BIGINT NOT NULL);

CREATE INDEX IF NOT EXISTS kfp_changes_key ON kfp_changes (resource, namespace, name, revision);
