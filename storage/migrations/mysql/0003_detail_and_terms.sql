-- Schema 3 (MySQL / MariaDB): two more generic index columns and a case-folded copy of the title, `alias` (another name the
-- resource defines) and `detail` (a longer text, for filters), and `kfp_terms`: key/value terms per object (a map the resource
-- defines, for equality filters in SQL), kept like kfp_labels. Existing rows are re-indexed by the
-- server at start (`kfp_meta.reindex` = 1 asks for it), since filling these needs the resource's
-- indexer. (A TEXT column takes no DEFAULT on MySQL; existing rows get the implicit '' .)

ALTER TABLE kfp_objects ADD COLUMN alias VARCHAR(253) NOT NULL DEFAULT '', ADD COLUMN detail TEXT NOT NULL,
    ADD COLUMN title_folded TEXT NOT NULL;
CREATE TABLE kfp_terms (
        resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL, name VARCHAR(253) NOT NULL,
        term_key VARCHAR(317) NOT NULL, term_value VARCHAR(255) NOT NULL,
        PRIMARY KEY (resource, namespace, name, term_key),
        KEY kfp_terms_kv (resource, term_key, term_value)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- Sorting on the title and the alias (a prefix of the TEXT title, as MySQL indexes TEXT).
ALTER TABLE kfp_objects ADD INDEX kfp_objects_title (resource, namespace, title(191)),
    ADD INDEX kfp_objects_title_folded (resource, namespace, title_folded(191)),
    ADD INDEX kfp_objects_alias (resource, namespace, alias);
INSERT INTO kfp_meta (name, value) VALUES ('reindex', 1);
UPDATE kfp_meta SET value = 3 WHERE name = 'schema';
