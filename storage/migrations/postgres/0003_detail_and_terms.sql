-- Schema 3: two more generic index columns and a case-folded copy of the title, `alias` (another name the resource defines) and
-- `detail` (a longer text, for filters), and `kfp_terms`: key/value terms per object (a map the resource defines, for equality
-- filters in SQL), kept like kfp_labels. Existing rows are re-indexed by the server at start
-- (`kfp_meta.reindex` = 1 asks for it), since filling these needs the resource's indexer.

ALTER TABLE kfp_objects ADD COLUMN alias TEXT NOT NULL DEFAULT '';
ALTER TABLE kfp_objects ADD COLUMN detail TEXT NOT NULL DEFAULT '';
ALTER TABLE kfp_objects ADD COLUMN title_folded TEXT NOT NULL DEFAULT '';
CREATE TABLE kfp_terms (
        resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
        term_key TEXT NOT NULL, term_value TEXT NOT NULL,
        PRIMARY KEY (resource, namespace, name, term_key));
CREATE INDEX kfp_terms_kv ON kfp_terms (resource, term_key, term_value);
-- Sorting on the title walks this index; case-insensitive substring filters on the title scan
-- the covering index of its case-folded copy (no per-row LOWER()).
CREATE INDEX kfp_objects_title ON kfp_objects (resource, namespace, title);
CREATE INDEX kfp_objects_title_folded ON kfp_objects (resource, namespace, title_folded);
CREATE INDEX kfp_objects_alias ON kfp_objects (resource, namespace, alias);
INSERT INTO kfp_meta (name, value) VALUES ('reindex', 1);
UPDATE kfp_meta SET value = 3 WHERE name = 'schema';
