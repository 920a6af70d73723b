"""A comparable summary of what the committed batches of a period put in the
ledger, so that two databases (a crashed-and-resumed run and a clean run of the
same generated data) can be compared with one ``==``.

Everything is computed in SQL and reduced to counts, control totals and md5s
over ordered canonical text, so a difference shows up as a named key.

``with_ids=False`` leaves out ``je_id``, ``batch_id`` and the digests (the
canonical text they are taken over contains both ids): use it when the two
databases legitimately allocated different ids, e.g. after a cancelled batch
consumed a batch id and a je_id block. With ``with_ids=True`` the two runs must
be identical byte for byte, digests included (two clones of the same template
hand out the same ids).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

_RUN_SQL = """
SELECT count(*) AS batches,
       sum(r.source_rows) AS source_rows, sum(r.source_amount) AS source_amount,
       sum(r.claimed_rows) AS posted_rows, sum(r.dead_letter_rows) AS dead_letter_rows,
       sum(r.je_count) AS je_count, sum(r.line_count) AS line_count,
       sum(r.range_count) AS range_count,
       min(r.je_number_base) AS je_number_base,
       string_agg(r.batch_id::text, ',' ORDER BY r.batch_id) AS batch_ids,
       string_agg(r.je_id_base::text, ',' ORDER BY r.batch_id) AS je_id_bases,
       string_agg(encode(r.digest, 'hex'), ',' ORDER BY r.batch_id) AS digests
FROM batch.run AS r
WHERE r.period = %(period)s AND r.status = 'COMMITTED'
"""

_RANGES_SQL = """
SELECT rg.range_no, rg.source_type, rg.lo_source_id, rg.hi_source_id, rg.row_count,
       rg.je_offset, rg.je_count, rg.line_count, rg.status,
       encode(rg.digest, 'hex') AS digest,
       (SELECT md5(string_agg(concat_ws('|', t.currency, t.source_rows, t.source_amount,
                                        t.debit, t.credit, t.functional_debit,
                                        t.functional_credit), E'\\n' ORDER BY t.currency))
          FROM batch.range_total AS t WHERE t.range_id = rg.range_id) AS totals_md5
FROM batch.range AS rg
JOIN batch.run AS r ON r.batch_id = rg.batch_id
WHERE r.period = %(period)s AND r.status = 'COMMITTED'
ORDER BY r.batch_id, rg.range_no
"""

_HEADERS_SQL = """
SELECT count(*) AS headers,
       count(DISTINCT (h.source_type, h.source_id)) AS posted_sources,
       min(h.je_number) AS first_je_number, max(h.je_number) AS last_je_number,
       md5(string_agg(concat_ws('|', h.je_number, h.je_date, h.source_type, h.source_id,
                                h.je_seq, h.currency, h.fx_rate, h.description,
                                h.source_amount),
                      E'\\n' ORDER BY h.je_number)) AS headers_md5,
       md5(string_agg(concat_ws('|', h.je_number, h.je_id, h.batch_id, h.reverses_je_id),
                      E'\\n' ORDER BY h.je_number)) AS header_ids_md5
FROM gl.journal_entry_header AS h
WHERE h.period = %(period)s
"""

_LINES_SQL = """
SELECT count(*) AS lines,
       sum(l.debit) AS debit, sum(l.credit) AS credit,
       sum(l.functional_debit) AS functional_debit,
       sum(l.functional_credit) AS functional_credit,
       md5(string_agg(concat_ws('|', h.je_number, l.je_date, l.line_no, l.account_code,
                                l.debit, l.credit, l.functional_debit, l.functional_credit),
                      E'\\n' ORDER BY h.je_number, l.line_no)) AS lines_md5,
       md5(string_agg(concat_ws('|', h.je_number, l.line_no, l.je_id, l.batch_id),
                      E'\\n' ORDER BY h.je_number, l.line_no)) AS line_ids_md5
FROM gl.journal_entry_line AS l
JOIN gl.journal_entry_header AS h
  ON h.je_id = l.je_id AND h.je_date = l.je_date AND h.batch_id = l.batch_id
WHERE h.period = %(period)s
"""

_DEAD_LETTERS_SQL = """
SELECT count(*) AS dead_letters,
       md5(string_agg(concat_ws('|', d.source_type, d.source_id, d.reason_code, d.detail,
                                d.amount, d.currency, d.status),
                      E'\\n' ORDER BY d.source_type, d.source_id)) AS dead_letters_md5
FROM batch.dead_letter AS d
JOIN batch.run AS r ON r.batch_id = d.batch_id
WHERE r.period = %(period)s AND r.status = 'COMMITTED'
"""

# What the period's committed period-end batches computed besides their
# entries: the UPR of each policy, the items the entries were made from and
# the FX revaluation's detail (none for a period without one).
_PERIOD_END_SQL = """
WITH pe AS (
    SELECT r.batch_id FROM batch.run AS r
    WHERE r.period = %(period)s AND r.status = 'COMMITTED' AND r.kind = 'PERIOD_END'
)
SELECT (SELECT md5(string_agg(concat_ws('|', d.policy_id, d.line_of_business, d.currency,
                                        d.written_to_date, d.written_to_date_functional,
                                        d.term_days, d.unexpired_days, d.upr,
                                        d.upr_functional),
                              E'\\n' ORDER BY d.batch_id, d.policy_id, d.currency))
          FROM gl.upr_detail AS d WHERE d.batch_id IN (SELECT batch_id FROM pe)) AS upr_md5,
       (SELECT md5(string_agg(concat_ws('|', i.item_kind, i.line_of_business, i.currency,
                                        i.debit_account, i.credit_account, i.amount,
                                        i.functional_amount, i.fx_rate, i.description,
                                        i.basis),
                              E'\\n' ORDER BY i.item_id))
          FROM batch.period_end_item AS i WHERE i.batch_id IN (SELECT batch_id FROM pe))
           AS items_md5,
       (SELECT md5(string_agg(concat_ws('|', f.account_code, f.currency, f.balance,
                                        f.functional_carried, f.closing_rate,
                                        f.functional_revalued, f.gain),
                              E'\\n' ORDER BY f.batch_id, f.account_code, f.currency))
          FROM batch.fx_revaluation_detail AS f WHERE f.batch_id IN (SELECT batch_id FROM pe))
           AS fx_revaluation_md5
"""

_PERIOD_SQL = """
SELECT ap.status, ap.je_numbers_used FROM gl.accounting_period AS ap WHERE ap.period = %(period)s
"""

_ID_KEYS = ("batch_ids", "je_id_bases", "digests", "header_ids_md5", "line_ids_md5")


def ledger_fingerprint(conn: psycopg.Connection, period: str, *,
                       with_ids: bool = True) -> dict[str, Any]:
    """What the period's committed batches posted, as one comparable dict."""
    params = {"period": period}
    with conn.cursor(row_factory=dict_row) as cur:
        result: dict[str, Any] = {}
        for query in (_RUN_SQL, _HEADERS_SQL, _LINES_SQL, _DEAD_LETTERS_SQL, _PERIOD_END_SQL):
            row = cur.execute(query, params).fetchone()
            assert row is not None
            result.update(row)
        result["period"] = cur.execute(_PERIOD_SQL, params).fetchone()
        ranges = cur.execute(_RANGES_SQL, params).fetchall()
    if not with_ids:
        for key in _ID_KEYS:
            result.pop(key)
        for rng in ranges:
            rng.pop("digest")
    result["ranges"] = ranges
    return result
