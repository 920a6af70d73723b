"""Database health for DBAs (``monthend health``): the score of batch.health_score
with its reasons, and the health_* views behind it, read in one snapshot."""

from __future__ import annotations

from typing import Any

from monthend import db

TOP = 5


def report(target: db.Target) -> dict[str, Any]:
    """Everything `monthend health --json` prints."""
    with db.connect(target, application_name="monthend health") as conn:
        score = db.call_one(conn, "health_score") or {"score": 0, "status": "CRITICAL",
                                                      "reasons": []}
        return {
            "score": score["score"],
            "status": score["status"],
            "reasons": score["reasons"],
            "checks": db.call(conn, "health_checks"),
            "connections": db.call(conn, "health_connections"),
            "cache": db.call(conn, "health_cache"),
            "lock_waits": db.call(conn, "health_lock_waits"),
            "slow_statements": db.call(conn, "health_slow_statements", limit=TOP),
            "bloat": db.call(conn, "health_bloat", limit=TOP),
        }


def _mb(value: Any) -> str:
    return "-" if value is None else f"{float(value) / 1048576:,.1f} MB"


def text(result: dict[str, Any]) -> str:
    """The report for a person: score and reasons first, then the detail."""
    lines = [f"health {result['score']}/100 ({result['status']})"]
    for reason in result["reasons"]:
        lines.append(f"  {reason['status']:<8} {reason['check']} (-{reason['penalty']}): "
                     f"{reason['detail']}")
        lines.append(f"           -> {reason['action']}")
    used = result["connections"][0]["connections_used"] if result["connections"] else 0
    max_conn = result["connections"][0]["max_connections"] if result["connections"] else "?"
    lines.append(f"connections: {used}/{max_conn}")
    for row in result["connections"]:
        lines.append(f"  {row['connections']:>4} {row['datname'] or '-'} {row['usename'] or '-'} "
                     f"{row['application_name']} [{row['state']}]")
    lines.append("cache hit ratio: " + ", ".join(
        f"{row['scope']} {row['object']} {row['hit_ratio']}" for row in result["cache"]
        if row["scope"] != "table"))
    if result["lock_waits"]:
        lines.append("lock waits:")
        for row in result["lock_waits"]:
            chain = " <- ".join(str(pid) for pid in row["blocking_chain"] or [])
            lines.append(f"  pid {row['pid']} waiting {row['waiting_seconds']} s for "
                         f"{row['waiting_for']}; chain {chain}; root {row['root_blocker']} "
                         f"[{row['root_state']}] {row['root_application'] or ''}: "
                         f"{row['root_query'] or ''}")
    else:
        lines.append("lock waits: none")
    statements = result["slow_statements"]
    if statements and not statements[0]["available"]:
        lines.append(f"slow statements: {statements[0]['note']}")
    else:
        lines.append("slow statements (total execution time):")
        for row in statements:
            lines.append(f"  {float(row['total_seconds']):>10,.1f} s {row['calls']:>8} calls "
                         f"{float(row['mean_ms']):>10,.1f} ms  {row['query'][:60]}")
    if result["bloat"]:
        lines.append("bloat (estimated):")
        for row in result["bloat"]:
            ratio = row["estimated_bloat_ratio"]
            lines.append(f"  {row['kind']:<5} {row['schema_name']}.{row['relation']}: "
                         f"{_mb(row['estimated_bloat_bytes'])} of {_mb(row['size_bytes'])}"
                         f" ({float(ratio or 0) * 100:.0f}%)")
    else:
        lines.append("bloat: none estimated")
    return "\n".join(lines)
