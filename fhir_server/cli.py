"""Command line: `fhir-server serve`, `fhir-server migrate`, `fhir-server load`, and the
administration of the authorization server (`client add-backend`, `client add-app`,
`user add|suspend|reinstate|show`, `keys rotate`, `rpps load`), of the encryption keys (`keys init|status|verify|prune|backup`,
`keys rotate --kek`), of the audit trail (`audit verify`) and of the register of rights
requests (`rights add|forward|answer|overdue`), of breaches (`breach add|notify|overdue`)
and of disclosures to authorities (`disclosure add|list`). Loads and administration commands
leave an AuditEvent each, in the trail the server writes."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast, get_origin
from pathlib import Path

import httpx2 as httpx
import orjson
import uvicorn
from pydantic import ValidationError

from .app import (blind_index, body_codec, build_context, export_policy, key_provider,
                  open_context, open_erasures, open_ledger, open_lifecycle, open_store,
                  recorded_run)
from .bulk import export_organization
from .model.platform_codes import PATIENT_VISIBLE
from .services import export
from .services.kept_registers import SUBJECT_ERASED
from .access import server_principal
from .audit.chain import Chain, Verdict
from .audit.prune import Trimmer, checkpoint_key, verify_pruned
from .audit.events import command_event, figures_events
from .backup import ArchiveError, Restored, Target, back_up_keys, restore, take
from .audit.recorder import AuditRecorder
from .auth.keys import SigningKeys
from .auth.registry import Client, Registry as AuthRegistry
from .auth.rpps import RppsRegister
from .auth.users import Users
from .crypto import (BodyCodec, DataKeys, EnvelopeCodec, KeyProvider, KeyRingError,
                     LedgerError, UnreadableBody, open_provider)
from .interop import (HL7_ERROR, HL7_RECEIVED, Listener, Loader, LoadOptions, MappingFileError,
                      SealedInboxError, listener_for)
from .store.routing import RoutingStore
from .model.errors import FhirError, Kind, fail
from .trials import catalogue, figures_pass, rematch, sync
from .trials.evaluation import EvalError, evaluate_set
from .privacy import breaches, disclosures, register
from .privacy.retention import Lifecycle, unarchive
from .privacy.retention import run as run_retention
from .privacy.retention_policy import PolicyError, load_policy
from .privacy.retention_schedule import SCHEDULED
from . import clock, workers
from .logs import configure
from .search import BlindIndex, Query, default_registry
from .settings import Settings
from .terminology_service import Refused, install
from .store import index_layout
from .store.base import Store
from .store.index_layout import StaleIndex
from .services.principals import practitioners_with_rpps
from .services import notifications
from .notify import runner as notify_runner
from .store.rekey import Rotation, rotate_data_key


T = TypeVar("T")

# Settings whose `fhir-server serve` flag is hand-made; every other field gets `--<name>`.
_OWN_FLAGS = {"demo_data": "--demo", "auth": "--no-auth"}


def _add_setting_flags(serve: argparse.ArgumentParser) -> None:
    """A `--<name>` flag per Settings field, taking what FHIR_SERVER_<NAME> takes."""
    for name, field in Settings.model_fields.items():
        if name in _OWN_FLAGS:
            continue
        flag, variable = f"--{name.replace('_', '-')}", f"FHIR_SERVER_{name.upper()}"
        text = (field.description or "").replace("%", "%%")  # argparse formats help with %
        if field.annotation is bool:
            serve.add_argument(flag, dest=f"setting_{name}", action=argparse.BooleanOptionalAction,
                               help=f"{text} ({variable})")
        else:
            json = get_origin(field.annotation) is list
            serve.add_argument(flag, dest=f"setting_{name}",
                               metavar="JSON" if json else name.upper(), help=f"{text} ({variable}{', a JSON list' if json else ''})")


def _setting_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The environment variables the flags given on the command line set."""
    overrides = {"FHIR_SERVER_DEMO_DATA": "true" if args.demo else None,
                 "FHIR_SERVER_AUTH": "off" if args.no_auth else None}
    for name in Settings.model_fields.keys() - _OWN_FLAGS.keys():
        value = getattr(args, f"setting_{name}")
        overrides[f"FHIR_SERVER_{name.upper()}"] = (
            None if value is None else str(value).lower() if isinstance(value, bool) else value)
    return {k: v for k, v in overrides.items() if v is not None}


def _serve(args: argparse.Namespace) -> int:
    # Worker processes build their own app from the environment, so flags travel through it.
    os.environ.update(_setting_overrides(args))
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"][:1])
            print(f"fhir-server serve: --{name.replace('_', '-')} / FHIR_SERVER_{name.upper()}: "
                  f"{error['msg']}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    if settings.encryption:
        try:  # checked here, before any worker starts: nothing is served without the keys
            body_codec(settings)
        except KeyRingError as error:
            print(f"fhir-server serve: {error}", file=sys.stderr)
            return 2
    try:  # the retention policy, checked before any worker starts (each checks it again)
        load_policy(settings.retention_policy, backup_days=settings.backup_retention_days)
    except PolicyError as error:
        print(f"fhir-server serve: --retention-policy / FHIR_SERVER_RETENTION_POLICY: {error}",
              file=sys.stderr)
        return 2
    try:  # a parameter that cannot be blind-indexed: refused before any worker starts
        blind_index(settings)
    except ValueError as error:
        print(f"fhir-server serve: --protected-params / FHIR_SERVER_PROTECTED_PARAMS: {error}",
              file=sys.stderr)
        return 2
    # An index written under another layout: StaleIndex before any worker starts (main says it).
    asyncio.run(_check_index(settings))
    config = uvicorn.Config(
        "fhir_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=30,
        proxy_headers=True,
    )
    return workers.run(config, settings.workers, settings.log_level)


async def _record(settings: Settings, command: str, action: str,
                  entities: list[dict[str, Any]], problem: str | None = None) -> None:
    """Add the AuditEvent of a command to the trail the server writes (its store and chain)."""
    store = open_store(settings.audit_store_url, codec=body_codec(settings))
    await store.open()
    chain = Chain(settings.data_dir / "audit-chain.db")
    try:
        await AuditRecorder(store, chain).record(command_event(
            command=command, action=action, recorded=clock.instant(), operator=_operator(),
            entities=entities, problem=problem))
    finally:
        chain.close()
        await store.close()


def _operator() -> str:
    """Who runs the command: the operating-system user."""
    try:
        return getpass.getuser()
    except OSError:  # a container user without a name
        return f"uid {os.getuid()}"


def _entity(name: str, role: tuple[str, str], reference: str | None = None,
            **details: object) -> dict[str, Any]:
    """An AuditEvent.entity: what the command acted on, its details as strings."""
    entity: dict[str, Any] = {
        "name": name,
        "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": role[0],
                 "display": role[1]}}
    if reference:
        entity["what"] = {"reference": reference}
    # FHIR has no empty strings or arrays: details without a value are left out.
    if filled := {key: str(value) for key, value in details.items() if str(value)}:
        entity["detail"] = [{"type": key.replace("_", " "), "valueString": value}
                            for key, value in filled.items()]
    return entity


_JOB, _USER, _SECURITY_RESOURCE = ("20", "Job"), ("6", "User"), ("13", "Security Resource")


async def _migrate_async(settings: Settings) -> None:
    for url in (settings.store_url, settings.audit_store_url):
        store = open_store(url)
        try:
            await store.migrate()
        finally:
            await store.close()


async def _check_index(settings: Settings) -> None:
    """StaleIndex if the store's index was written under another layout than `settings`
    give (an empty store records theirs). A store URL of no known kind is left for the
    workers to report, as they do."""
    try:
        store = open_store(settings.store_url, settings.accept_unsafe_store, body_codec(settings),
                           blind_index(settings), index_check=True)
    except ValueError:
        return
    try:
        await store.open()
    finally:
        await store.close()


async def _reindex_async(settings: Settings, store: Store, codec: BodyCodec,
                         blind: BlindIndex | None) -> int:
    await store.open()
    try:
        done = await index_layout.reindex(cast(index_layout.Reindexable, store), codec,
                                          default_registry(), index_layout.layout_of(blind))
    finally:
        await store.close()
    await _record(settings, "reindex", "U", [_entity("search index", _JOB, resources=done)])
    return done


