"""Shared fixtures: settings on a temporary store, the app, an HTTP client."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fhir_server.app import blind_index, create_app
from fhir_server.auth.keys import SigningKeys
from fhir_server.crypto import create_key_ring
from fhir_server.logs import JsonFormatter
from fhir_server.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RAM_DISK = Path("/dev/shm")
RAM_DISK_ROOM = 1 << 30  # bytes free: tests' directories go when they pass (pyproject.toml)
# No daily figures pass in the apps and servers under test (a child process at each start,
# and AuditEvents tests do not expect): tests/trials/test_figures_pass.py runs it by hand.
os.environ.setdefault("FHIR_SERVER_FIGURES_DAILY", "false")


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One signing key file for the session: an RSA key takes ~0.1 s to make, and every app
    under test would otherwise make its own."""
    path = tmp_path_factory.mktemp("keys") / "signing-keys.json"
    SigningKeys(path, 300).signing_key()
    return path.read_bytes()


@pytest.fixture(scope="session", autouse=True)
def key_ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One key ring (0600) for the session, which every server and command under test (and
    their subprocesses) finds through FHIR_SERVER_KEY_RING, as encryption is on by default;
    each data directory keeps its own wrapped data keys (datakeys.db). Tests that rotate or
    break a key ring make their own with `create_key_ring`."""
    path = tmp_path_factory.mktemp("key-ring") / "keyring.json"
    create_key_ring(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FHIR_SERVER_KEY_RING", str(path))
        yield path


@pytest.fixture
def settings(tmp_path: Path, signing_keys: bytes) -> Settings:
    data = tmp_path / "data"
    data.mkdir()
    (data / "signing-keys.json").write_bytes(signing_keys)
    # The generic REST tests count what the store holds: the definitions we publish at
    # start-up (tested in tests/trials) would be in the way.
    return Settings(data_dir=data, base_url="http://testserver/fhir", publish_definitions=False)


@pytest.fixture(params=["sqlite", "mongodb-double"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store under the app: the HTTP tests run on the embedded store and on the MongoDB
    store (over its in-process double; see tests/store/conftest.py)."""
    return str(request.param)


@pytest.fixture
def client(settings: Settings, store_kind: str) -> Iterator[TestClient]:
    from tests.store.conftest import encrypting, migrated_double

    # The double is given the codec and blind indexes the app gives the SQLite store it opens.
    store = (None if store_kind == "sqlite" else
             migrated_double(codec=encrypting(settings.data_dir), blind=blind_index(settings)))
    with authorized(TestClient(create_app(settings, store))) as test_client:
        yield test_client


@contextmanager
def authorized(client: TestClient, scope: str = "system/*.cruds") -> Iterator[TestClient]:
    """Start `client`'s app and send a token with `scope` on every request."""
    with client:
        client.headers["Authorization"] = f"Bearer {token(client, scope)}"
        yield client


def token(client: TestClient, scope: str, **claims: str) -> str:
    """An access token of the app under test, as its token endpoint would issue it."""
    issued = client.app.state.tokens.issue(  # type: ignore[attr-defined]
        subject="test-client", client_id="test-client", scope=scope, **claims)
    return str(issued["access_token"])


@pytest.fixture(autouse=True)
def server_logging_undone() -> Iterator[None]:
    """Take back the log handler a command run in-process (`cli.main`) installs: it writes to
    that test's captured stderr, closed once the test ends, and a later test's thread (the
    SMTP server's) logging through it printed '--- Logging error ---' tracebacks."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (marked `anyio`) run on asyncio, as the server does."""
    return "asyncio"


def pytest_report_header() -> list[str]:
    """Say which stores the contract suite runs against (none is skipped silently)."""
    from tests.store.conftest import STORES

    return [f"stores under contract test: {', '.join(sorted(STORES))}",
            f"temporary directories under: {os.environ.get('PYTEST_DEBUG_TEMPROOT', tempfile.gettempdir())}"]


REAL_MONGODB_ONLY: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_mongodb(reason): the MongoDB double cannot run this case; it runs on "
        "SQLite and on a real MongoDB server only")
    temporary_directories_in_memory(config)


def temporary_directories_in_memory(config: pytest.Config) -> None:
    """Put `tmp_path` (every data directory under test) on the RAM disk when it has room.

    The stores sync each commit to disk (fsync, SQLite's synchronous=FULL): on a disk those
    syncs were most of the suite's wall time; on tmpfs they cost nothing. What the tests check
    still holds there: a server killed with SIGKILL leaves what it committed (the page cache
    outlives the process). A --basetemp or PYTEST_DEBUG_TEMPROOT given by the caller wins."""
    if config.option.basetemp or "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    try:
        room = os.statvfs(RAM_DISK)
    except OSError:  # no RAM disk here
        return
    if room.f_bavail * room.f_frsize >= RAM_DISK_ROOM and os.access(RAM_DISK, os.W_OK):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(RAM_DISK)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the double's runs of `real_mongodb` cases, and remember them for the report."""
    from tests.store.conftest import DOUBLE

    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("real_mongodb")
        callspec = getattr(item, "callspec", None)
        if marker and callspec and DOUBLE in callspec.params.values():
            dropped.append(item)
            REAL_MONGODB_ONLY.append(f"{item.nodeid}: {marker.args[0]}")
        else:
            kept.append(item)
    from tests.store.conftest import DOUBLE_LACKS

    REAL_MONGODB_ONLY.extend(
        f"generated search queries using {kind.__name__} (tests/store/test_search_property.py)"
        for kind in DOUBLE_LACKS)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker, hand the list to the controller, which prints the summary."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["real_mongodb_only"] = REAL_MONGODB_ONLY


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Gather a worker's list (the workers collect, the controller does not)."""
    for line in getattr(node, "workeroutput", {}).get("real_mongodb_only", ()):
        if line not in REAL_MONGODB_ONLY:
            REAL_MONGODB_ONLY.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the cases the MongoDB double does not run (they need a real server)."""
    if REAL_MONGODB_ONLY:
        terminalreporter.section("cases needing a real MongoDB (not run on the double)")
        for line in REAL_MONGODB_ONLY:
            terminalreporter.write_line(line)
