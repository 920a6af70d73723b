-- The inclusion proof of one journal entry (seal version 2): everything an
-- auditor needs to check, with no database, that the entry as the ledger
-- holds it is the entry sealed into the audit chain (monthend check-proof
-- does; docs/audit.md gives the algorithm):
--   je_number, batch_id, seal_version;
--   leaf         the entry's canonical text (its header's text, then its
--                lines' texts in line_no order, joined by a newline);
--   leaf_index   its place among its range's entries (0-based, je_id order);
--   range_size   the number of entries in its range;
--   range_path   the RFC 6962 audit path from the leaf to the range root
--                (hex, leaf level first);
--   range_index, range_count  the range's place among the batch's ranges
--                (0-based, range order) and their number;
--   batch_path   the audit path from the range root, as a leaf, to the batch
--                root (hex, lowest level first);
--   range_root, batch_root    as sealed (hex);
--   audit_seq, audit_hash     the BATCH_COMMITTED row of the audit chain that
--                sealed the batch root.
-- The range's leaves are recomputed from the ledger (one range, through the
-- je_id indexes: ~30,000 entries by default, a fraction of a second) and must
-- hash to the sealed range root, with every entry's lines dated as its
-- header, or there is no proof to give: the error says to verify the batch. The batch's path comes from the sealed range
-- roots. Only a committed batch sealed by version 2 has proofs; version 1
-- sealed each range as one flat hash.
CREATE OR REPLACE FUNCTION audit.prove_entry(p_je_number text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_period      text;
    v_number      bigint;
    v_run         batch.run%ROWTYPE;
    v_je_id       bigint;
    v_seal_seq    bigint;
    v_seal_hash   bytea;
    v_seal        jsonb;
    v_range_no    integer;
    v_lo_je_id    bigint;
    v_hi_je_id    bigint;
    v_roots       bytea[];
    v_range_index integer;
    v_range_root  bytea;
    v_leaves      bytea[];
    v_leaf        text;
    v_leaf_index  integer;
    v_batch_root  bytea;
    v_misdated    bigint;
    v_version     smallint;
BEGIN
    IF p_je_number IS NULL OR p_je_number !~ '^[0-9]{4}-(0[1-9]|1[0-2])-[0-9]{10}$' THEN
        RAISE EXCEPTION 'je_number % is not one: a je_number is the period and a ten-digit number, '
                        'as in 2025-01-0000000042', coalesce(quote_literal(p_je_number), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_period := left(p_je_number, 7);
    v_number := right(p_je_number, 10)::bigint;
    IF EXISTS (SELECT FROM gl.accounting_period AS ap
               WHERE ap.period = v_period AND ap.status = 'ARCHIVED') THEN
        RAISE EXCEPTION 'period % is archived: its entries are not in the database', v_period
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Restore it to prove one (`monthend restore --from %s`), or '
                                'verify its archive (`monthend verify --archive %s`).',
                                (SELECT ap.status_detail ->> 'location'
                                   FROM gl.accounting_period AS ap WHERE ap.period = v_period),
                                (SELECT ap.status_detail ->> 'location'
                                   FROM gl.accounting_period AS ap WHERE ap.period = v_period));
    END IF;

    SELECT * INTO v_run
      FROM batch.run AS r
     WHERE r.period = v_period AND r.status = 'COMMITTED'
       AND v_number > r.je_number_base AND v_number <= r.je_number_base + r.je_count;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no committed batch of period % holds je_number %', v_period, p_je_number
            USING ERRCODE = 'no_data_found';
    END IF;
    v_je_id := v_run.je_id_base + (v_number - v_run.je_number_base - 1);

    SELECT l.seq, l.hash, l.payload INTO v_seal_seq, v_seal_hash, v_seal
      FROM audit.log AS l
     WHERE l.event = 'BATCH_COMMITTED' AND l.batch_id = v_run.batch_id
     ORDER BY l.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % has no BATCH_COMMITTED row in the audit chain', v_run.batch_id
            USING ERRCODE = 'data_corrupted',
                  HINT = format('Verify it: monthend verify --batch %s.', v_run.batch_id);
    END IF;
    -- The seal version is the one the chain sealed (seals before version 2
    -- name none).
    v_version := coalesce((v_seal ->> 'seal_version')::smallint, 1);
    IF v_version < 2 THEN
        RAISE EXCEPTION 'batch % was sealed by seal version %, which seals each range as one '
                        'hash and has no proofs of one entry', v_run.batch_id, v_version
            USING ERRCODE = 'feature_not_supported',
                  HINT = format('Verify the whole batch: monthend verify --batch %s.',
                                v_run.batch_id);
    END IF;

    -- The sealed range roots in range order, the batch root over them, and
    -- the range holding the entry.
    SELECT array_agg(decode(x ->> 'digest', 'hex') ORDER BY (x ->> 'range_no')::integer)
      INTO v_roots
      FROM jsonb_array_elements(v_seal -> 'ranges') AS x;
    v_batch_root := decode(v_seal ->> 'digest', 'hex');
    IF audit.batch_root(v_version, v_roots) IS DISTINCT FROM v_batch_root THEN
        RAISE EXCEPTION 'the sealed range roots of batch % do not hash to its sealed batch root',
                        v_run.batch_id
            USING ERRCODE = 'data_corrupted',
                  HINT = format('Verify it: monthend verify --batch %s.', v_run.batch_id);
    END IF;
    SELECT rg.range_no, v_run.je_id_base + rg.je_offset,
           v_run.je_id_base + rg.je_offset + rg.je_count - 1
      INTO v_range_no, v_lo_je_id, v_hi_je_id
      FROM batch.range AS rg
     WHERE rg.batch_id = v_run.batch_id
       AND v_je_id BETWEEN v_run.je_id_base + rg.je_offset
                       AND v_run.je_id_base + rg.je_offset + rg.je_count - 1;
    SELECT x.ord - 1, decode(x.range ->> 'digest', 'hex') INTO v_range_index, v_range_root
      FROM jsonb_array_elements(v_seal -> 'ranges') WITH ORDINALITY AS x(range, ord)
     WHERE (x.range ->> 'range_no')::integer = v_range_no;
    IF v_range_root IS NULL THEN
        RAISE EXCEPTION 'je_number % (je_id %) lies in no sealed range of batch %', p_je_number,
                        v_je_id, v_run.batch_id
            USING ERRCODE = 'data_corrupted',
                  HINT = format('Verify it: monthend verify --batch %s.', v_run.batch_id);
    END IF;

    -- The range's leaves as the ledger holds them now; they must be the
    -- sealed ones.
    SELECT array_agg(audit.entry_leaf_hash(e.entry_text) ORDER BY e.je_id),
           min(e.entry_text) FILTER (WHERE e.je_id = v_je_id),
           count(*) FILTER (WHERE e.je_id < v_je_id),
           count(*) FILTER (WHERE e.dates_differ)
      INTO v_leaves, v_leaf, v_leaf_index, v_misdated
      FROM audit.ledger_entry_text(v_run.batch_id, v_version, v_lo_je_id,
                                   v_hi_je_id) AS e;
    -- Version 2 seals an entry's date once, in its header: a line dated
    -- otherwise is damage the root does not show, so no proof either.
    IF v_misdated > 0 THEN
        RAISE EXCEPTION 'range % of batch % holds % entries whose lines are dated otherwise '
                        'than their header, so its entries cannot be proved', v_range_no,
                        v_run.batch_id, v_misdated
            USING ERRCODE = 'data_corrupted',
                  HINT = format('Locate the damage: monthend verify --batch %s.',
                                v_run.batch_id);
    ELSIF audit.merkle_root(v_leaves) IS DISTINCT FROM v_range_root OR v_leaf IS NULL THEN
        RAISE EXCEPTION 'range % of batch % no longer hashes to its sealed root: the ledger '
                        'changed since the commit, so its entries cannot be proved',
                        v_range_no, v_run.batch_id
            USING ERRCODE = 'data_corrupted',
                  HINT = format('Locate the damage: monthend verify --batch %s.',
                                v_run.batch_id);
    END IF;

    RETURN jsonb_build_object(
        'je_number', p_je_number,
        'batch_id', v_run.batch_id,
        'seal_version', v_version,
        'leaf', v_leaf,
        'leaf_index', v_leaf_index,
        'range_size', cardinality(v_leaves),
        'range_path', (SELECT coalesce(jsonb_agg(encode(p.node, 'hex') ORDER BY p.ord), '[]')
                         FROM unnest(audit.merkle_path(v_leaves, v_leaf_index))
                              WITH ORDINALITY AS p(node, ord)),
        'range_index', v_range_index,
        'range_count', cardinality(v_roots),
        'batch_path', (SELECT coalesce(jsonb_agg(encode(p.node, 'hex') ORDER BY p.ord), '[]')
                         FROM unnest(audit.merkle_path(
                                  ARRAY(SELECT audit.merkle_leaf_hash(r.root)
                                        FROM unnest(v_roots) WITH ORDINALITY AS r(root, ord)
                                        ORDER BY r.ord),
                                  v_range_index)) WITH ORDINALITY AS p(node, ord)),
        'range_root', encode(v_range_root, 'hex'),
        'batch_root', encode(v_batch_root, 'hex'),
        'audit_seq', v_seal_seq,
        'audit_hash', encode(v_seal_hash, 'hex'));
END
$$;

GRANT EXECUTE ON FUNCTION audit.prove_entry(text) TO monthend_runner, monthend_auditor;
