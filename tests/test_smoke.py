"""The whole run end to end through the CLI, on a small period."""

import json

from conftest import monthend_cli


def test_generate_run_verify(target, conn):
    monthend_cli(target, "generate", "--period", "2025-01", "--txns", "3000",
                 "--bad-rows", "0.02", check=True)
    proc = monthend_cli(target, "run", "--period", "2025-01", "--workers", "2",
                        "--range-size", "500", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["status"] == "COMMITTED"
    assert result["posted_rows"] + result["dead_letter_rows"] == 3000
    verify = monthend_cli(target, "verify", "--json", check=True)
    assert json.loads(verify.stdout)["ok"] is True
