"""`monthend generate`: the synthetic source data every other test and the
benchmark stand on. Counts as asked, the same rows for the same seed, every
defect pre-flight must catch present in the mix, and a realistic shape; the
policies of the premium rows, each row inside its policy's term."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from conftest import monthend_cli, preflight_and_allocate
from monthend import db

N = 2000
PERIOD = "2025-01"
CURRENCIES = {"USD", "EUR", "GBP", "CAD", "JPY", "BHD"}
LINES_OF_BUSINESS = {"AUTO", "HOME", "COMMPROP", "GENLIAB", "WORKCOMP", "MARINE"}
PREMIUM_TYPES = {"NEW_BUSINESS", "RENEWAL", "ENDORSEMENT", "CANCELLATION"}
CLAIM_TYPES = {"LOSS_PAYMENT", "EXPENSE_PAYMENT", "RECOVERY"}
DEFECTS = ("amount_null", "amount_zero", "amount_negative", "currency_unknown",
           "txn_type_unknown", "date_outside_period", "too_many_decimals", "lob_unknown",
           "policy_missing")
# The reason pre-flight gives a row spoiled with each defect.
DEFECT_REASONS = {
    "amount_null": "AMOUNT_NULL", "amount_zero": "AMOUNT_ZERO",
    "amount_negative": "AMOUNT_NEGATIVE", "currency_unknown": "CURRENCY_UNKNOWN",
    "txn_type_unknown": "TXN_TYPE_UNKNOWN", "date_outside_period": "DATE_OUTSIDE_PERIOD",
    "too_many_decimals": "AMOUNT_PRECISION", "lob_unknown": "LINE_OF_BUSINESS_UNKNOWN",
    "policy_missing": "POLICY_MISSING"}

# Every source row of the database, each defect judged independently of
# pre-flight's own classification, against the reference data and the period.
SOURCE_SQL = """
WITH src AS (
    SELECT 'PREMIUM' AS source_type, txn_id AS source_id, policy_id, payment_date AS txn_date,
           txn_type, line_of_business, amount, currency
    FROM subledger.premium_transaction
    UNION ALL
    SELECT 'CLAIM', claim_id, policy_id, claim_date, txn_type, line_of_business, amount,
           currency
    FROM subledger.claims_transaction
)
SELECT s.*,
       coalesce(s.amount IS NULL, false) AS amount_null,
       coalesce(s.amount = 0, false) AS amount_zero,
       coalesce(s.amount < 0, false) AS amount_negative,
       c.code IS NULL AS currency_unknown,
       NOT EXISTS (SELECT FROM gl.journal_template AS t
                   WHERE t.source_type = s.source_type AND t.txn_type = s.txn_type)
           AS txn_type_unknown,
       coalesce(s.txn_date NOT BETWEEN p.start_date AND p.end_date, true)
           AS date_outside_period,
       coalesce(s.amount <> round(s.amount, c.minor_units), false) AS too_many_decimals,
       s.line_of_business NOT IN (SELECT code FROM gl.line_of_business) AS lob_unknown,
       s.policy_id IS NULL AS policy_missing
