"""The retention policy file (privacy/retention_policy.py): the defaults, the schema's
refusals (unknown rule, bad period), the legal minimums, and calendar periods."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import orjson
import pytest

from fhir_server.privacy.retention_policy import DEFAULTS, Period, PolicyError, load_policy

RULES = orjson.loads(DEFAULTS.read_bytes())["rules"]


def _file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "policy.json"
    path.write_bytes(orjson.dumps(content))
    return path


def test_the_defaults_are_the_platforms_terms() -> None:
    assert load_policy(backup_days=30).describe() == {
        "patient-record": {"inactive": "P2Y", "archived": "P2Y"},
        "second-opinion-report": {"available": "P15D", "archived": "P10Y"},
        "tele-expertise": {"warned": "P30D"},
        "connection-logs": {"kept": "P13M"},
        "access-logs": {"kept": "P1Y"},
        "accounts": {"inactive": "P2Y", "warned": "P30D", "exportable": "P30D",
                     "deletion-within": "P1M"},
        "backups": {"kept": "P30D"}}


@pytest.mark.parametrize(("rules", "said"), [
    ({**RULES, "photos": {"kept": "P1Y"}}, "rules: unknown rule or field 'photos'"),
    ({**RULES, "access-logs": {"kept": "P1Y", "after": "P1D"}}, "unknown rule or field 'after'"),
    ({**RULES, "access-logs": {"kept": "one year"}}, "is not a period"),
    ({**RULES, "access-logs": {"kept": "P"}}, "is not a period"),
    ({k: v for k, v in RULES.items() if k != "backups"}, '"backups" is a required property'),
    ({**RULES, "connection-logs": {"kept": "P11M"}}, "shorter than the legal minimum P1Y"),
    ({**RULES, "access-logs": {"kept": "P1D"}}, "access-logs.kept is P1D, shorter than the legal minimum P1Y"),
    ({**RULES, "tele-expertise": {"warned": "P0D"}}, "tele-expertise.warned is P, shorter"),
    ({**RULES, "accounts": {**RULES["accounts"], "deletion-within": "P32D"}},
     "accounts.deletion-within is P32D, longer than the legal maximum P1M"),
])
def test_a_bad_policy_is_refused_with_what_is_wrong(tmp_path: Path, rules: dict[str, object], said: str) -> None:
    with pytest.raises(PolicyError, match="retention policy .*policy.json") as error:
        load_policy(_file(tmp_path, {"rules": rules}))
    assert said in str(error.value)


def test_the_backups_period_must_be_the_settings(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="FHIR_SERVER_BACKUP_RETENTION_DAYS is 20"):
        load_policy(backup_days=20)
    assert load_policy(_file(tmp_path, {"rules": {**RULES, "backups": {"kept": "P20D"}}}),
                       backup_days=20).period("backups", "kept") == Period(days=20)


def test_a_file_that_is_not_json_or_missing(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text("rules: {}")
    with pytest.raises(PolicyError, match="not JSON"):
        load_policy(tmp_path / "policy.json")
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path / "nothing.json")


def test_periods_follow_the_calendar() -> None:
    two_years = Period.parse("P2Y")
    assert two_years.after(date(2024, 2, 29)) == date(2026, 2, 28)
    assert two_years.before(date(2026, 3, 1)) == date(2024, 3, 1)
    assert Period.parse("P1M").after(date(2027, 1, 31)) == date(2027, 2, 28)
    assert Period.parse("P15D").after(date(2027, 12, 25)) == date(2028, 1, 9)
    assert Period.parse("P13M").at_least(Period(years=1))
    assert not Period.parse("P12M").at_least(Period(days=366))
    assert str(Period.parse("P1Y2M3D")) == "P1Y2M3D"
