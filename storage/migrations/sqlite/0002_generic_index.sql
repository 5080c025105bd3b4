-- Schema 2 (SQLite): the indexed columns are generic, their meaning defined per resource by the
-- server's indexer: display_name -> title, pipeline_name -> parent_name, pipeline_uid ->
-- parent_uid. Values are kept. parent_name gets an index (field selectors on it run in SQL).

ALTER TABLE kfp_objects RENAME COLUMN display_name TO title;
ALTER TABLE kfp_objects RENAME COLUMN pipeline_name TO parent_name;
ALTER TABLE kfp_objects RENAME COLUMN pipeline_uid TO parent_uid;
DROP INDEX IF EXISTS kfp_objects_pipeline;
CREATE INDEX kfp_objects_parent_uid ON kfp_objects (resource, parent_uid);
CREATE INDEX kfp_objects_parent_name ON kfp_objects (resource, namespace, parent_name);
UPDATE kfp_meta SET value = 2 WHERE name = 'schema';
