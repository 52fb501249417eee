-- What a shared vector index holds (issue 16): the record of the content files ingested into a
-- Qdrant server's collection (their hashes, and the embedders that made the vectors) is kept
-- in the database every node shares, not in one node's data dir. A node that starts with an
-- empty data dir then sees the index is up to date instead of rebuilding the collection that
-- the other nodes serve from.
CREATE TABLE IF NOT EXISTS index_manifests (
    collection TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
