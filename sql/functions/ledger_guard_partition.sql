-- Puts the TRUNCATE guard on one ledger partition. Row triggers of a
-- partitioned table are cloned onto its partitions, but statement triggers
-- are not, and TRUNCATE of a partition fires only that partition's own: every
-- month and batch partition needs the guard itself. Called when a month
-- partition is created and when a batch partition is attached at commit.
CREATE OR REPLACE FUNCTION gl.ledger_guard_partition(p_table regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('CREATE OR REPLACE TRIGGER ledger_refuse_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION gl.ledger_refuse_change()', p_table);
END
$$;
