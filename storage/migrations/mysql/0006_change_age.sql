-- Schema 6: the change feed indexed by age. Every interval the compactor asks for the newest
-- revision older than its age limit. Without this index that walked the feed back from its
-- newest row to the first one old enough (all of it, in a server's first minutes), and a row's
-- `created_ms` sits after its object: a feed holding large objects (380 KiB pipeline specs) was
-- read whole, every minute. With 1,400 of them: 0.5 GB read, 0.8 s list latency beside it and
-- 533 MiB of server memory. Now it reads one index entry.

CREATE INDEX kfp_changes_age ON kfp_changes (created_ms, revision);
UPDATE kfp_meta SET value = 6 WHERE name = 'schema';