def _reindex(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    try:  # the key ring, the protected list and the store URL, checked before anything is done
        codec, blind = body_codec(settings), blind_index(settings)
        store = open_store(settings.store_url, settings.accept_unsafe_store, codec, blind)
    except (KeyRingError, ValueError) as error:
        print(f"fhir-server reindex: {error}; nothing was rebuilt", file=sys.stderr)
        return 2
    done = asyncio.run(_reindex_async(settings, store, codec, blind))
    print(f"search index rebuilt: {done} resources re-indexed, the layout recorded")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    asyncio.run(_migrate_async(settings))
    print("store and audit store migrated (schema and indexes up to date)")
    return 0


async def _load_async(settings: Settings, args: argparse.Namespace) -> int:
    # SIGTERM stops a load as Ctrl-C does: Bundles in flight finish, the state file is saved.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    options = LoadOptions(concurrency=args.concurrency, state_file=args.state,
                          dedupe_by_identifier=args.dedupe_by_identifier, progress=sys.stderr)
    async with open_context(settings) as context:
        report = await Loader(context, options).run(args.paths)
    problem = "interrupted" if report.interrupted else \
        f"{len(report.failures)} failures" if report.failures else None
    await _record(settings, "load", "C", [_entity(
        " ".join(str(p) for p in args.paths), _JOB, files=report.files, resources=report.resources,
        failures=len(report.failures), **report.outcomes)], problem)
    print(report.summary(), file=sys.stderr)
    return 130 if report.interrupted else 1 if report.failures else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _niceness(text: str) -> int:
    """How much lower to run (os.nice): never higher than the server, as root could."""
    value = int(text)
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError("must be from 0 to 19 (a lower priority, never a higher one)")
    return value


