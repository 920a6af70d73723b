-- Links every new audit row into the chain. Whatever the caller supplied for
-- seq, at, actor, prev_hash and hash is overwritten, so no one can forge a
-- link. The head row's lock serializes concurrent appenders until commit: one
-- chain, no fork, and a rolled-back append leaves no gap.
CREATE OR REPLACE FUNCTION audit.log_link()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head_seq  bigint;
    v_head_hash bytea;
BEGIN
    SELECT h.seq, h.hash INTO STRICT v_head_seq, v_head_hash
      FROM audit.chain_head AS h FOR UPDATE;
    NEW.seq       := v_head_seq + 1;
    NEW.at        := clock_timestamp();
    NEW.actor     := session_user::text;
    NEW.prev_hash := v_head_hash;
    NEW.hash      := sha256(v_head_hash || convert_to(
                         audit.canonical_log_text(NEW.seq, NEW.at, NEW.event, NEW.batch_id,
                                                  NEW.actor, NEW.payload), 'UTF8'));
    UPDATE audit.chain_head SET seq = NEW.seq, hash = NEW.hash;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER log_link
    BEFORE INSERT ON audit.log
    FOR EACH ROW EXECUTE FUNCTION audit.log_link();