FROM src AS s
CROSS JOIN (SELECT start_date, end_date FROM gl.accounting_period WHERE period = %(period)s) AS p
LEFT JOIN gl.currency AS c ON c.code = s.currency
"""
DEFECT_COUNT = " + ".join(f"{d}::int" for d in DEFECTS)
CLASSIFIED_SQL = f"SELECT *, {DEFECT_COUNT} AS defects FROM ({SOURCE_SQL}) AS classified"


def generate(target: db.Target, period: str = PERIOD, txns: int = N, bad_rows: float = 0.0,
             seed: int | None = None) -> dict[str, Any]:
    args = ["generate", "--period", period, "--txns", str(txns), "--bad-rows", str(bad_rows),
            "--json"]
    if seed is not None:
        args += ["--seed", str(seed)]
    proc = monthend_cli(target, *args, check=True)
    return json.loads(proc.stdout)


def classified(conn: psycopg.Connection, period: str = PERIOD) -> list[dict[str, Any]]:
    return conn.execute(CLASSIFIED_SQL, {"period": period}).fetchall()


def max_ids(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute("SELECT (SELECT coalesce(max(txn_id), 0) FROM subledger.premium_transaction)"
                       " AS p, (SELECT coalesce(max(claim_id), 0) "
                       "FROM subledger.claims_transaction) AS c, "
                       "(SELECT coalesce(max(policy_id), 0) FROM subledger.policy) AS pol"
                       ).fetchone()
    return row["p"], row["c"], row["pol"]


def fingerprint(conn: psycopg.Connection, period: str, after: tuple[int, int, int],
                upto: tuple[int, int, int] | None = None) -> str:
    """md5 of one load's rows and policies (ids above ``after``, up to ``upto``),
    ids and dates made relative to the load and the period: the generator draws
    from (seed, position in the load), never from ids or dates. A policy's term
    is given in months (the same months from a date of another month are
    another number of days)."""
    upto = upto or (2**62, 2**62, 2**62)
    return conn.execute("""
        WITH p AS (SELECT to_date(%(period)s, 'YYYY-MM') AS start_date),
        rows AS (
            SELECT 'P' AS kind, t.txn_id - %(premium)s AS n, t.policy_id - %(policy)s AS policy,
                   t.payment_date - p.start_date AS day, t.txn_type, t.line_of_business,
                   t.amount, t.currency
            FROM subledger.premium_transaction AS t, p
            WHERE t.txn_id > %(premium)s AND t.txn_id <= %(premium_upto)s
            UNION ALL
            SELECT 'C', t.claim_id - %(claim)s, t.policy_id - %(policy)s,
                   t.claim_date - p.start_date, t.txn_type, t.line_of_business, t.amount,
                   t.currency
            FROM subledger.claims_transaction AS t, p
            WHERE t.claim_id > %(claim)s AND t.claim_id <= %(claim_upto)s
        ), policies AS (
            SELECT pol.policy_id - %(policy)s AS n, pol.line_of_business,
                   pol.inception_date - p.start_date AS day,
                   CASE pol.expiry_date WHEN pol.inception_date + interval '6 months' THEN 6
                                        WHEN pol.inception_date + interval '12 months' THEN 12
                   END AS months
            FROM subledger.policy AS pol, p
            WHERE pol.policy_id > %(policy)s AND pol.policy_id <= %(policy_upto)s
        )
        SELECT md5((SELECT string_agg(rows::text, E'\\n' ORDER BY kind, n) FROM rows)
                   || E'\\n--\\n'
                   || coalesce((SELECT string_agg(policies::text, E'\\n' ORDER BY n)
                                FROM policies), '')) AS md5
        """, {"period": period, "premium": after[0], "claim": after[1], "policy": after[2],
              "premium_upto": upto[0], "claim_upto": upto[1],
              "policy_upto": upto[2]}).fetchone()["md5"]


def table_digest(conn: psycopg.Connection) -> dict[str, str]:
    """md5 of both source tables and the policies, row by row in id order, ids
    included."""
    return conn.execute("""
        SELECT (SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.txn_id))
                FROM subledger.premium_transaction AS t) AS premium,
               (SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.claim_id))
                FROM subledger.claims_transaction AS t) AS claims,
               (SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.policy_id))
                FROM subledger.policy AS t) AS policies""").fetchone()


# Every premium row with its policy (if any) and the defects of the row.
PREMIUM_POLICY_SQL = f"""
SELECT c.source_id, c.txn_type, c.txn_date, c.line_of_business, c.policy_id, c.defects,
       c.policy_missing, c.date_outside_period, c.lob_unknown, c.txn_type_unknown,
       pol.policy_id IS NOT NULL AS has_policy, pol.line_of_business AS policy_lob,
       pol.inception_date, pol.expiry_date