def _load(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"fhir-server load: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    settings = Settings()
    configure(settings.log_level)
    return asyncio.run(_load_async(settings, args))


def _terminology_load(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    try:
        kept = install(args.file, settings.data_dir)
    except (OSError, Refused) as error:
        asyncio.run(_record(settings, "terminology load", "C", [_entity(str(args.file), _JOB)],
                            str(error)))
        print(f"fhir-server terminology load: {error}", file=sys.stderr)
        return 1
    asyncio.run(_record(settings, "terminology load", "C", [_entity(str(args.file), _JOB,
                                                                     kept=kept)]))
    print(f"kept as {kept}; restart the server to index it")
    return 0


@asynccontextmanager
async def _mllp_listener(settings: Settings) -> AsyncIterator[Listener]:
    """The MLLP listener on the configured store, its messages audited in the server's trail."""
    async with open_context(settings) as context:
        assert isinstance(context.store, RoutingStore)
        recorder = AuditRecorder(context.store.audit, Chain(settings.data_dir / "audit-chain.db"),
                                 context.store)
        await recorder.recover()  # AuditEvents a stopped listener (or server) left unrecorded
        listener = listener_for(settings, context, recorder, body_codec(settings))
        try:
            yield listener
        finally:
            await listener.stop()
            recorder.close()


async def _mllp_async(settings: Settings) -> int:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with _mllp_listener(settings) as listener:
        await listener.start()
        print(f"MLLP listening on {settings.mllp_host}:{listener.bound_port}", file=sys.stderr,
              flush=True)
        await stop.wait()
    return 0


def _mllp(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    try:
        return asyncio.run(_mllp_async(settings))
    except MappingFileError as exc:  # the maps are data an operator may edit: say which file
        print(f"fhir-server mllp: {exc}", file=sys.stderr)
        return 2


async def _notify_preferences_async(settings: Settings, args: argparse.Namespace) -> int:
    async with open_context(settings) as context:
        assert isinstance(context.store, RoutingStore)
        recorder = AuditRecorder(context.store.audit, Chain(settings.data_dir / "audit-chain.db"),
                                 context.store)
        schedule = notify_runner.schedule_of(context.store)
        try:
            current = await notifications.preferences(schedule, args.person)
            given = {"channel": args.channel, "language": args.language, "opted_out": args.opted_out}
            wished = dataclasses.replace(current, **{k: v for k, v in given.items() if v is not None})
            await notifications.set_preferences(context, schedule, recorder.record, args.person, wished)
        except FhirError as error:
            print(f"fhir-server notify: {error.issues[0].diagnostics}", file=sys.stderr)
            return 1
        finally:
            recorder.close()
    print(orjson.dumps(dataclasses.asdict(wished)).decode())
    return 0


def _notify_preferences(args: argparse.Namespace) -> int:
    """`fhir-server notify preferences PERSON`: change what a person asked of notifications
    (audited); options not given keep their value."""
    settings = Settings()
    configure(settings.log_level)
    return asyncio.run(_notify_preferences_async(settings, args))


async def _notify_failed_async(settings: Settings) -> int:
    async with open_context(settings) as context:
        for due in await notify_runner.schedule_of(context.store).failed():
            due_at = datetime.fromtimestamp(due.due / 1e6, UTC)
            print(f"{due.key} due {clock.instant(due_at)} attempts {due.attempts}"
                  f"{'' if due.body is not None else ' (body unreadable)'}")
    return 0


def _notify_failed(args: argparse.Namespace) -> int:
    """`fhir-server notify failed`: the scheduled items set aside after repeated faults."""
    settings = Settings()
    configure(settings.log_level)
    return asyncio.run(_notify_failed_async(settings))


async def _hl7_errors_async(settings: Settings, limit: int) -> int:
    async with _mllp_listener(settings) as listener:
        messages = await listener.receiver.inbox.unsettled((HL7_ERROR, HL7_RECEIVED), limit)
    for m in messages:
        print(f"{m.id}\t{m.received}\t{m.state}\t{m.sender or '-'}\t{m.control_id or '-'}\t"
              f"{m.reason or 'not settled (the server stopped while processing it)'}")
    print(f"{len(messages)} messages in error or unsettled", file=sys.stderr)
    await _record(settings, "hl7 errors", "R", [_entity("hl7v2 inbox", _JOB, listed=len(messages))])
    return 0


async def _hl7_replay_async(settings: Settings, ids: list[int]) -> int:
    failed = 0
    async with _mllp_listener(settings) as listener:
        for id in ids:
            try:
                stored = await listener.receiver.inbox.get(id)
            except UnreadableBody as error:  # changed, or its key lost: say so, go on
                print(f"{id}: cannot be opened ({error})", file=sys.stderr)
                failed += 1
                continue
            if stored is None or stored.state not in (HL7_ERROR, HL7_RECEIVED):
                print(f"{id}: {'no such message' if stored is None else 'already ' + stored.state}",
                      file=sys.stderr)
                failed += 1
                continue
            ack = (await listener.receiver.replay(stored)).decode("latin-1")
            msa = next(line for line in ack.split("\r") if line.startswith("MSA"))
            failed += "|AA|" not in msa + "|"
            print(f"{id}: {msa}")
    await _record(settings, "hl7 replay", "C", [_entity("hl7v2 inbox", _JOB, messages=" ".join(
        map(str, ids)))], f"{failed} not applied" if failed else None)
    return 1 if failed else 0


def _hl7_errors(args: argparse.Namespace) -> int:
    return asyncio.run(_hl7_errors_async(Settings(), args.limit))


def _hl7_replay(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    return asyncio.run(_hl7_replay_async(settings, args.ids))


async def _trials_async(settings: Settings, args: argparse.Namespace) -> bool:
    async with open_context(settings) as context:
        if args.action == "rematch":
            print(rematch.summary(await rematch.full(context, partial(open_context, settings),
                                                     args.workers)))
            return False
        if args.action == "load":
            report = await catalogue.store_all(context, catalogue.read_files(args.paths))
            print(report.summary(), file=sys.stderr)
            return bool(report.failures)
        state = sync.SyncState(settings.data_dir / "catalogue-sync.json")
        async with httpx.AsyncClient(timeout=60, follow_redirects=True) as client:
            synced = await sync.sync(context, client, args.base_url, state, full=args.full)
        print(synced.summary(), file=sys.stderr)
        return bool(synced.stored.failures)


async def _figures_async(settings: Settings) -> figures_pass.Report:
    async with open_context(settings) as context:
        assert isinstance(context.store, RoutingStore)
        recorder = AuditRecorder(context.store.audit, Chain(settings.data_dir / "audit-chain.db"),
                                 context.store)
        try:
            return await figures_pass.run(context, figures_audit(recorder))
        finally:
            recorder.close()


def figures_audit(recorder: AuditRecorder) -> figures_pass.Record:
    """The figures pass's audit: one AuditEvent per patient whose record it read, as the server."""
    principal = server_principal(figures_pass.PRINCIPAL)

    async def record(day: str, patients: Sequence[str]) -> None:
        await recorder.record_all(figures_events(recorded=clock.instant(), principal=principal, day=day,
                                                 patients=patients))
    return record


def _figures(args: argparse.Namespace) -> int:
    """`fhir-server figures run`: the day's trial figures of every study (trials/figures_pass.py).
    Exit status 0 done (or done already), 1 another process runs it, 2 it failed."""
    settings = Settings()
    configure(settings.log_level)
    if args.nice:
        os.nice(args.nice)
    try:
        report = asyncio.run(_figures_async(settings))
    except rematch.Busy:
        print("fhir-server figures run: another process computes the day's figures", file=sys.stderr)
        return 1
    except FhirError as error:
        print(f"fhir-server figures run: {error.issues[0].diagnostics}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _trials(args: argparse.Namespace) -> int:
    """Exit status: 0 all stored, 1 some trials refused or the source unreadable."""
    settings = Settings()
    configure(settings.log_level)
    try:
        return int(asyncio.run(_trials_async(settings, args)))
    except rematch.Busy:
        print("fhir-server trials rematch: another process runs the re-match job; try again later",
              file=sys.stderr)
        return 1
    except (FhirError, httpx.HTTPError) as exc:
        reason = "; ".join(i.diagnostics for i in exc.issues) if isinstance(exc, FhirError) else str(exc)
        print(f"fhir-server trials {args.action}: {reason}", file=sys.stderr)
        return 1


def _eval(args: argparse.Namespace) -> int:
    """Exit status: 0 measured, 2 the evaluation set unreadable (docs/matching.md, "Evaluation")."""
    try:
        report = evaluate_set(args.directory, args.today, args.runs or args.directory / "runs")
    except EvalError as error:
        print(f"fhir-server eval: {error}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0


def _record_client(settings: Settings, client: Client, **details: str) -> None:
    asyncio.run(_record(settings, "client add", "C", [_entity(
        client.id, _SECURITY_RESOURCE, kind=client.kind, scope=client.scope, **details)]))


def _add_backend_client(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        jwks = orjson.loads(args.jwks.read_bytes()) if args.jwks else None
        client = AuthRegistry(settings.data_dir / "auth.db").add_backend_client(
            args.client_id, args.scope, jwks=jwks, jwks_uri=args.jwks_uri,
            acts_for=args.acts_for or ())
    except (OSError, ValueError, orjson.JSONDecodeError) as exc:
        print(f"fhir-server client add-backend: {exc}", file=sys.stderr)
        return 2
    _record_client(settings, client, acts_for=" ".join(client.acts_for))
    role = f"; investigator system for {', '.join(client.acts_for)}" if client.acts_for else ""
    print(f"registered backend client {client.id} (scope: {client.scope}{role}); token endpoint "
          f"{settings.auth_url}/token")
    return 0


def _add_app(args: argparse.Namespace) -> int:
    settings = Settings()
    secret = secrets.token_urlsafe(32) if args.confidential else None
    try:
        jwks = orjson.loads(args.jwks.read_bytes()) if args.jwks else None
        client = AuthRegistry(settings.data_dir / "auth.db").add_app(
            args.client_id, args.scope, args.redirect_uri, secret=secret, jwks=jwks,
            jwks_uri=args.jwks_uri)
    except (OSError, ValueError, orjson.JSONDecodeError) as exc:
        print(f"fhir-server client add-app: {exc}", file=sys.stderr)
        return 2
    _record_client(settings, client, redirect_uris=" ".join(args.redirect_uri))
    print(f"registered {client.kind} app {client.id} (scope: {client.scope})")
    if secret:
        print(f"client secret (shown once, store it in the app's configuration): {secret}")
    return 0




async def _practitioner_by_rpps(settings: Settings, rpps: str) -> str:
    """`Practitioner/<id>` of the one stored Practitioner with this RPPS number."""
    async with open_context(settings) as context:
        matches = await practitioners_with_rpps(context, rpps)
    if len(matches) != 1:
        found = "no" if not matches else "several"
        raise ValueError(f"{found} Practitioner with RPPS number {rpps}")
    return f"Practitioner/{matches[0]}"


def _checked_rpps(settings: Settings, number: str) -> str:
    """The RPPS number of an active professional of the loaded register (ValueError why not)."""
    register = RppsRegister(settings.data_dir / "rpps.db")
    try:
        return register.check(number).rpps
    finally:
        register.close()


def _add_user(args: argparse.Namespace) -> int:
    settings = Settings()
    password = getpass.getpass("password (12 characters or more): ") if args.password is None \
        else args.password
    try:
        fhir_user = args.fhir_user or asyncio.run(
            _practitioner_by_rpps(settings, _checked_rpps(settings, args.rpps)))
        user = Users(AuthRegistry(settings.data_dir / "auth.db")).add(
            args.username, password, fhir_user, admin=args.admin)
    except ValueError as exc:
        print(f"fhir-server user add: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_record(settings, "user add", "C", [_entity(
        user.username, _USER, user.fhir_user, administrator=user.admin)]))
    role = " (administrator)" if user.admin else ""
    print(f"user {user.username} is {user.fhir_user}{role}; the second factor is set up at "
          "first login")
    return 0


def _suspension(args: argparse.Namespace) -> int:
    """`user suspend` and `user reinstate`: the account's tokens stop (or may start again)
    at their next use; audited with the reason."""
    settings = Settings()
    suspend = args.action == "suspend"
    reason = (args.reason or "").strip()
    if suspend and not 1 <= len(reason) <= 500:
        print("fhir-server user suspend: --reason is 1 to 500 characters; nothing changed",
              file=sys.stderr)
        return 2
    try:
        user = Users(AuthRegistry(settings.data_dir / "auth.db")).set_suspended(args.username, suspend)
    except ValueError as exc:
        print(f"fhir-server user {args.action}: {exc}; nothing changed", file=sys.stderr)
        return 2
    asyncio.run(_record(settings, f"user {args.action}", "U", [_entity(
        user.username, _USER, user.fhir_user, suspended=suspend, reason=reason)]))
    print(f"user {user.username} is {'suspended' if suspend else 'reinstated'}")
    return 0


def _show_user(args: argparse.Namespace) -> int:
    """`user show`: the account, whether suspended, and the terms it accepted."""
    users = Users(AuthRegistry(Settings().data_dir / "auth.db"))
    user = users.get(args.username)
    if user is None:
        print(f"fhir-server user show: no user {args.username!r}", file=sys.stderr)
        return 2
    print(f"user {user.username} is {user.fhir_user}{' (administrator)' if user.admin else ''}"
          f"{'; suspended' if user.suspended else ''}")
    for version, when in users.accepted_terms(user.username).items():
        print(f"accepted the terms version {version} on "
              f"{datetime.fromtimestamp(when, UTC).isoformat(timespec='seconds')}")
    return 0


class _Noting:
    """The body codec `audit verify` reads with: a body it cannot open is noted, as shredded
    (its key destroyed by an erasure) or changed, and read as an empty event."""

    def __init__(self, codec: BodyCodec) -> None:
        self.codec = codec
        self.shredded: set[str] = set()

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        return self.codec.seal(resource_type, id, version, body, patients)

    def prepare(self, resources: Iterable[tuple[str, Collection[str]]]) -> None:
        self.codec.prepare(resources)

    def ready(self, stored: Iterable[bytes]) -> None:
        self.codec.ready(stored)

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        try:
            return self.codec.open(resource_type, id, version, stored)
        except UnreadableBody as error:
            if error.destroyed:
                self.shredded.add(id)
            return b"{}"


def _load_rpps(args: argparse.Namespace) -> int:
    settings = Settings()
    register = RppsRegister(settings.data_dir / "rpps.db")
    try:
        with args.file.open(encoding="utf-8") as lines:
            report = register.load(lines, str(args.file))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"fhir-server rpps load: {exc}", file=sys.stderr)
        return 2
    finally:
        register.close()
    for number, reason in report.skipped:
        print(f"line {number}: skipped, {reason}", file=sys.stderr)
    asyncio.run(_record(settings, "rpps load", "U", [_entity(
        args.file.name, _JOB, active=report.active, no_longer_listed=report.dropped,
        skipped_lines=len(report.skipped))]))
    print(f"RPPS register: {report.active} professionals active, {report.dropped} no longer "
          f"listed, {len(report.skipped)} lines skipped")
    return 0


async def _audit_verdict(settings: Settings) -> Verdict:
    codec = _Noting(body_codec(settings))
    store = open_store(settings.audit_store_url, codec=codec)
    await store.open()
    try:
        events: dict[str, dict[str, Any]] = {}
        query = Query("AuditEvent", count=1000)
        page = await store.search(query)
        while True:
            events.update((v.id, orjson.loads(v.body)) for v in page.matches if v.body)
            if page.next_cursor is None:
                break
            page = await store.search(query, page.next_cursor)
    finally:
        await store.close()
    chain = Chain(settings.data_dir / "audit-chain.db")
    try:
        links = chain.links()
    finally:
        chain.close()
    for id in codec.shredded:
        del events[id]
    # Verified from the latest pruning's checkpoint (audit/prune.py); a checkpoint signed by
    # no key ring of ours (none here: the empty key) is reported, not trusted.
    provider = key_provider(settings, codec.codec)
    key = checkpoint_key(provider.index_key("audit-checkpoint")) if provider else b""
    state = Trimmer(store, chain.path, key).state()
    return verify_pruned(links, events, [*events, *codec.shredded], codec.shredded, state)[0]


def _verify_audit(args: argparse.Namespace) -> int:
    settings = Settings()
    # Checked before anything is opened: opening would create an empty trail, found "intact".
    if not (settings.data_dir / "audit-chain.db").is_file():
        print(f"fhir-server audit verify: no audit trail in {settings.data_dir.resolve()} (no "
              "audit-chain.db); run it where the server keeps its files, or set "
              "FHIR_SERVER_DATA_DIR", file=sys.stderr)
        return 2
    verdict = asyncio.run(_audit_verdict(settings))
    for problem in verdict.problems:
        print(problem)
    state = "intact" if not verdict.problems else f"{len(verdict.problems)} problems"
    shredded = f" ({verdict.shredded} events erased with their patient's key)" * bool(verdict.shredded)
    print(f"audit trail: {verdict.checked} links checked, {state}{shredded}", file=sys.stderr)
    return 0 if not verdict.problems else 1


@dataclasses.dataclass(frozen=True)
class _Stores:
    """What backups and restores work on: the stores `settings` name (open), the audit
    chain, the body codec and the key ring."""

    codec: BodyCodec
    provider: KeyProvider
    main: Store
    audit: Store
    chain: Chain


@asynccontextmanager
async def _stores(settings: Settings, index_check: bool = True) -> AsyncIterator[_Stores]:
    """The stores, the chain and the keys a backup or a restore works on; `index_check` off
    for a backup, which copies bodies, never index rows (a stale index is backed up too)."""
    codec = body_codec(settings)
    provider = key_provider(settings, codec)
    if provider is None:
        raise KeyRingError(f"backups are encrypted under the key ring, and there is none at "
                           f"{settings.key_ring_path}")
    main = open_store(settings.store_url, settings.accept_unsafe_store, codec,
                      blind_index(settings), index_check)
    audit = open_store(settings.audit_store_url, settings.accept_unsafe_store, codec)
    chain = Chain(settings.data_dir / "audit-chain.db")
    try:
        await main.open()
        await audit.open()
        yield _Stores(codec, provider, main, audit, chain)
    finally:
        chain.close()
        await main.close()
        await audit.close()


def _refusing(command: str, work: Coroutine[Any, Any, T], refusals: tuple[type[Exception], ...],
              note: str = "") -> T | None:
    """Run `work`; None, once the refusal is printed, if it raises one of `refusals`."""
    try:
        return asyncio.run(work)
    except refusals as exc:
        print(f"fhir-server {command}: {exc}{note}", file=sys.stderr)
        return None


async def _backup_async(settings: Settings, directory: Path) -> tuple[Path, dict[str, int]]:
    async with _stores(settings, index_check=False) as stores:
        return await take(main=stores.main, audit=stores.audit, chain=stores.chain,
                          provider=stores.provider, directory=directory,
                          keep_days=settings.backup_retention_days, operator=_operator(),
                          record=AuditRecorder(stores.audit, stores.chain).record)


def _backup(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    taken = _refusing("backup", _backup_async(settings, args.dir or settings.backup_path),
                      (KeyRingError, OSError))
    if taken is None:
        return 2
    path, counts = taken
    print(f"backup {path}: {counts['versions']} versions, {counts['audit']} AuditEvents, "
          f"{counts['links']} chain links; archives older than "
          f"{settings.backup_retention_days} days pruned")
    return 0


async def _restore_async(settings: Settings, archive: Path) -> Restored:
    async with _stores(settings) as stores:
        recorder = AuditRecorder(stores.audit, stores.chain)
        done = await restore(archive, Target(
            stores.main, stores.audit, stores.chain, stores.provider, stores.codec,
            open_ledger(settings, stores.codec), default_registry(), recorder.record))
        await recorder.record(command_event(
            command="restore", action="C", recorded=clock.instant(), operator=_operator(),
            entities=[_entity(archive.name, _JOB, versions=done.versions, audit=done.audit,
                              links=done.links, left_out=done.left_out,
                              erasures_replayed=len(done.replayed))]))
        return done


def _restore(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    if not args.archive.is_file():
        print(f"fhir-server restore: no such archive: {args.archive}", file=sys.stderr)
        return 2
    done = _refusing("restore", _restore_async(settings, args.archive),
                     (ArchiveError, KeyRingError, LedgerError, ValueError, StaleIndex),
                     "; nothing was restored")
    if done is None:
        return 2
    print(f"restored {done.versions} versions (indexed), {done.audit} AuditEvents, "
          f"{done.links} chain links; {done.left_out} versions of erased patients left out; "
          f"{len(done.replayed)} erasures since the backup done again")
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.kek:
        return _rotate_kek(settings)
    if args.data:
        return _rotate_data(settings, args.data)
    keys = SigningKeys(settings.data_dir / "signing-keys.json", settings.token_lifetime)
    kid = keys.rotate()
    asyncio.run(_record(settings, "keys rotate", "U", [_entity(kid, _SECURITY_RESOURCE)]))
    print(f"new signing key {kid}; the previous one stays published for "
          f"{settings.token_lifetime} s")
    return 0


def _data_keys(settings: Settings) -> DataKeys:
    return DataKeys(open_provider(settings), settings.data_keys_path, settings.data_key_cache)


def _keys_init(args: argparse.Namespace) -> int:
    settings = Settings()
    ring = open_provider(settings, create=True)
    print(f"new key ring: {ring.status().provider}; keep it, and its backups, apart from the "
          "data and its backups (docs/security.md)")
    return 0


def _keys_status(args: argparse.Namespace) -> int:
    settings = Settings()
    keys = _data_keys(settings)
    ring, data = keys.provider.status(), keys.status()
    print(f"key ring: {ring.provider}\nactive key-encryption key: {ring.active}")
    for kek in ring.keks:
        retired = (f" (retired {clock.instant(ring.retired[kek])}: unwraps only)"
                   if kek in ring.retired else "")
        print(f"  key-encryption key {kek}: wraps {data.by_kek.get(kek, 0)} data keys{retired}")
    print(f"data keys: {data.keys} for {data.scopes} scopes ({settings.data_keys_path})")
    stale = data.keys - data.by_kek.get(ring.active, 0)
    print("re-wrap: done" if not stale else f"re-wrap: {stale} data keys under older keys")
    return 0


def _keys_verify(args: argparse.Namespace) -> int:
    problems = _data_keys(Settings()).verify()
    for problem in problems:
        print(problem)
    print(f"data keys: {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


def _prune_keys(settings: Settings, keys: DataKeys) -> str:
    """Destroy the retired keys no kept backup needs any more; what was destroyed, in words."""
    data, keks = keys.prune(clock.now() - timedelta(days=settings.backup_retention_days))
    return (f"{data} retired data keys and {len(keks)} retired key-encryption keys older than "
            f"the {settings.backup_retention_days}-day backup retention destroyed")


def _keys_prune(args: argparse.Namespace) -> int:
    settings = Settings()
    print(_prune_keys(settings, _data_keys(settings)))
    return 0


def _keys_backup(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        ring = settings.key_ring_path if settings.key_provider == "local" else open_provider(settings)
        copied = back_up_keys(ring, settings.data_keys_path, settings.erasure_ledger_path, args.dest)
    except (KeyRingError, OSError) as error:
        print(f"fhir-server keys backup: {error}", file=sys.stderr)
        return 2
    print(f"key backup in {args.dest} (0600): {', '.join(path.name for path in copied)}; keep "
          "it apart from the data archives (docs/backup-and-erasure.md)")
    return 0


def _rotate_kek(settings: Settings) -> int:
    """A new key-encryption key; every data key re-wrapped under it, in batches, while the
    server serves (a data key itself never changes); the older ones stay, retired, for the
    archives taken under them, until they are older than the backup retention."""
    keys = _data_keys(settings)
    older = set(keys.provider.status().keks)
    kek = keys.provider.rotate()
    rewrapped = 0
    for _ in range(2):
        while done := keys.rewrap():
            rewrapped += done
        # Again after a while: a key a server wrapped just before the rotation and stored
        # just after it (servers wrap with the KEK the file names at that moment).
        time.sleep(1.0)
    pruned = _prune_keys(settings, keys)
    asyncio.run(_record(settings, "keys rotate", "U", [_entity(
        kek, _SECURITY_RESOURCE, key="key-encryption key", rewrapped=rewrapped)]))
    print(f"new key-encryption key {kek}; {rewrapped} data keys re-wrapped; {len(older)} older "
          f"ones kept retired (they open older backups); {pruned}")
    return 0


async def _rotate_data_async(settings: Settings, scope: str) -> Rotation:
    keys = _data_keys(settings)
    codec = EnvelopeCodec(keys)
    stores = [open_store(url, codec=codec) for url in (settings.store_url, settings.audit_store_url)]
    for store in stores:
        await store.open()
    try:
        return await rotate_data_key(keys, stores, scope)  # type: ignore[arg-type]
    finally:
        for store in stores:
            await store.close()


def _rotate_data(settings: Settings, scope: str) -> int:
    """A new data key for `scope`; what its older keys sealed is sealed again, then they go."""
    if not re.fullmatch(r"Patient/[A-Za-z0-9\-.]{1,64}|[A-Z][A-Za-z]{1,63}", scope):
        print("fhir-server keys rotate: --data takes Patient/<id> or a resource type",
              file=sys.stderr)
        return 2
    done = asyncio.run(_rotate_data_async(settings, scope))
    asyncio.run(_record(settings, "keys rotate", "U", [_entity(
        done.key_id.hex(), _SECURITY_RESOURCE, key=f"data key of {scope}",
        resealed=done.resealed, retired=done.retired)]))
    print(f"new data key {done.key_id.hex()} for {scope}; {done.resealed} versions sealed "
          f"again; {done.retired} older keys retired (they open older backups); "
          f"{_prune_keys(settings, _data_keys(settings))}")
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from None


async def _rights_async(settings: Settings, args: argparse.Namespace
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    """Do `rights <action>`: the audit entities and the lines to print."""
    on = args.on or clock.now().date()
    async with open_context(settings) as context:
        if args.action == "overdue":
            late = await register.overdue(context, on)
            return [_entity("overdue rights requests", _JOB, on=on, count=len(late))], [
                f"Task/{item.id} {item.right} {item.patient} received {item.received}: "
                f"{item.missed} deadline {item.deadline} missed" for item in late]
        if args.action == "add":
            task = await register.add(context, patient=args.patient, right=args.right,
                                      controller=args.controller, received=on)
        else:
            task = await getattr(register, args.action)(context, args.id, on)
    line = (f"Task/{task['id']} {task['code']['text']} {task['status']}; forward by "
            f"{task['input'][0]['valueDate']}, answer by {task['restriction']['period']['end']}")
    return [_entity(f"Task/{task['id']}", ("4", "Domain Resource"), f"Task/{task['id']}",
                    right=task["code"]["text"], status=task["status"])], [line]


_RegisterWork = Callable[[Settings, argparse.Namespace],
                         Coroutine[Any, Any, tuple[list[dict[str, Any]], list[str]]]]


def _register_command(args: argparse.Namespace, work: _RegisterWork, none: str) -> int:
    """Run a register's `<command> <action>`: exit 2 on a refusal (nothing stored, nothing
    audited), else its AuditEvent and its lines (`none` when there are none)."""
    settings = Settings()
    configure(settings.log_level)
    command = f"{args.command} {args.action}"
    done = _refusing(command, work(settings, args), (register.RegisterError,),
                     "; nothing was stored")
    if done is None:
        return 2
    entities, lines = done
    action = {"add": "C", "overdue": "R"}.get(args.action, "U")
    asyncio.run(_record(settings, command, action, entities))
    print("\n".join(lines) if lines else none)
    return 0


def _rights(args: argparse.Namespace) -> int:
    return _register_command(args, _rights_async, "no rights request overdue")


def _moment(text: str) -> datetime:
    """A date and time (ISO 8601; UTC when no offset is given)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date and time (YYYY-MM-DDTHH:MM[+HH:MM]): {text}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _breach_async(settings: Settings, args: argparse.Namespace
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    """Do `breach <action>`: the audit entities and the lines to print."""
    at = args.at or clock.now()
    async with open_context(settings) as context:
        if args.action == "overdue":
            late = await breaches.overdue(context, at)
            return [_entity("overdue breaches", _JOB, at=at.isoformat(), count=len(late))], [
                f"Task/{item.id} discovered {item.discovered.isoformat()}: {item.party} not told "
                f"by {item.deadline.isoformat()}" for item in late]
        if args.action == "add":
            task = await breaches.add(context, discovered=at, start=args.start, end=args.end,
                                      controller=args.controller, description=args.description,
                                      actors=args.actor or (), clients=args.client or ())
        else:
            task = await breaches.notify(context, args.id, args.party, at)
    deadlines = {i["type"]["coding"][0]["code"]: i["valueDateTime"] for i in task["input"]
                 if "valueDateTime" in i}
    patients = [o["valueReference"]["reference"] for o in task.get("output", [])
                if "valueReference" in o]
    lines = [f"Task/{task['id']} breach {task['status']}; tell the controller by "
             f"{deadlines['controller-deadline']}, the authority by {deadlines['authority-deadline']}",
             f"{len(patients)} patients exposed{': ' if patients else ''}{' '.join(patients)}"]
    return [_entity(f"Task/{task['id']}", ("4", "Domain Resource"), f"Task/{task['id']}",
                    status=task["status"], exposed=len(patients))], lines


def _breach(args: argparse.Namespace) -> int:
    return _register_command(args, _breach_async, "no breach overdue")


async def _disclosure_async(settings: Settings, args: argparse.Namespace
                            ) -> tuple[list[dict[str, Any]], list[str]]:
    """Do `disclosure <action>`: the audit entities (the Tasks, never the patient: a
    disclosure the patient may not see stays out of their access history) and the lines."""
    async with open_context(settings) as context:
        if args.action == "add":
            tasks = [await disclosures.add(
                context, patient=args.patient, requester=args.requester,
                legal_basis=args.legal_basis, given=args.given, resources=args.resource or (),
                visible=args.patient_visible, on=args.on or clock.now().date(),
                ledger=open_ledger(settings, body_codec(settings)))]
        elif args.erased:
            tasks = await disclosures.of_erased(context)
        else:
            tasks = await disclosures.of_patient(context, args.patient)
    entities = [_entity(f"Task/{t['id']}", ("4", "Domain Resource"), f"Task/{t['id']}") for t in tasks]
    lines = [f"Task/{t['id']} {t['authoredOn']} to {t['requester']['display']} "
             f"({t['reasonCode']['text']}): {t['description']}"
             f"{_disclosure_seen(t)}" for t in tasks]
    return entities if args.action == "add" else [_entity(
        "disclosures", _JOB, count=len(tasks)), *entities], lines


def _disclosure_seen(task: dict[str, Any]) -> str:
    """What `disclosure list` says of who may see a disclosure."""
    tags = {tag.get("code") for tag in task.get("meta", {}).get("tag", ())}
    if SUBJECT_ERASED in tags:
        return f"; about {task['for']['display']}"
    return "; the patient may see it" if PATIENT_VISIBLE in tags else ""


def _disclosure(args: argparse.Namespace) -> int:
    return _register_command(args, _disclosure_async, "no disclosure")


async def _export_async(settings: Settings, args: argparse.Namespace
                        ) -> tuple[list[dict[str, Any]], list[str]]:
    """Do `export <action>` (docs/export.md): the audit entities and the lines to print."""
    policy = export_policy(settings)
    async with open_context(settings) as context:
        if args.action == "list":
            return [], [f"{job.id} {job.state} client {job.client_id} attempts {job.attempts} "
                        f"{progress.resources} resources" for job, progress in await export.jobs(context)]
        if args.action == "status":
            found = await export.status(context, args.id, policy)
            text = found.failure or found.progress or orjson.dumps(
                found.manifest, option=orjson.OPT_INDENT_2).decode()
            return [], [f"{args.id}: {'failed: ' if found.failure else ''}{text}"]
        if args.action == "cancel":
            await export.cancel(context, args.id)
            return [_entity(f"export job {args.id}", _JOB)], [f"{args.id} cancelled, its files deleted"]
        assert isinstance(context.store, RoutingStore)
        chain = Chain(settings.data_dir / "audit-chain.db")
        try:
            written = await export_organization(context, args.organization, args.out, policy,
                                                AuditRecorder(context.store.audit, chain).record_all)
        finally:
            chain.close()
    return [_entity(f"Organization/{args.organization}", _JOB, f"Organization/{args.organization}",
                    directory=written.directory, **written.resources)], [
        f"{written.files} files in {written.directory}: " + ", ".join(
            f"{count} {kind}" for kind, count in written.resources.items())]


def _export(args: argparse.Namespace) -> int:
    settings = Settings()
    configure(settings.log_level)
    command = f"export {args.action}"
    done = _refusing(command, _export_async(settings, args), (FhirError, FileExistsError, RuntimeError))
    if done is None:
        return 1
    entities, lines = done
    if entities:
        asyncio.run(_record(settings, command, "D" if args.action == "cancel" else "R", entities))
    print("\n".join(lines) if lines else "no export jobs")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `fhir-server`."""
    root = argparse.ArgumentParser(prog="fhir-server", description="FHIR R4 server")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    _add_setting_flags(serve)
    serve.add_argument("--demo", action="store_true",
                       help="load the bundled demo data set when the store is empty "
                            "(FHIR_SERVER_DEMO_DATA)")
    serve.add_argument("--no-auth", action="store_true",
                       help="NO AUTHENTICATION: every request gets full access (local "
                            "development and demo only; FHIR_SERVER_AUTH=off)")
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser(
        "migrate", help="create or update the store's schema and indexes (run before serve)")
    migrate.set_defaults(run=_migrate)
    reindex = commands.add_parser(
        "reindex", help="rebuild the store's search index in place under the settings' "
        "protected parameters and index keys (the server stopped; docs/blind-indexes.md)")
    reindex.set_defaults(run=_reindex)
    load = commands.add_parser(
        "load", help="load FHIR files into the store (FHIR_SERVER_STORE / FHIR_SERVER_DATA_DIR)",
        description="Load Bundles (.json), single resources (.json) and NDJSON (.ndjson), "
                    "files or directories (recursively), through the service layer. "
                    "Exit status: 0 all stored, 1 some failed, 130 interrupted.")
    load.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    load.add_argument("--concurrency", type=_positive, default=4, metavar="N",
                      help="Bundles in flight at once (default 4)")
    load.add_argument("--state", type=Path, metavar="FILE",
                      help="record finished files and lines here; a re-run skips them")
    load.add_argument("--dedupe-by-identifier", action=argparse.BooleanOptionalAction, default=True,
                      help="create identified Patients, Organizations and Practitioners only if "
                           "no resource has their identifier (default: on)")
    load.set_defaults(run=_load)
    trials = commands.add_parser("trials", help="the trial catalogue (ECLAIRE; docs/catalogue.md)")
    trial_actions = trials.add_subparsers(dest="action", required=True)
    trials_load = trial_actions.add_parser(
        "load", help="store ECLAIRE trials from Bundles (.json) or NDJSON (.ndjson), files or "
                     "directories; unchanged trials make no new version")
    trials_load.add_argument("paths", nargs="+", type=Path, metavar="FILE|DIR")
    trials_load.set_defaults(run=_trials)
    trials_sync = trial_actions.add_parser(
        "sync", help="pull the trials changed since the last sync from an ECLAIRE-compatible base")
    trials_sync.add_argument("base_url", metavar="BASE_URL")
    trials_sync.add_argument("--full", action="store_true",
                             help="pull everything and mark the trials the base no longer lists "
                                  "as closed")
    trials_sync.set_defaults(run=_trials)
    trials_rematch = trial_actions.add_parser(
        "rematch", help="match every trial against every patient a trial-matching subscriber may "
                        "hear of, telling them of new matches (docs/matching.md, \"The re-match job\"); "
                        "resumes a run cut short")
    trials_rematch.add_argument("--workers", type=_positive, default=1, metavar="N",
                                help="processes evaluating the patients, split in chunks (default 1)")
    trials_rematch.set_defaults(run=_trials)
    figures = commands.add_parser(
        "figures", help="investigators' trial figures (docs/matching.md, \"The daily figures pass\")"
    ).add_subparsers(dest="action", required=True)
    figures_run = figures.add_parser(
        "run", help="compute today's figures of every study of the catalogue ahead, unless done "
                    "already (the server does it at start and when the day changes)")
    figures_run.add_argument("--nice", type=_niceness, default=0, metavar="N",
                             help="lower this process's priority by N first (os.nice)")
    figures_run.set_defaults(run=_figures)
    terminology = commands.add_parser(
        "terminology", help="code systems the operator loads (docs/terminology.md)"
    ).add_subparsers(dest="action", required=True)
    terminology_load = terminology.add_parser(
        "load", help="keep a complete CodeSystem (JSON) built from a licensed distribution "
                     "(MedDRA, ICD-10, ICD-O-3) in <data_dir>/terminology; indexed at start")
    terminology_load.add_argument("file", type=Path, metavar="FILE")
    terminology_load.set_defaults(run=_terminology_load)
    evaluation = commands.add_parser("eval", help="matching quality on a judged set: NDCG@10, P@10 "
                                     "against BM25 (docs/matching.md)")
    evaluation.add_argument("directory", type=Path, metavar="DIR")
    evaluation.add_argument("--today", type=date.fromisoformat, default=date.today(), metavar="YYYY-MM-DD")
    evaluation.add_argument("--runs", type=Path, metavar="DIR", help="where the TREC run files go (DIR/runs)")
    evaluation.set_defaults(run=_eval)
    client = commands.add_parser("client", help="register OAuth clients").add_subparsers(
        dest="action", required=True)
    backend = client.add_parser(
        "add-backend", help="register a SMART Backend Services client (private_key_jwt)")
    backend.add_argument("client_id")
    backend.add_argument("--scope", required=True,
                         help="the most it may be granted, e.g. 'system/Communication.rs'")
    keys_from = backend.add_mutually_exclusive_group(required=True)
    keys_from.add_argument("--jwks", type=Path, metavar="FILE",
                           help="its public keys, a JWK Set file")
    keys_from.add_argument("--jwks-uri", metavar="URL", help="where it publishes its JWK Set")
    backend.add_argument("--acts-for", action="append", metavar="Type/id",
                         help="make it an investigator site system receiving referrals as this "
                              "PractitionerRole, CareTeam or Group (repeat for several); it "
                              "then reaches its referrals and nothing else")
    backend.set_defaults(run=_add_backend_client)
    app = client.add_parser("add-app", help="register a SMART app (authorization code + PKCE)")
    app.add_argument("client_id")
    app.add_argument("--scope", required=True,
                     help="the most it may be granted, e.g. 'openid fhirUser launch/patient "
                          "patient/*.rs offline_access'")
    app.add_argument("--redirect-uri", action="append", required=True, metavar="URL",
                     help="an exact redirect URI (repeat for several)")
    kind = app.add_mutually_exclusive_group()
    kind.add_argument("--confidential", action="store_true",
                      help="give it a client secret (printed once); public apps use PKCE alone")
    kind.add_argument("--jwks", type=Path, metavar="FILE",
                      help="its public JWK Set: it authenticates with private_key_jwt")
    kind.add_argument("--jwks-uri", metavar="URL", help="where it publishes its public JWK Set")
    app.set_defaults(run=_add_app)
    user = commands.add_parser("user", help="people who sign in").add_subparsers(
        dest="action", required=True)
    add_user = user.add_parser("add", help="create a user linked to a FHIR resource")
    add_user.add_argument("username")
    who = add_user.add_mutually_exclusive_group(required=True)
    who.add_argument("--fhir-user", metavar="Type/id",
                     help="Patient/<id>, Practitioner/<id> or RelatedPerson/<id>")
    who.add_argument("--rpps", metavar="NUMBER",
                     help="a health professional active in the loaded RPPS register: the "
                          "stored Practitioner with this RPPS number")
    add_user.add_argument("--password", help="omit to be asked (not echoed)")
    add_user.add_argument("--admin", action="store_true",
                          help="a platform administrator: no access to health data except by "
                               "break-glass with a stated reason (a Practitioner)")
    add_user.set_defaults(run=_add_user)
    suspend = user.add_parser("suspend", help="suspend an account: it signs in no more and its "
                              "tokens stop working at once")
    suspend.add_argument("username")
    suspend.add_argument("--reason", required=True, help="why (audited)")
    suspend.set_defaults(run=_suspension)
    reinstate = user.add_parser("reinstate", help="lift an account's suspension")
    reinstate.add_argument("username")
    reinstate.add_argument("--reason", help="why (audited)")
    reinstate.set_defaults(run=_suspension)
    show = user.add_parser("show", help="an account: suspended or not, terms accepted")
    show.add_argument("username")
    show.set_defaults(run=_show_user)
    rpps = commands.add_parser("rpps", help="the RPPS register of health professionals")
    load_rpps = rpps.add_subparsers(dest="action", required=True).add_parser(
        "load", help="replace the register with an ANS extract (PS_LibreAcces_Personne_activite, "
                     "pipe-separated; docs/validation.md)")
    load_rpps.add_argument("file", type=Path)
    load_rpps.set_defaults(run=_load_rpps)
    keys = commands.add_parser("keys", help="token signing keys and the encryption key ring "
                               "(docs/security.md)").add_subparsers(dest="action", required=True)
    rotate = keys.add_parser("rotate", help="sign new tokens with a new key (--signing, the "
                             "default), or rotate an encryption key (--kek, --data)")
    which = rotate.add_mutually_exclusive_group()
    which.add_argument("--signing", action="store_true", help="the token signing key (default)")
    which.add_argument("--kek", action="store_true",
                       help="the key-encryption key: every data key is re-wrapped under a new "
                            "one while the server runs; the older ones stay retired for older "
                            "backups until past FHIR_SERVER_BACKUP_RETENTION_DAYS")
    which.add_argument("--data", metavar="SCOPE",
                       help="the data key of Patient/<id> (or of a resource type outside "
                            "patient compartments): what it sealed is sealed again under a new "
                            "one while the server runs; an interrupted run resumes")
    rotate.set_defaults(run=_rotate_keys)
    keys.add_parser("init", help="create the key ring (FHIR_SERVER_KEY_RING)").set_defaults(
        run=_keys_init)
    keys.add_parser("status", help="the key ring and the data keys").set_defaults(run=_keys_status)
    keys.add_parser("verify", help="unwrap every data key (exit 1 on any problem)").set_defaults(
        run=_keys_verify)
    keys.add_parser("prune", help="destroy retired keys older than the backup retention (no "
                    "kept archive needs them)").set_defaults(run=_keys_prune)
    key_backup = keys.add_parser("backup", help="copy the key ring, datakeys.db and the erasure "
                                 "ledger, consistently, into DEST (keep it apart from archives)")
    key_backup.add_argument("dest", type=Path, metavar="DEST")
    key_backup.set_defaults(run=_keys_backup)
    backup = commands.add_parser(
        "backup", help="write an encrypted archive of the store and the audit trail "
        "(FHIR_SERVER_BACKUP_DIR), and prune old ones")
    backup.add_argument("--dir", type=Path, metavar="DIR",
                        help="where to write it (default: FHIR_SERVER_BACKUP_DIR)")
    backup.set_defaults(run=_backup)
    restore_command = commands.add_parser(
        "restore", help="rebuild the (empty) store, its indexes and the audit trail from an "
        "archive, then replay the erasure ledger; run it before serving")
    restore_command.add_argument("archive", type=Path, metavar="ARCHIVE")
    restore_command.set_defaults(run=_restore)
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True)
    check = audit.add_parser("verify", help="check the hash chain against the stored "
                                            "AuditEvents (exit 1 on any change or removal)")
    check.set_defaults(run=_verify_audit)
    retention = commands.add_parser("retention", help="the data's lifecycle (docs/privacy.md)"
                                    ).add_subparsers(dest="action", required=True)
    retention_run = retention.add_parser("run", help="apply the retention policy today; prints "
                                         "what it did, rule by rule")
    retention_run.add_argument("--dry-run", action="store_true",
                               help="print what a run would do, change nothing")
    retention_run.add_argument("--nice", type=_niceness, default=0, metavar="N",
                               help="lower this process's priority by N first (os.nice), so "
                               "that a server on the same machine serves its requests first")
    retention_run.add_argument("--scheduled", action="store_true",
                               help="the server's own run (privacy/retention_schedule.py): "
                               "its AuditEvent names the server, not the operator")
    retention_run.set_defaults(run=_retention)
    retention.add_parser("check", help="check the retention policy file; prints its "
                         "periods").set_defaults(run=_retention, dry_run=True)
    bring_back = retention.add_parser("unarchive", help="make an archived second-opinion "
                                      "report available again")
    bring_back.add_argument("reference", metavar="DiagnosticReport/ID")
    bring_back.set_defaults(run=_retention, dry_run=False)
    close_account = retention.add_parser("close-account", help="close a user account now (its "
                                         "data erased after the policy's accounts.exportable)")
    close_account.add_argument("username")
    close_account.add_argument("--asked", action="store_true", help="its holder asked for the "
                               "deletion: erased within the policy's accounts.deletion-within")
    close_account.set_defaults(run=_retention, dry_run=False)
    rights = commands.add_parser("rights", help="the register of rights requests "
                                 "(docs/privacy.md)").add_subparsers(dest="action", required=True)
    add_request = rights.add_parser("add", help="register a request; prints its deadlines")
    add_request.add_argument("--patient", required=True, help="Patient/<id>: who asks")
    add_request.add_argument("--right", required=True, help=", ".join(register.RIGHTS))
    add_request.add_argument("--controller", required=True, help="Organization/<id>")
    add_request.add_argument("--on", type=_day, help="day received (default: today)")
    for step in ("forward", "answer"):
        advance = rights.add_parser(step, help=f"record that the request was {step}ed")
        advance.add_argument("id", help="the Task's id")
        advance.add_argument("--on", type=_day, help=f"day {step}ed (default: today)")
    late = rights.add_parser("overdue", help="open requests past a deadline")
    late.add_argument("--on", type=_day, help="as of this day (default: today)")
    for action in rights.choices.values():
        action.set_defaults(run=_rights)
    breach = commands.add_parser("breach", help="the register of personal data breaches "
                                 "(docs/privacy.md)").add_subparsers(dest="action", required=True)
    add_breach = breach.add_parser("add", help="register a suspected breach; prints its "
                                   "deadlines and the patients the audit trail shows exposed")
    add_breach.add_argument("--from", dest="start", type=_moment, required=True,
                            help="start of the exposure window")
    add_breach.add_argument("--to", dest="end", type=_moment, required=True,
                            help="end of the exposure window")
    add_breach.add_argument("--actor", action="append", metavar="Type/id",
                            help="an agent involved, as the audit trail names it (repeat)")
    add_breach.add_argument("--client", action="append", metavar="CLIENT_ID",
                            help="an OAuth client involved (repeat)")
    add_breach.add_argument("--controller", required=True, help="Organization/<id>")
    add_breach.add_argument("--description", required=True, help="what happened")
    add_breach.add_argument("--at", type=_moment, help="when it was discovered (default: now)")
    notify = breach.add_parser("notify", help="record that a party was told")
    notify.add_argument("id", help="the Task's id")
    notify.add_argument("party", choices=sorted(breaches.PARTIES))
    notify.add_argument("--at", type=_moment, help="when (default: now)")
    late_breaches = breach.add_parser("overdue", help="parties not told in time")
    late_breaches.add_argument("--at", type=_moment, help="as of (default: now)")
    for action in breach.choices.values():
        action.set_defaults(run=_breach)
    disclosure = commands.add_parser("disclosure", help="the register of disclosures to "
                                     "authorities (docs/privacy.md)").add_subparsers(
        dest="action", required=True)
    add_disclosure = disclosure.add_parser("add", help="register what was given to an authority")
    add_disclosure.add_argument("--patient", required=True, help="Patient/<id>: about whom")
    add_disclosure.add_argument("--requester", required=True, help="who asked")
    add_disclosure.add_argument("--legal-basis", required=True, help="the law that obliged it")
    add_disclosure.add_argument("--given", required=True, help="what was given")
    add_disclosure.add_argument("--resource", action="append", metavar="Type/id",
                                help="a resource of the patient's that was given (repeat)")
    add_disclosure.add_argument("--patient-visible", action="store_true",
                                help="the law lets the patient know: they see it in their record")
    add_disclosure.add_argument("--on", type=_day, help="day given (default: today)")
    list_disclosures = disclosure.add_parser("list", help="the disclosures about a patient, or "
                                             "those kept after their patients' erasure")
    whose = list_disclosures.add_mutually_exclusive_group(required=True)
    whose.add_argument("--patient", help="Patient/<id>")
    whose.add_argument("--erased", action="store_true",
                       help="those whose patient was erased (kept without naming them)")
    for action in disclosure.choices.values():
        action.set_defaults(run=_disclosure)
    exports = commands.add_parser("export", help="Bulk Data export jobs, and an organisation's "
                                  "whole data (docs/export.md)").add_subparsers(dest="action", required=True)
    exports.add_parser("list", help="every job: state, client, attempts, resources").set_defaults(run=_export)
    for action, text in (("status", "a job's progress, manifest or failure"),
                         ("cancel", "cancel a job and delete its files")):
        one = exports.add_parser(action, help=text)
        one.add_argument("id")
        one.set_defaults(run=_export)
    organization = exports.add_parser("organization", help="the organisation's patients' records "
                                      "and its directory as ndjson, a manifest and SHA256SUMS")
    organization.add_argument("organization", help="the Organization id")
    organization.add_argument("--out", type=Path, required=True, help="directory to write (new or empty)")
    organization.set_defaults(run=_export)
    mllp = commands.add_parser(
        "mllp", help="run the HL7 v2 MLLP listener alone (FHIR_SERVER_MLLP_HOST/_PORT; docs/hl7v2.md)")
    mllp.set_defaults(run=_mllp)
    hl7 = commands.add_parser("hl7", help="HL7 v2 messages received").add_subparsers(
        dest="action", required=True)
    errors = hl7.add_parser("errors", help="list the messages refused (AE/AR) or never settled")
    errors.add_argument("--limit", type=_positive, default=100, metavar="N")
    errors.set_defaults(run=_hl7_errors)
    replay = hl7.add_parser("replay", help="process stored messages again (after a fix); "
                                           "exit 1 unless every one is applied")
    replay.add_argument("ids", nargs="+", type=int, metavar="ID")
    replay.set_defaults(run=_hl7_replay)
    notify = commands.add_parser("notify", help="notifications (docs/notifications.md)").add_subparsers(
        dest="action", required=True)
    wishes = notify.add_parser("preferences", help="set a person's channel, language or "
                               "opt-out, at their request (audited); prints them")
    wishes.add_argument("person", metavar="Type/id", help="Practitioner, Patient or RelatedPerson")
    wishes.add_argument("--channel", choices=notifications.CHANNELS)
    wishes.add_argument("--language", choices=("fr", "en"))
    wishes.add_argument("--opt-out", dest="opted_out", action=argparse.BooleanOptionalAction,
                        help="--opt-out: no notifications; --no-opt-out: notifications again")
    wishes.set_defaults(run=_notify_preferences)
    failed = notify.add_parser("failed", help="the scheduled items set aside after repeated "
                               "faults (keys hold ids only)")
    failed.set_defaults(run=_notify_failed)
    return root


@asynccontextmanager
async def _lifecycle(settings: Settings) -> AsyncIterator[Lifecycle]:
    """The retention jobs on the stores `settings` name, as the server wires them."""
    codec = body_codec(settings)
    store = RoutingStore(open_store(settings.store_url, settings.accept_unsafe_store, codec,
                                    blind_index(settings), index_check=True),
                         open_store(settings.audit_store_url, settings.accept_unsafe_store, codec))
    await store.open()
    recorder = AuditRecorder(store.audit, Chain(settings.data_dir / "audit-chain.db"), store)
    try:
        context = dataclasses.replace(build_context(settings, store), erasures=open_erasures(
            settings, codec, recorder.record))
        life = open_lifecycle(settings, context, codec, store, recorder)
        if life is None:
            raise KeyRingError("the retention needs the key ring (the erasure ledger and the "
                               "audit checkpoints are kept under it); create it with "
                               "`fhir-server keys init`")
        yield life
    finally:
        await store.close()
        recorder.close()


async def _retention_async(settings: Settings, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Do `retention <action>`: the lines to print, and the failures to report."""
    async with _lifecycle(settings) as life:
        if args.action == "unarchive":
            await unarchive(life, args.reference)
            return [f"{args.reference} is available again"], []
        if args.action == "close-account":
            assert life.accounts is not None
            if not life.accounts.close(args.username, asked=args.asked):
                raise fail(Kind.NOT_FOUND, "not-found", f"there is no account {args.username}")
            await _record(settings, "retention close-account", "U", [_entity(
                args.username, _USER, deletion_asked="yes" if args.asked else "no")])
            return [f"account {args.username} is closed"], []
        assert life.ctx.erasures is not None  # a Lifecycle is made only with them
        audit = recorded_run(life.ctx.erasures.record, SCHEDULED if args.scheduled else _operator())
        plan = await run_retention(life, dry_run=args.dry_run, record=audit)
    counts = [f"{name}: {n}" for name, n in plan.counts().items()] or ["nothing to do"]
    # A scheduled run's standard error is the server's log: what failed by rule and step, as
    # its AuditEvent counts it, never which patient or why.
    failures = ([f"{a.rule}: {a.step} FAILED" for a, _ in plan.failed] if args.scheduled
                else plan.failures())
    return [*plan.lines(), f"retention {'dry run' if args.dry_run else 'run'} of {plan.today}:",
            *counts], failures


def _retention(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        if args.action == "check":
            policy = load_policy(settings.retention_policy, backup_days=settings.backup_retention_days)
            print(orjson.dumps(policy.describe(), option=orjson.OPT_INDENT_2).decode())
            return 0
        if getattr(args, "nice", 0):
            os.nice(args.nice)
        lines, failures = asyncio.run(_retention_async(settings, args))
    except (PolicyError, FhirError) as error:
        message = error.issues[0].diagnostics if isinstance(error, FhirError) else str(error)
        print(f"fhir-server retention {args.action}: {message}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fhir-server` console script."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (KeyRingError, SealedInboxError, StaleIndex) as error:  # a key ring missing, malformed
        # or too open, a sealed HL7 v2 inbox with encryption off, a store's index written
        # under other settings: say so, no traceback
        print(f"fhir-server {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
