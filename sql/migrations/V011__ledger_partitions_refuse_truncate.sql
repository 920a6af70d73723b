-- Ledger partitions created before every partition carried its own TRUNCATE
-- guard get it now (statement triggers are not cloned onto partitions; see
-- sql/functions/ledger_guard_partition.sql). A new database has no partitions
-- yet, so the loop body never runs before the guard function exists.
DO $$
DECLARE
    v_partition regclass;
BEGIN
    FOR v_partition IN
        SELECT t.relid FROM pg_partition_tree('gl.journal_entry_header') AS t WHERE t.level > 0
        UNION ALL
        SELECT t.relid FROM pg_partition_tree('gl.journal_entry_line') AS t WHERE t.level > 0
    LOOP
        PERFORM gl.ledger_guard_partition(v_partition);
    END LOOP;
END
$$;