FROM ({CLASSIFIED_SQL}) AS c
LEFT JOIN subledger.policy AS pol ON pol.policy_id = c.policy_id
WHERE c.source_type = 'PREMIUM'
ORDER BY c.source_id
"""


def premium_with_policies(conn: psycopg.Connection,
                          period: str = PERIOD) -> list[dict[str, Any]]:
    return conn.execute(PREMIUM_POLICY_SQL, {"period": period}).fetchall()


@pytest.fixture
def other_target(postgresql_noproc: Any, postgresql: psycopg.Connection) -> Iterator[db.Target]:
    """A second fresh clone of the migrated template, beside the test's own."""
    info = postgresql.info
    name = f"monthend_other_{uuid.uuid4().hex[:12]}"
    admin = (f"host={info.host} port={info.port} user={info.user} "
             f"dbname={postgresql_noproc.maintenance_dbname}")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgresql_noproc.template_dbname}"')
    try:
        yield db.Target(f"host={info.host} port={info.port} user={info.user} dbname={name}",
                        "--dsn")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- counts


def test_counts_match_the_request_and_the_tables(target: db.Target,
                                                 conn: psycopg.Connection) -> None:
    result = generate(target)
    assert result["period"] == PERIOD
    assert result["premium_rows"] + result["claim_rows"] == N
    assert result["premium_rows"] == round(N * 0.7)
    assert result["bad_rows"] == 0
    # Without bad rows, one policy each premium row.
    assert result["policies"] == result["premium_rows"]
    counts = conn.execute("""
        SELECT (SELECT count(*) FROM subledger.premium_transaction) AS premium,
               (SELECT count(*) FROM subledger.claims_transaction) AS claims,
               (SELECT count(*) FROM subledger.policy) AS policies""").fetchone()
    assert counts == {"premium": result["premium_rows"], "claims": result["claim_rows"],
                      "policies": result["policies"]}
    assert all(row["defects"] == 0 for row in classified(conn))


def test_generate_opens_the_period_with_its_fx_rates(target: db.Target,
                                                     conn: psycopg.Connection) -> None:
    generate(target, txns=10)
    period = conn.execute("SELECT start_date::text, end_date::text, status "
                          "FROM gl.accounting_period WHERE period = %s", (PERIOD,)).fetchone()
    assert period == {"start_date": "2025-01-01", "end_date": "2025-01-31", "status": "OPEN"}
    rates = conn.execute("SELECT currency, rate FROM gl.fx_rate WHERE period = %s",
                         (PERIOD,)).fetchall()
    assert {r["currency"] for r in rates} == CURRENCIES
    assert all(r["rate"] > 0 for r in rates)


def test_bad_rows_are_reported_and_counted(target: db.Target, conn: psycopg.Connection) -> None:
    fraction = 0.1
    result = generate(target, bad_rows=fraction)
    assert result["premium_rows"] + result["claim_rows"] == N
    # Binomial(N, 0.1): the standard deviation is about 13 rows.
    assert abs(result["bad_rows"] - fraction * N) < 60, result

    rows = classified(conn)
    assert len(rows) == N
    spoiled = [r for r in rows if r["defects"] > 0]
    assert len(spoiled) == result["bad_rows"]
    # One defect a row, so that each dead letter has one unambiguous reason.
    assert {r["defects"] for r in spoiled} == {1}


def test_every_defect_kind_appears(target: db.Target, conn: psycopg.Connection) -> None:
    generate(target, bad_rows=0.1)
    rows = classified(conn)
    by_kind = {kind: sum(r[kind] for r in rows) for kind in DEFECTS}
    assert all(count > 0 for count in by_kind.values()), by_kind
    # Spread evenly over the nine kinds: about 22 rows each.
    assert max(by_kind.values()) < 4 * min(by_kind.values()), by_kind
    # Both source tables carry defects.
    assert {r["source_type"] for r in rows if r["defects"]} == {"PREMIUM", "CLAIM"}


