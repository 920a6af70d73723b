"""Seal version 2 and the proofs of one entry: the Merkle functions against an
independent implementation, a sealed batch's root recomputed outside the
database, proofs fetched as the auditor and checked with no database, and
every tampered proof failing at the step it names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

import merkle_reference as ref
from audit_helpers import AUDITOR, auditor, role_target, sealing_by, tamper
from conftest import monthend_cli
from monthend import db

PERIOD = "2025-01"
# The keys of a proof, exactly as the auditors' scripts read them.
PROOF_KEYS = ("je_number", "batch_id", "seal_version", "leaf", "leaf_index", "range_size",
              "range_path", "range_index", "range_count", "batch_path", "range_root",
              "batch_root", "audit_seq", "audit_hash")


def committed_batch(target: db.Target, conn: psycopg.Connection, txns: int = 1200,
                    range_size: int = 150) -> dict[str, Any]:
    monthend_cli(target, "generate", "--period", PERIOD, "--txns", str(txns), "--seed", "11",
                 check=True)
    proc = monthend_cli(target, "run", "--period", PERIOD, "--workers", "2", "--range-size",
                        str(range_size), "--json", check=True)
    batch_id = json.loads(proc.stdout)["batch_id"]
    run = conn.execute("SELECT * FROM batch.run WHERE batch_id = %s", (batch_id,)).fetchone()
    assert run is not None and run["status"] == "COMMITTED"
    return run


def prove(target: db.Target, je_number: str) -> tuple[int, str, str]:
    proc = monthend_cli(role_target(target, AUDITOR), "prove", je_number, "--json")
    return proc.returncode, proc.stdout, proc.stderr


def check_proof(proof_file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    # No --dsn: the check needs no database (monthend_cli adds one; it is unused).
    proc = monthend_cli(db.Target("host=/nonexistent", "--dsn"), "check-proof", str(proof_file),
                        "--json", *args)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 33, 100])
def test_merkle_functions_match_rfc_6962(conn: psycopg.Connection, size: int) -> None:
    leaves = [f"leaf {i}".encode() for i in range(size)]
    hashes = [hashlib.sha256(b"\x00" + x).digest() for x in leaves]
    root = conn.execute("SELECT audit.merkle_root(%s::bytea[]) AS r", (hashes,)).fetchone()["r"]
    assert bytes(root) == ref.mth(leaves)
    for m in range(size):
        got = conn.execute("SELECT audit.merkle_path(%s::bytea[], %s) AS p",
                           (hashes, m)).fetchone()["p"]
        assert [bytes(x) for x in got] == ref.path(m, leaves), m


def test_merkle_path_refuses_an_index_outside_the_tree(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="outside a tree of 2"):
        conn.execute("SELECT audit.merkle_path(ARRAY['\\x00'::bytea, '\\x01'], 2)")


@pytest.mark.parametrize("nodes", ["ARRAY[NULL, '\\x01']::bytea[]", "ARRAY[NULL]::bytea[]",
                                   "ARRAY['\\x01', '\\x02', NULL]::bytea[]"])
def test_a_null_node_is_refused_not_skipped(conn: psycopg.Connection, nodes: str) -> None:
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="node is NULL"):
        conn.execute(f"SELECT audit.merkle_root({nodes})")


def test_independent_implementation_recomputes_the_sealed_root(
        target: db.Target, conn: psycopg.Connection) -> None:
    run = committed_batch(target, conn)
    assert run["seal_version"] == 2
    range_leaves = ref.batch_leaves(conn, run["batch_id"])
    assert sum(map(len, range_leaves)) == run["je_count"] and len(range_leaves) > 4
    root, range_roots = ref.batch_root(range_leaves)
    seal = conn.execute("SELECT payload FROM audit.log WHERE event = 'BATCH_COMMITTED' "
                        "AND batch_id = %s", (run["batch_id"],)).fetchone()["payload"]
    assert seal["seal_version"] == 2
    assert seal["digest"] == root.hex() == bytes(run["digest"]).hex()
    assert [r["digest"] for r in seal["ranges"]] == [r.hex() for r in range_roots]


def test_sampled_proofs_check_offline_and_tampering_fails_at_its_step(
        target: db.Target, conn: psycopg.Connection, tmp_path: Path) -> None:
    run = committed_batch(target, conn)
    range_leaves = ref.batch_leaves(conn, run["batch_id"])
    _root, range_roots = ref.batch_root(range_leaves)
    numbers = [row["je_number"] for row in conn.execute(
        "SELECT je_number FROM gl.journal_entry_header WHERE batch_id = %s "
        "ORDER BY je_id LIMIT 3 OFFSET 0", (run["batch_id"],))]
    last = conn.execute("SELECT max(je_number) AS n FROM gl.journal_entry_header "
                        "WHERE batch_id = %s", (run["batch_id"],)).fetchone()["n"]
    for je_number in [*numbers, last]:
        code, out, err = prove(target, je_number)
        assert code == 0, err
        proof = json.loads(out)
        assert sorted(proof) == sorted(PROOF_KEYS)
        assert proof["je_number"] == je_number and proof["batch_id"] == run["batch_id"]
        # The paths are the independent implementation's.
        leaves = range_leaves[proof["range_index"]]
        assert proof["leaf"].encode() == leaves[proof["leaf_index"]]
        assert proof["range_path"] == [p.hex() for p in ref.path(proof["leaf_index"], leaves)]
        assert proof["batch_path"] == [p.hex() for p in ref.path(proof["range_index"],
                                                                 range_roots)]
        path = tmp_path / f"{je_number}.json"
        path.write_text(out)
        code, checked = check_proof(path)
        assert code == 0 and checked["ok"], checked

    proof = json.loads((tmp_path / f"{numbers[1]}.json").read_text())

    def flip(hex_digest: str) -> str:
        return ("1" if hex_digest[10] == "0" else "0").join((hex_digest[:10], hex_digest[11:]))

    def fails_at(step: str, **changes: Any) -> None:
        bad = {**proof, **changes}
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(bad))
        code, checked = check_proof(path)
        assert code == 1 and not checked["ok"] and checked["failed_step"] == step, checked

    amount = proof["leaf"].split("\n")[1].split("|")[3]
    fails_at("range root", leaf=proof["leaf"].replace(amount, amount + "1", 1))
    fails_at("range root", range_path=[flip(proof["range_path"][0]), *proof["range_path"][1:]])
    fails_at("range root", range_path=proof["range_path"][:-1])
    fails_at("range root", leaf_index=proof["leaf_index"] + 1)
    fails_at("range root", range_root=flip(proof["range_root"]))
    fails_at("batch root", batch_path=[flip(proof["batch_path"][0]), *proof["batch_path"][1:]])
    fails_at("batch root", batch_root=flip(proof["batch_root"]))
    fails_at("batch root", range_index=proof["range_index"] + 1)
    fails_at("leaf", je_number=last)
    fails_at("form", seal_version=1)
    fails_at("form", audit_hash="not hex")

    # A kept head: the sealing row must be at or before it.
    head = conn.execute("SELECT seq, hash FROM audit.head()").fetchone()
    head_file = tmp_path / "head.json"
    head_file.write_text(json.dumps({"seq": head["seq"], "hash": head["hash"]}))
    path = tmp_path / f"{numbers[1]}.json"
    code, checked = check_proof(path, "--head-file", str(head_file))
    assert code == 0 and checked["steps"][-1]["step"] == "head"
    head_file.write_text(json.dumps({"seq": proof["audit_seq"] - 1, "hash": "0" * 64}))
    code, checked = check_proof(path, "--head-file", str(head_file))
    assert code == 1 and checked["failed_step"] == "head"
    head_file.write_text(json.dumps({"seq": proof["audit_seq"], "hash": "0" * 64}))
    code, checked = check_proof(path, "--head-file", str(head_file))
    assert code == 1 and checked["failed_step"] == "head"


def test_what_cannot_be_proved_says_why(target: db.Target, conn: psycopg.Connection,
                                        tmp_path: Path) -> None:
    with sealing_by(conn, 1):
        old = committed_batch(target, conn, txns=300)
    code, _out, err = prove(target, f"{PERIOD}-0000000001")
    assert code == 1 and "sealed by seal version 1" in err and \
        f"monthend verify --batch {old['batch_id']}" in err

    code, _out, err = prove(target, "2025-01-9999999999")
    assert code == 2 and "no committed batch of period 2025-01 holds" in err
    code, _out, err = prove(target, "JE-42")
    assert code == 2 and "as in 2025-01-0000000042" in err

    # A range changed since the commit has no proofs until the damage is found.
    monthend_cli(target, "generate", "--period", "2025-02", "--txns", "300", "--seed", "3",
                 check=True)
    proc = monthend_cli(target, "run", "--period", "2025-02", "--workers", "1", "--json",
                        check=True)
    batch_id = json.loads(proc.stdout)["batch_id"]
    victim = conn.execute("SELECT je_id, je_number FROM gl.journal_entry_header "
                          "WHERE batch_id = %s ORDER BY je_id LIMIT 1 OFFSET 5",
                          (batch_id,)).fetchone()
    tamper(conn, "UPDATE gl.journal_entry_line SET debit = debit + 1 "
                 "WHERE je_id = %(je_id)s AND line_no = 1", params=victim)
    code, _out, err = prove(target, victim["je_number"])
    assert code == 1 and "no longer hashes to its sealed root" in err and \
        f"monthend verify --batch {batch_id}" in err

    # A line dated otherwise than its header: version 2 seals the date once,
    # in the header, so the root holds, but there is no proof all the same.
    monthend_cli(target, "generate", "--period", "2025-03", "--txns", "300", "--seed", "4",
                 check=True)
    proc = monthend_cli(target, "run", "--period", "2025-03", "--workers", "1", "--json",
                        check=True)
    redated = conn.execute("SELECT je_id, je_number FROM gl.journal_entry_header "
                           "WHERE batch_id = %s ORDER BY je_id LIMIT 1 OFFSET 9",
                           (json.loads(proc.stdout)["batch_id"],)).fetchone()
    tamper(conn, "UPDATE gl.journal_entry_line SET je_date = je_date + 1 "
                 "WHERE je_id = %(je_id)s AND line_no = 2", params=redated)
    code, _out, err = prove(target, redated["je_number"])
    assert code == 1 and "dated otherwise than their header" in err


def test_the_chain_decides_the_seal_version(target: db.Target,
                                            conn: psycopg.Connection) -> None:
    """batch.run.seal_version changed after the commit: the batch is still
    verified by the version its seal names, and the difference is reported."""
    run = committed_batch(target, conn, txns=300)
    tamper(conn, "UPDATE batch.run SET seal_version = 1 WHERE batch_id = %(batch_id)s",
           params=run)
    with auditor(target) as session:
        rows = session.execute("SELECT * FROM audit.verify_batch(%s)",
                               (run["batch_id"],)).fetchall()
        proof = session.execute("SELECT audit.prove_entry(%s) AS p",
                                (f"{PERIOD}-0000000003",)).fetchone()["p"]
    assert [(r["problem"], r["detail"]) for r in rows] == [
        ("BATCH_RECORD_MISMATCH", "sealed by seal version 2, batch.run says 1")]
    assert proof["seal_version"] == 2
