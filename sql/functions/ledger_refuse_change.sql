-- Posted rows are never updated or deleted: corrections are reversing entries.
-- Row triggers on the partitioned parents are cloned onto every partition,
-- including each batch's partition when it is attached at commit.
CREATE OR REPLACE FUNCTION gl.ledger_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% on %.% refused: posted ledger rows are never changed',
                    TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Post a reversing journal entry instead.';
END
$$;

CREATE OR REPLACE TRIGGER journal_entry_header_refuse_change
    BEFORE UPDATE OR DELETE ON gl.journal_entry_header
    FOR EACH ROW EXECUTE FUNCTION gl.ledger_refuse_change();
CREATE OR REPLACE TRIGGER journal_entry_line_refuse_change
    BEFORE UPDATE OR DELETE ON gl.journal_entry_line
    FOR EACH ROW EXECUTE FUNCTION gl.ledger_refuse_change();
CREATE OR REPLACE TRIGGER journal_entry_header_refuse_truncate
    BEFORE TRUNCATE ON gl.journal_entry_header
    FOR EACH STATEMENT EXECUTE FUNCTION gl.ledger_refuse_change();
CREATE OR REPLACE TRIGGER journal_entry_line_refuse_truncate
    BEFORE TRUNCATE ON gl.journal_entry_line
    FOR EACH STATEMENT EXECUTE FUNCTION gl.ledger_refuse_change();