def test_no_bad_rows_without_the_option(target: db.Target, conn: psycopg.Connection) -> None:
    result = generate(target, bad_rows=0.0)
    assert result["bad_rows"] == 0
    assert sum(r["defects"] for r in classified(conn)) == 0


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_rows(target: db.Target, other_target: db.Target,
                                       conn: psycopg.Connection) -> None:
    first = generate(target, period="2025-02", bad_rows=0.05, seed=42)
    second = generate(other_target, period="2025-02", bad_rows=0.05, seed=42)
    for key in ("premium_rows", "claim_rows", "bad_rows", "policies"):
        assert first[key] == second[key]
    with psycopg.connect(other_target.conninfo, autocommit=True, row_factory=dict_row) as other:
        # Policies included: the same seed gives the same policies too.
        assert table_digest(conn) == table_digest(other)


def test_same_seed_same_rows_whatever_the_ids(target: db.Target,
                                              conn: psycopg.Connection) -> None:
    # January and March have 31 days each: the same draws give the same day numbers.
    before_january = max_ids(conn)
    generate(target, period="2025-01", bad_rows=0.05, seed=7)
    before_march = max_ids(conn)
    generate(target, period="2025-03", bad_rows=0.05, seed=7)
    before_may = max_ids(conn)
    generate(target, period="2025-05", bad_rows=0.05, seed=8)

    january = fingerprint(conn, "2025-01", before_january, before_march)
    march = fingerprint(conn, "2025-03", before_march, before_may)
    may = fingerprint(conn, "2025-05", before_may)
    assert before_march[0] > before_january[0]  # March's ids continue after January's
    assert before_march[2] > before_january[2]  # and so do its policies'
    assert january == march
    assert may != march


def test_different_seeds_give_different_rows(target: db.Target, other_target: db.Target,
                                             conn: psycopg.Connection) -> None:
    generate(target, seed=1)
    generate(other_target, seed=2)
    with psycopg.connect(other_target.conninfo, autocommit=True, row_factory=dict_row) as other:
        assert table_digest(conn) != table_digest(other)
        amounts = {r["txn_id"]: r["amount"] for r in other.execute(
            "SELECT txn_id, amount FROM subledger.premium_transaction").fetchall()}
    same = conn.execute("SELECT txn_id, amount FROM subledger.premium_transaction").fetchall()
    equal = sum(1 for r in same if amounts.get(r["txn_id"]) == r["amount"])
    # Not a shifted or partly shared sequence either: hardly any position agrees.
    assert equal < len(same) * 0.02, f"{equal} of {len(same)} amounts equal across seeds"


# --------------------------------------------------------------------------- shape


def test_good_rows_look_like_a_month_of_business(target: db.Target,
                                                 conn: psycopg.Connection) -> None:
    generate(target, bad_rows=0.05)
    good = [r for r in classified(conn) if r["defects"] == 0]
    assert len(good) > N * 0.9

    assert all("2025-01-01" <= r["txn_date"].isoformat() <= "2025-01-31" for r in good)
    # Spread over the month, not piled on one day.
    assert len({r["txn_date"] for r in good}) >= 28

    assert {r["currency"] for r in good} == CURRENCIES
    assert {r["line_of_business"] for r in good} == LINES_OF_BUSINESS
    assert {r["txn_type"] for r in good if r["source_type"] == "PREMIUM"} == PREMIUM_TYPES
    assert {r["txn_type"] for r in good if r["source_type"] == "CLAIM"} == CLAIM_TYPES
    # USD dominates, as in a US book.
    usd = sum(1 for r in good if r["currency"] == "USD")
    assert usd > len(good) / 2
    # Each amount carries exactly its currency's minor units (JPY 0, BHD 3).
    minor_units = {"JPY": 0, "BHD": 3}
    for row in good:
        assert -row["amount"].as_tuple().exponent == minor_units.get(row["currency"], 2), row
    assert all(r["policy_id"] > 0 for r in good)


