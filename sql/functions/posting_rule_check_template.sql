-- Every journal-entry template must have exactly one balancing line (ratio IS
-- NULL) and at least one ratio line. Checked at commit, so a template can be
-- rewritten line by line inside one transaction.
CREATE OR REPLACE FUNCTION gl.posting_rule_check_template()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_source_type text    := coalesce(NEW.source_type, OLD.source_type);
    v_txn_type    text    := coalesce(NEW.txn_type, OLD.txn_type);
    v_je_seq      integer := coalesce(NEW.je_seq, OLD.je_seq);
    v_balancing   integer;
    v_ratio_lines integer;
BEGIN
    SELECT (count(*) FILTER (WHERE pr.ratio IS NULL))::integer,
           (count(*) FILTER (WHERE pr.ratio IS NOT NULL))::integer
      INTO v_balancing, v_ratio_lines
      FROM gl.posting_rule AS pr
     WHERE pr.source_type = v_source_type
       AND pr.txn_type = v_txn_type
       AND pr.je_seq = v_je_seq;

    -- A template whose lines were all removed is a template being retired.
    IF v_balancing + v_ratio_lines > 0 AND (v_balancing <> 1 OR v_ratio_lines < 1) THEN
        RAISE EXCEPTION 'posting rules of template %/%/% have % balancing line(s) and % ratio line(s)',
                        v_source_type, v_txn_type, v_je_seq, v_balancing, v_ratio_lines
            USING ERRCODE = 'check_violation',
                  HINT = 'Each template needs exactly one line with ratio NULL (the balancing line) and at least one line with a ratio.';
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS posting_rule_check_template ON gl.posting_rule;
CREATE CONSTRAINT TRIGGER posting_rule_check_template
    AFTER INSERT OR UPDATE OR DELETE ON gl.posting_rule
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION gl.posting_rule_check_template();
