"""`fhir-server trials rematch [--workers N]` (trials/rematch.py `full`): every trial against
every patient a trial-matching subscriber may hear of, the patients' chunks split over spawned
worker processes; what it prints, and that a second run tells nobody anything again."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fhir_server import cli
from fhir_server.app import create_app
from fhir_server.clock import Frozen
from tests.conftest import authorized
from tests.subscriptions.receiver import Receiver
from tests.trials.rematch_helpers import moving  # noqa: F401 - a fixture
from tests.trials.test_rematch_job import _world, hook, settings  # noqa: F401 - fixtures


def test_a_full_rematch_over_two_workers_tells_each_new_match_once(
        settings: Any, hook: Receiver, moving: Frozen, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with authorized(TestClient(create_app(settings))) as client:
        _world(client, hook.url, moving)
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(settings.data_dir))
    # The command in a process of its own, as an operator runs it: its worker processes are
    # spawned from it, not from the test runner's (a pytest-xdist worker's) process.
    two_workers = ("from fhir_server import cli; from fhir_server.trials import rematch; "
                   "rematch.CHUNK = 1; "  # four chunks over two processes
                   "raise SystemExit(cli.main(['trials', 'rematch', '--workers', '2']))")
    done = subprocess.run([sys.executable, "-c", two_workers], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # 7 trials x 4 patients: Fay (lung cancer) pruned by the breast trials, the others by lung.
    assert "7 trials x 4 patients: 9 pairs pruned (32.1%), 19 evaluated; 10 new matches" in done.stdout, done
    monkeypatch.setattr(cli, "configure", lambda level: None)  # keep pytest's log handlers
    assert cli.main(["trials", "rematch"]) == 0
    assert "7 trials x 4 patients: 9 pairs pruned (32.1%), 19 evaluated; 0 new matches" in capsys.readouterr().out