def test_amounts_are_skewed(target: db.Target, conn: psycopg.Connection) -> None:
    generate(target)
    stats = conn.execute("""
        SELECT avg(amount) AS mean,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) AS median,
               min(amount) AS low, max(amount) AS high
        FROM (SELECT amount, currency FROM subledger.premium_transaction
              UNION ALL
              SELECT amount, currency FROM subledger.claims_transaction) AS s
        WHERE currency = 'USD'""").fetchone()
    # Log-uniform from 50 to 250,000: many small amounts, a few large ones.
    assert stats["low"] >= 50 and stats["high"] <= 250_000, stats
    assert float(stats["mean"]) > 3 * stats["median"], stats
    assert stats["high"] > 100 * stats["low"], stats


# --------------------------------------------------------------------------- policies


def test_every_premium_row_has_its_own_policy(target: db.Target,
                                              conn: psycopg.Connection) -> None:
    result = generate(target, bad_rows=0.1)
    rows = premium_with_policies(conn)
    assert len(rows) == result["premium_rows"]
    # A premium row without a policy is exactly one spoiled by a missing policy_id;
    # every other premium row, however else it is spoiled, names a policy there is.
    without = [r for r in rows if not r["has_policy"]]
    assert without, "no premium row lacks its policy_id at a bad fraction of 0.1"
    assert all(r["policy_missing"] and r["policy_id"] is None for r in without)
    assert all(r["has_policy"] for r in rows if not r["policy_missing"])
    # One policy a premium row, and no policy without one.
    policy_ids = [r["policy_id"] for r in rows if r["has_policy"]]
    assert len(policy_ids) == len(set(policy_ids)) == result["policies"]
    assert conn.execute("SELECT count(*) AS n FROM subledger.policy").fetchone()["n"] \
        == result["policies"]
    # The policy is of the row's line of business (of the line it was generated
    # with, for a row spoiled with an unknown one).
    assert all(r["policy_lob"] == r["line_of_business"]
               for r in rows if r["has_policy"] and not r["lob_unknown"])
    assert all(r["policy_lob"] in LINES_OF_BUSINESS for r in rows if r["has_policy"])
    # Claims name policies of the load.
    orphans = conn.execute("""
        SELECT count(*) AS n FROM subledger.claims_transaction AS c
        WHERE c.policy_id IS NOT NULL
          AND NOT EXISTS (SELECT FROM subledger.policy AS p WHERE p.policy_id = c.policy_id)
        """).fetchone()["n"]
    assert orphans == 0


def test_policy_ids_continue_after_the_largest(target: db.Target,
                                               conn: psycopg.Connection) -> None:
    first = generate(target, period="2025-01", txns=500)
    before = max_ids(conn)
    second = generate(target, period="2025-02", txns=500)
    assert before[2] == first["policies"]
    ids = conn.execute("SELECT min(policy_id) AS lo, max(policy_id) AS hi, count(*) AS n "
                       "FROM subledger.policy WHERE policy_id > %s", (before[2],)).fetchone()
    assert ids == {"lo": before[2] + 1, "hi": before[2] + second["policies"],
                   "n": second["policies"]}
    # February's premium rows name February's policies.
    february = premium_with_policies(conn, "2025-02")
    assert all(r["policy_id"] > before[2] for r in february if r["source_id"] > before[0])


def test_row_dates_lie_inside_the_policy_term(target: db.Target,
                                              conn: psycopg.Connection) -> None:
    generate(target, bad_rows=0.1)
    rows = premium_with_policies(conn)
    good = [r for r in rows if r["defects"] == 0]
    assert len(good) > 0.8 * len(rows)
    for row in good:
        assert row["inception_date"] <= row["txn_date"] < row["expiry_date"], row
    # Written at inception: new business and renewals.
    assert all(r["txn_date"] == r["inception_date"]
               for r in good if r["txn_type"] in ("NEW_BUSINESS", "RENEWAL"))
    # Endorsements and cancellations fall on policies incepted over the year before.
    later = [(r["txn_date"] - r["inception_date"]).days
             for r in good if r["txn_type"] in ("ENDORSEMENT", "CANCELLATION")]
    assert later and max(later) < 365 and min(later) >= 0
    assert max(later) > 300 and sum(1 for d in later if d > 0) > 0.9 * len(later)
    # A row spoiled otherwise than by its policy_id or its date is still inside its
    # policy's term: pre-flight rejects it for its own defect, not the policy's.
    spoiled = [r for r in rows if r["defects"] > 0 and not r["policy_missing"]
               and not r["date_outside_period"]]
    assert spoiled
    for row in spoiled:
        assert row["inception_date"] <= row["txn_date"] < row["expiry_date"], row


