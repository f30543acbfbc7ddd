"""With authentication off (`--no-auth`), SMART discovery says so clearly, over real HTTP:
404 with an OperationOutcome, not "Unknown resource type '.well-known'"."""

from __future__ import annotations

from pathlib import Path

from tests.auth.live import live_server


def test_discovery_says_it_is_off_without_authentication(tmp_path: Path) -> None:
    with live_server(tmp_path, auth="off") as live:
        answer = live.get("/fhir/.well-known/smart-configuration")
        assert answer.status_code == 404
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        [issue] = outcome["issue"]
        assert issue["code"] == "not-found"
        assert "without authentication" in issue["diagnostics"]
        assert "Unknown resource type" not in answer.text
        assert live.get("/auth/jwks").status_code == 404  # no authorization server at all
