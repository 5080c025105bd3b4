-- Schema 1 (MySQL / MariaDB): the layout this server first shipped with. Every statement is
-- idempotent (IF NOT EXISTS / ignore duplicates), so a database made before versioned migrations
-- existed is adopted as version 1 unchanged.
--
-- kfp_meta: named counters. `revision` is the global revision, incremented inside every write
--   transaction (its row lock orders commits); `compacted` is the oldest replayable revision;
--   `schema` is the layout's version (an older server refuses a newer layout).
-- kfp_objects: current state, one row per object, with indexed columns.
-- kfp_labels: one row per label, for label selectors in SQL.
-- kfp_changes: the change feed, one row per write with the object after and before.

CREATE TABLE IF NOT EXISTS kfp_meta (name VARCHAR(64) NOT NULL PRIMARY KEY, value BIGINT NOT NULL) ENGINE=InnoDB;

INSERT IGNORE INTO kfp_meta (name, value) VALUES ('revision', 0), ('compacted', 0), ('schema', 1);

CREATE TABLE IF NOT EXISTS kfp_objects (
        resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL, name VARCHAR(253) NOT NULL,
        uid VARCHAR(64) NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL,
        display_name TEXT NOT NULL, pipeline_name VARCHAR(253) NOT NULL, pipeline_uid VARCHAR(64) NOT NULL,
        value LONGTEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name),
        UNIQUE KEY kfp_objects_uid (resource, uid),
        KEY kfp_objects_created (resource, namespace, created_at, uid),
        KEY kfp_objects_pipeline (resource, pipeline_uid)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS kfp_labels (
        resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL, name VARCHAR(253) NOT NULL,
        label_key VARCHAR(317) NOT NULL, label_value VARCHAR(63) NOT NULL,
        PRIMARY KEY (resource, namespace, name, label_key),
        KEY kfp_labels_kv (resource, label_key, label_value)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS kfp_changes (
        revision BIGINT NOT NULL PRIMARY KEY, resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL,
        name VARCHAR(253) NOT NULL, event VARCHAR(16) NOT NULL, value LONGTEXT NOT NULL, prev_value LONGTEXT,
        created_ms BIGINT NOT NULL,
        KEY kfp_changes_key (resource, namespace, name, revision)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
