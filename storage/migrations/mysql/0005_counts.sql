-- Schema 5: the number of objects per (resource, namespace), kept by every create and delete in
-- its write transaction, so that the first page of a list reports remainingItemCount from one
-- row instead of counting every object (a cost that grew with the store: 22% of a page of 500
-- at 10k objects, most of it at 100k).

CREATE TABLE kfp_counts (
        resource VARCHAR(64) NOT NULL, namespace VARCHAR(63) NOT NULL, n BIGINT NOT NULL,
        PRIMARY KEY (resource, namespace)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO kfp_counts (resource, namespace, n)
        SELECT resource, namespace, COUNT(*) FROM kfp_objects GROUP BY resource, namespace;
UPDATE kfp_meta SET value = 5 WHERE name = 'schema';
