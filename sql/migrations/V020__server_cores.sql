-- The database server's cores, as the DBA knows them (SQL cannot read them).
-- Range work is CPU-bound in the database: a run opens no more range workers
-- than this, less the monthend workers already running on the server (a
-- `monthend work` joiner on another host counts). NULL: not bounded by cores,
-- only by the server's free connections and --max-connections.
ALTER TABLE gl.setting
    ADD COLUMN server_cores integer,
    ADD CONSTRAINT setting_server_cores_check
        CHECK (server_cores IS NULL OR server_cores BETWEEN 1 AND 4096);

COMMENT ON COLUMN gl.setting.server_cores IS
    'The database server''s cores: the bound on the range workers running at once (NULL: none).';
