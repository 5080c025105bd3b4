//! The schema, one readable constant per dialect, applied at start with `IF NOT EXISTS`
//! statements (idempotent, so several processes may start at once).
//!
//! - `kfp_meta`: named counters: `revision` (the global revision, incremented inside every write
//!   transaction — the row lock orders commits), `compacted` (oldest revision still replayable),
//!   `schema` (this layout's version).
//! - `kfp_objects`: current state, one row per object, with indexed columns for list, filter,
//!   sort and page in SQL. `name`/`namespace` sort bytewise (`COLLATE "C"`, `utf8mb4_bin`) so
//!   pages follow the same order as continue tokens.
//! - `kfp_labels`: one row per label, for label selectors in SQL.
//! - `kfp_changes`: the change feed: one row per write with the object after and before.

pub(crate) const SCHEMA_VERSION: i64 = 1;

pub(crate) const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kfp_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO kfp_meta (name, value) VALUES ('revision', 0), ('compacted', 0), ('schema', 1)",
    "CREATE TABLE IF NOT EXISTS kfp_objects (
        resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        uid TEXT NOT NULL, revision INTEGER NOT NULL, created_at INTEGER NOT NULL,
        display_name TEXT NOT NULL, pipeline_name TEXT NOT NULL, pipeline_uid TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name))",
    "CREATE UNIQUE INDEX IF NOT EXISTS kfp_objects_uid ON kfp_objects (resource, uid)",
    "CREATE INDEX IF NOT EXISTS kfp_objects_created ON kfp_objects (resource, namespace, created_at, uid)",
    "CREATE INDEX IF NOT EXISTS kfp_objects_pipeline ON kfp_objects (resource, pipeline_uid)",
    "CREATE TABLE IF NOT EXISTS kfp_labels (
        resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        label_key TEXT NOT NULL, label_value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name, label_key))",
    "CREATE INDEX IF NOT EXISTS kfp_labels_kv ON kfp_labels (resource, label_key, label_value)",
    "CREATE TABLE IF NOT EXISTS kfp_changes (
        revision INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, event TEXT NOT NULL, value TEXT NOT NULL, prev_value TEXT,
        created_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS kfp_changes_key ON kfp_changes (resource, namespace, name, revision)",
];

pub(crate) const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kfp_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO kfp_meta (name, value) VALUES ('revision', 0), ('compacted', 0), ('schema', 1) ON CONFLICT DO NOTHING",
    r#"CREATE TABLE IF NOT EXISTS kfp_objects (
        resource TEXT COLLATE "C" NOT NULL, namespace TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL,
        uid TEXT NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL,
        display_name TEXT NOT NULL, pipeline_name TEXT NOT NULL, pipeline_uid TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name))"#,
    "CREATE UNIQUE INDEX IF NOT EXISTS kfp_objects_uid ON kfp_objects (resource, uid)",
    "CREATE INDEX IF NOT EXISTS kfp_objects_created ON kfp_objects (resource, namespace, created_at, uid)",
    "CREATE INDEX IF NOT EXISTS kfp_objects_pipeline ON kfp_objects (resource, pipeline_uid)",
    r#"CREATE TABLE IF NOT EXISTS kfp_labels (
        resource TEXT COLLATE "C" NOT NULL, namespace TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL,
        label_key TEXT NOT NULL, label_value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name, label_key))"#,
    "CREATE INDEX IF NOT EXISTS kfp_labels_kv ON kfp_labels (resource, label_key, label_value)",
    r#"CREATE TABLE IF NOT EXISTS kfp_changes (
        revision BIGINT PRIMARY KEY, resource TEXT COLLATE "C" NOT NULL, namespace TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL, event TEXT NOT NULL, value TEXT NOT NULL, prev_value TEXT,
        created_ms BIGINT NOT NULL)"#,
    "CREATE INDEX IF NOT EXISTS kfp_changes_key ON kfp_changes (resource, namespace, name, revision)",
];

pub(crate) const MYSQL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kfp_meta (name VARCHAR(64) NOT NULL PRIMARY KEY, value BIGINT NOT NULL) ENGINE=InnoDB",
    "INSERT IGNORE INTO kfp_meta (name, value) VALUES ('revision', 0), ('compacted', 0), ('schema', 1)",
    "CREATE TABLE IF NOT EXISTS kfp_objects (
        resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL, name VARCHAR(253) NOT NULL,
        uid VARCHAR(64) NOT NULL, revision BIGINT NOT NULL, created_at BIGINT NOT NULL,
        display_name TEXT NOT NULL, pipeline_name VARCHAR(253) NOT NULL, pipeline_uid VARCHAR(64) NOT NULL,
        value LONGTEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name),
        UNIQUE KEY kfp_objects_uid (resource, uid),
        KEY kfp_objects_created (resource, namespace, created_at, uid),
        KEY kfp_objects_pipeline (resource, pipeline_uid)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS kfp_labels (
        resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL, name VARCHAR(253) NOT NULL,
        label_key VARCHAR(317) NOT NULL, label_value VARCHAR(63) NOT NULL,
        PRIMARY KEY (resource, namespace, name, label_key),
        KEY kfp_labels_kv (resource, label_key, label_value)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS kfp_changes (
        revision BIGINT NOT NULL PRIMARY KEY, resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL,
        name VARCHAR(253) NOT NULL, event VARCHAR(16) NOT NULL, value LONGTEXT NOT NULL, prev_value LONGTEXT,
        created_ms BIGINT NOT NULL,
        KEY kfp_changes_key (resource, namespace, name, revision)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
];