def test_terms_are_6_or_12_months(target: db.Target, conn: psycopg.Connection) -> None:
    generate(target, bad_rows=0.05)
    terms = conn.execute("""
        SELECT CASE expiry_date WHEN inception_date + interval '6 months' THEN 6
                                WHEN inception_date + interval '12 months' THEN 12 END AS months,
               count(*) AS n
        FROM subledger.policy GROUP BY 1""").fetchall()
    by_months = {t["months"]: t["n"] for t in terms}
    assert set(by_months) == {6, 12}, by_months
    # About 30% of 6 months.
    assert 0.2 < by_months[6] / (by_months[6] + by_months[12]) < 0.4, by_months


def test_a_clean_period_passes_preflight_whole(target: db.Target,
                                               conn: psycopg.Connection) -> None:
    result = generate(target)
    batch_id = conn.execute("CALL batch.start_run(%s, 2, 300, 3, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    preflight_and_allocate(conn, batch_id)
    dead = conn.execute("SELECT reason_code, count(*) AS n FROM batch.dead_letter "
                        "WHERE batch_id = %s GROUP BY 1", (batch_id,)).fetchall()
    assert dead == []
    claimed = conn.execute("SELECT source_type, count(*) AS n FROM batch.source_claim "
                           "WHERE batch_id = %s GROUP BY 1 ORDER BY 1", (batch_id,)).fetchall()
    assert claimed == [{"source_type": "CLAIM", "n": result["claim_rows"]},
                       {"source_type": "PREMIUM", "n": result["premium_rows"]}]


def test_a_spoiled_row_is_dead_lettered_for_its_own_defect(target: db.Target,
                                                           conn: psycopg.Connection) -> None:
    generate(target, bad_rows=0.1)
    rows = classified(conn)
    batch_id = conn.execute("CALL batch.start_run(%s, 2, 300, 3, NULL)",
                            (PERIOD,)).fetchone()["p_batch_id"]
    preflight_and_allocate(conn, batch_id)
    dead = {(d["source_type"], d["source_id"]): d["reason_code"] for d in conn.execute(
        "SELECT source_type, source_id, reason_code FROM batch.dead_letter "
        "WHERE batch_id = %s", (batch_id,)).fetchall()}
    expected = {(r["source_type"], r["source_id"]):
                next(DEFECT_REASONS[d] for d in DEFECTS if r[d])
                for r in rows if r["defects"]}
    assert dead == expected
    # Not one row is refused for its policy: each spoiled one has its own reason.
    assert not {"POLICY_UNKNOWN", "OUTSIDE_POLICY_TERM"} & set(dead.values())


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize("args", [
    ("--period", "2025-13", "--txns", "10"),
    ("--period", "2025-01", "--txns", "-1"),
    ("--period", "2025-01", "--txns", "10", "--bad-rows", "1.5"),
    ("--period", "2025-01"),
])
def test_bad_usage_exits_2_and_writes_nothing(target: db.Target, conn: psycopg.Connection,
                                              args: tuple[str, ...]) -> None:
    proc = monthend_cli(target, "generate", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip()
    assert conn.execute("SELECT count(*) AS n FROM subledger.premium_transaction"
                        ).fetchone()["n"] == 0


def test_zero_transactions(target: db.Target, conn: psycopg.Connection) -> None:
    result = generate(target, txns=0, bad_rows=0.5)
    assert (result["premium_rows"], result["claim_rows"], result["bad_rows"],
            result["policies"]) == (0, 0, 0, 0)
    assert classified(conn) == []
    assert conn.execute("SELECT count(*) AS n FROM subledger.policy").fetchone()["n"] == 0
