-- Schema 2 (MySQL / MariaDB): the indexed columns are generic, their meaning defined per resource
-- by the server's indexer: display_name -> title, pipeline_name -> parent_name, pipeline_uid ->
-- parent_uid. Values are kept. parent_name gets an index (field selectors on it run in SQL).
-- One ALTER statement, so InnoDB applies the renames and index changes together (MySQL DDL does
-- not take part in the migration's transaction).

ALTER TABLE kfp_objects
    RENAME COLUMN display_name TO title,
    RENAME COLUMN pipeline_name TO parent_name,
    RENAME COLUMN pipeline_uid TO parent_uid,
    DROP INDEX kfp_objects_pipeline,
    ADD INDEX kfp_objects_parent_uid (resource, parent_uid),
    ADD INDEX kfp_objects_parent_name (resource, namespace, parent_name);
UPDATE kfp_meta SET value = 2 WHERE name = 'schema';
