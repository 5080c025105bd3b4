-- Schema 4: the label index also holds each object's key, in key order, so that a list with a
-- label equality walks the matching labels in (namespace, name) order and reads only the objects
-- that match, instead of probing the labels of every object it walks. (760 characters of
-- utf8mb4: 3,040 bytes, within InnoDB's 3,072-byte key limit.)

ALTER TABLE kfp_labels DROP INDEX kfp_labels_kv,
    ADD INDEX kfp_labels_kv_key (resource, label_key, label_value, namespace, name);
UPDATE kfp_meta SET value = 4 WHERE name = 'schema';
