-- Schema 4: the label index also holds each object's key, in key order, so that a list with a
-- label equality walks the matching labels in (namespace, name) order and reads only the objects
-- that match, instead of probing the labels of every object it walks.

DROP INDEX IF EXISTS kfp_labels_kv;
CREATE INDEX kfp_labels_kv_key ON kfp_labels (resource, label_key, label_value, namespace, name);
UPDATE kfp_meta SET value = 4 WHERE name = 'schema';
