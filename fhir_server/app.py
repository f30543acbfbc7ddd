"""create_app(settings): wires store, validation, search registry and routes together."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime
from functools import partial
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from dataclasses import replace
from urllib.parse import urlsplit

from fastapi import FastAPI

from .access import ConfirmationCodes, server_principal
from .audit.chain import Chain
from .backup import every, take, taken_at
from .audit.prune import Trimmer, checkpoint_key, retention_event
from .audit.recorder import AuditRecorder
from .auth.accounts import Accounts
from .auth.external import ExternalIssuers, TrustedIssuer
from .auth.keys import SigningKeys
from .auth.registry import Registry as AuthRegistry
from .auth.scope_policy import narrow_for_user, narrow_scope
from .auth.server import SmartAuthorizationServer
from .auth.tokens import TokenService
from .auth.users import Users
from .crypto import (BlindDigest, BodyCodec, DataKeys, EnrolledKeys, EnvelopeCodec, ErasureLedger,
                     KeyDirectory, KeyProvider, KeyRingError, PlainCodec,
                     ledger_key, open_provider)
from .bulk import ExportWorker
from .http import (HeadMiddleware, bundle_router, export_router, fhir_router,
                   install_error_handlers, metadata_router, notifications_router,
                   operability_router, privacy_router, sealing_keys_router, shortcut_router,
                   subscriptions_router)
from .http.audit import install_audit
from .http.auth_routes import auth_router, discovery_off_router, discovery_router, install_cors
from .http.login_routes import login_router
from .interop import HL7_INBOX, forget_hl7_patient, keep_hl7_messages, listener_for
from .http.operations import router as operations_router
from .http.terminology import router as terminology_router
from .logs import RequestIdMiddleware
from .model.errors import FhirError, Kind
from .model.profiles import write_profiles
from .model.validation import Validator
from .notify import runner as notify_runner
from .notify import Messages, enqueue, schedule_of
from .privacy.pseudonym import Pseudonyms, load_key
from .privacy.retention import Lifecycle, Plan, forget_archived, pseudonymise_instead
from .privacy.retention_holds import Holds
from .privacy.retention_policy import load_policy
from .privacy.retention_schedule import apart, child_environment, every_day, every_turn
from .search import BlindIndex, default_protected, default_registry
from .services.context import Context
from .services.demo import load_demo_data
from .services.erase import Erasures, destroyed_keys, reconcile
from .services.subscriptions import Desk, create_if_subscription
from .services.export import Policy as ExportPolicy
from .services.export_job import Limits as ExportLimits
from .settings import Settings
from .store.base import Store
from .store.mongo import MongoStore
from .store.routing import RoutingStore
from .store.sqlite import SqliteStore
from .subscriptions import Dispatcher, Policy, Sender, SubscribedStore, Timing, Watch, retain_events
from .terminology_service import load_catalogue, operator_dir
from .trials import consents_kept, match_catalogue, rematch
from .trials.alerts import TRIAL_MATCHING, still_news
from .trials.definitions import publish
from .trials.proposal import propose_if_unreached
from .trials.referral import answer_if_addressed
from .trials.withdrawal import after_consent_change

log = logging.getLogger("fhir_server")


def open_store(url: str, accept_unsafe: bool = False, codec: BodyCodec | None = None,
               blind: BlindIndex | None = None, index_check: bool = False) -> Store:
    """The store a URL names: `sqlite:///path` or a MongoDB connection string; `codec` seals
    and opens its bodies (default: stored as they are), `blind` indexes protected parameters
    as digests (default: as they are); `index_check` records the index layout in an empty
    store and refuses one written under another (store/index_layout.py): on for the clinical
    store wherever it is opened to serve or write, off for the audit store (no blind index)."""
    if url.startswith("sqlite:///"):
        return SqliteStore.from_url(url, codec, blind=blind, index_check=index_check)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        return MongoStore.from_url(url, accept_unsafe=accept_unsafe, codec=codec, blind=blind,
                                   index_check=index_check)
    raise ValueError(f"Unsupported store URL scheme: {url.split(':', 1)[0]}")


def body_codec(settings: Settings) -> BodyCodec:
    """How the stores keep bodies: encrypted under the key ring `settings` names (KeyRingError
    if it is missing, malformed, too open, or not the one of the stored data keys), or as they
    are when encryption is off."""
    if not settings.encryption:
        return PlainCodec()
    keys = DataKeys(open_provider(settings), settings.data_keys_path, settings.data_key_cache)
    keys.check()  # the wrong key ring is refused at start, not at the first read
    return EnvelopeCodec(keys)


def blind_index(settings: Settings) -> BlindIndex | None:
    """The blind indexes of the protected parameters, keyed by the key ring
    (docs/blind-indexes.md); None when encryption is off or nothing is protected."""
    registry = default_registry()
    protected = (default_protected(registry) if settings.protected_params is None
                 else settings.protected_params)
    if not settings.encryption or not protected:
        return None
    keys = BlindDigest(open_provider(settings).index_key)
    return BlindIndex(protected, keys, registry, prefix_cap=settings.blind_prefix_cap,
                      sort_limit=settings.protected_sort_limit)


def build_context(settings: Settings, store: Store) -> Context:
    """The service-layer Context for `settings` on `store` (the app and the CLI share it)."""
    return Context(
        store=store,
        validator=Validator(use_models=settings.validate_with_models),
        registry=default_registry(),
        base_url=settings.base_url.rstrip("/"),
        default_page_size=settings.default_page_size,
        max_page_size=settings.max_page_size,
        site_status_max_age_days=settings.site_status_max_age_days,
        hooks=(after_consent_change, notify_runner.reminders(settings, store).after_commit,
               Messages(schedule_of(store)).after_commit),
        creators=(answer_if_addressed, propose_if_unreached, create_if_subscription),
        codes=ConfirmationCodes(settings.data_dir / "consent-codes.db"),
        keys=_key_directory(settings),
        sealed_only=settings.sealed_messages_only,
        terminology=load_catalogue(max_expansion=settings.max_expansion,
                                   operator=operator_dir(settings.data_dir)),
        pseudonym_key=(open_provider(settings).index_key("trial-pseudonym")
                       if settings.encryption else None),
        write_profiles=write_profiles(settings.write_profiles),
    )


def _key_directory(settings: Settings) -> KeyDirectory:
    """Users' enrolled sealing keys (beside their accounts) and the site systems' (their
    registered JWKS; none when auth is off: no client is known)."""
    registry = AuthRegistry(settings.data_dir / "auth.db")
    return KeyDirectory(EnrolledKeys(registry.connection),
                        registry.backend_clients if settings.auth != "off" else tuple)


@asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[Context]:
    """A Context on the store `settings` names, open for the duration of the block, acting as
    the server itself (the command line is run by its operator)."""
    codec = body_codec(settings)
    store = RoutingStore(open_store(settings.store_url, settings.accept_unsafe_store, codec,
                                    blind_index(settings), index_check=True),
                         open_store(settings.audit_store_url, settings.accept_unsafe_store, codec))
    await store.open()
    try:
        yield replace(build_context(settings, store), principal=server_principal("cli"))
    finally:
        await store.close()


def key_provider(settings: Settings, codec: BodyCodec) -> KeyProvider | None:
    """The key ring: the codec's, or, with encryption off, the file if there is one."""
    if isinstance(codec, EnvelopeCodec):
        return codec.keys.provider
    try:
        return open_provider(settings)
    except KeyRingError:
        return None


def open_ledger(settings: Settings, codec: BodyCodec) -> ErasureLedger | None:
    """The erasure ledger, kept with the key ring (under one of its keys); None without one."""
    ring = key_provider(settings, codec)
    return ErasureLedger(settings.erasure_ledger_path, ledger_key(ring)) if ring else None


def open_erasures(settings: Settings, codec: BodyCodec,
                  record: Callable[[dict[str, Any]], Awaitable[str]]) -> Erasures | None:
    """What Patient/$erase needs: the ledger, the data keys the codec seals with (none when
    encryption is off) and the HL7 v2 inbox's wipe (a retention process finishes erasures
    too); None (not offered: $erase answers 501) without a ledger."""
    ledger = open_ledger(settings, codec)
    if ledger is None:
        return None
    keys = codec.keys if isinstance(codec, EnvelopeCodec) else None
    if keys is not None and (destroyed := destroyed_keys(ledger)):
        keys.destroy_keys(destroyed)  # erasures recorded before datakeys.db kept their key ids
    return Erasures(ledger, keys, record,
                    messages=partial(forget_hl7_patient, settings.data_dir / HL7_INBOX, codec))


async def _ahead(context: Context) -> None:
    """What the first `$match` would read itself, read at start in the background: the
    trial catalogue, then the active Consents."""
    await match_catalogue.warm(context)
    await consents_kept.warm(context)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """The ASGI application for `settings` (read from the environment if omitted), on
    `store` if given (tests), else on the store `settings` names."""
    settings = settings or Settings()
    codec = body_codec(settings)
    audit_store = open_store(settings.audit_store_url, codec=codec)
    watch = Watch(default_registry(), Policy(tuple(settings.subscription_endpoints),
                                             settings.subscription_loopback_http,
                                             settings.subscription_timeout))
    store = SubscribedStore(store or open_store(settings.store_url, settings.accept_unsafe_store,
                                                codec, blind_index(settings), index_check=True),
                            audit_store, watch)
    context = build_context(settings, store)
    recorder = AuditRecorder(audit_store, Chain(settings.data_dir / "audit-chain.db"), store)
    context = replace(context, erasures=open_erasures(settings, codec, recorder.record))
    lifecycle = open_lifecycle(settings, context, codec, store, recorder)
    tokens, oauth = _authorization(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        await recorder.recover()
        dispatcher = app.state.dispatcher = _dispatcher(settings, store, watch, Desk(
            context, recorder.record, {TRIAL_MATCHING: lambda ctx, study, patients, filters: still_news(
                ctx, patients, filters.get("practitioner", ""))},
            tokens.users.stopped if tokens is not None else None))
        await dispatcher.load()  # before any write: each keeps its events (docs/subscriptions.md)
        try:
            again = await reconcile(replace(context, principal=server_principal("fhir-server")))
        except FhirError as exc:
            if exc.kind is not Kind.BUSY:
                raise
            # The store is away or unsafe (MongoDB's self-check): the server still starts and
            # answers 503 (readyz says why) until it is fixed; the ledger is replayed at the
            # next start. No erased patient is served meanwhile: nothing is served.
            log.warning("the erasure ledger could not be checked against the store at start-up")
            again = []
        if again:
            log.warning("erased patients found back in the store were erased again",
                        extra={"patients": len(again)})
        if tokens is None:
            log.warning("AUTHENTICATION IS OFF: every request has full access to all data. "
                        "For local development and the demo only.")
        if settings.demo_data:
            loaded = await load_demo_data(replace(context, principal=server_principal("demo")))
            if loaded:
                log.info("demo data loaded", extra={"resources": loaded})
        if settings.publish_definitions:
            await publish(replace(context, principal=server_principal("definitions")))
        listener = app.state.mllp = listener_for(settings, context, recorder, codec) if settings.mllp else None
        if listener is not None:
            await listener.start()
        backups = _schedule_backups(settings, codec, store, recorder)
        retention = _schedule_retention(settings, lifecycle)
        figures = _schedule_figures(settings, context)
        notifications = notify_runner.start(settings, context, recorder.record)
        notifying = asyncio.get_running_loop().create_task(dispatcher.run())
        purging = asyncio.get_running_loop().create_task(
            retain_events(store, settings.subscription_events_keep_days))
        expiring = asyncio.get_running_loop().create_task(
            keep_hl7_messages(settings.data_dir / HL7_INBOX, codec, settings.hl7_keep_days))
        exports = asyncio.get_running_loop().create_task(worker.run())
        rematcher = replace(context, principal=server_principal("rematch"))
        try:
            await rematch.start(rematcher)  # before any write: each is news for the job
        except FhirError:  # the store is away or unsafe (/readyz says so): begun by its task
            log.warning("the re-match job could not begin its history at start")
        rematching = asyncio.get_running_loop().create_task(rematch.run(
            rematcher, settings.notify_poll_seconds, watch.changed.set))
        # The first $match (inverse: every Consent too) need not read all it needs itself.
        warming = asyncio.get_running_loop().create_task(_ahead(context))
        log.info("ready", extra={"base_url": settings.base_url})
        yield
        warming.cancel()
        exports.cancel()
        rematching.cancel()
        notifying.cancel()
        purging.cancel()
        expiring.cancel()
        await dispatcher.stop()
        await dispatcher.sender.close()
        await notify_runner.stop(notifications)
        for task in (backups, retention, figures):
            if task is not None:
                task.cancel()
        for task in (retention, figures):  # their run's child process stopped before the server ends
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if listener is not None:
            await listener.stop()
        await store.close()
        recorder.close()

    app = FastAPI(
        title="fhir-server",
        # FastAPI's native OpenTelemetry, unused here: off, or every request asks the global
        # tracer, meter and logger providers whether they are configured (≈ 10-20 µs).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.context = context
    app.state.lifecycle = lifecycle  # the retention jobs (privacy/retention.py), None without a key ring
    app.state.tokens = tokens
    app.state.oauth = oauth
    app.state.export_policy = export_policy(settings)
    worker = ExportWorker(context, app.state.export_policy, recorder.record_all)
    app.state.wake_exports = worker.wake  # a kick-off here starts its job at once
    app.state.mllp = None  # the HL7 v2 listener, when settings.mllp (started with the app)
    app.state.schedule = notify_runner.schedule_of(store)  # preferences (http/notifications.py)
    # sends e-mailed sign-in codes (auth/email_codes.py); None without an SMTP relay
    app.state.sign_in_codes = notify_runner.code_sender(settings, context, recorder.record)
    install_error_handlers(app)
    app.include_router(shortcut_router, prefix=settings.base_path)  # first: http/routes.py
    app.include_router(operability_router)
    app.include_router(metadata_router, prefix=settings.base_path)
    if tokens is not None:
        app.include_router(discovery_router, prefix=settings.base_path)
        app.include_router(auth_router, prefix=urlsplit(settings.auth_url).path)
        app.include_router(login_router, prefix=urlsplit(settings.auth_url).path)
    else:
        app.include_router(discovery_off_router, prefix=settings.base_path)
    app.include_router(bundle_router, prefix=settings.base_path)
    app.include_router(operations_router, prefix=settings.base_path)
    app.include_router(subscriptions_router, prefix=settings.base_path)
    app.include_router(export_router, prefix=settings.base_path)
    app.include_router(privacy_router, prefix=settings.base_path)  # before fhir_router's compartments
    app.include_router(sealing_keys_router)
    app.include_router(notifications_router)
    app.include_router(terminology_router, prefix=settings.base_path)
    app.include_router(fhir_router, prefix=settings.base_path)
    install_cors(app, settings, oauth.registry if oauth else None)
    install_audit(app, settings.base_path, recorder)
    app.state.recorder = recorder
    app.add_middleware(HeadMiddleware)  # outside audit: a HEAD is audited as the read it is
    app.add_middleware(RequestIdMiddleware)
    return app


def export_policy(settings: Settings) -> ExportPolicy:
    """How $export jobs run (services/export.py), from the settings."""
    return ExportPolicy(ExportLimits(settings.export_file_resources, settings.export_file_bytes),
                        attempts=settings.export_attempts,
                        running_per_caller=settings.export_running_per_caller,
                        retention_seconds=settings.export_retention_seconds)


def _schedule_backups(settings: Settings, codec: BodyCodec, store: RoutingStore,
                      recorder: AuditRecorder) -> asyncio.Task[None] | None:
    """The task taking the backups FHIR_SERVER_BACKUP_INTERVAL_HOURS asks for (backup/schedule.py)."""
    provider = key_provider(settings, codec)
    if not settings.backup_interval_hours:
        return None
    if provider is None:
        log.error("no scheduled backups: they are encrypted under the key ring, and there is none")
        return None

    async def back_up() -> object:
        return await take(main=store.main, audit=store.audit, chain=recorder.chain,
                          provider=provider, directory=settings.backup_path,
                          keep_days=settings.backup_retention_days,
                          operator="fhir-server (scheduled)", record=recorder.record)

    return asyncio.get_running_loop().create_task(
        every(settings.backup_interval_hours, settings.backup_path, back_up))


def _dispatcher(settings: Settings, store: SubscribedStore, watch: Watch, desk: Desk) -> Dispatcher:
    """The subscriptions' dispatcher (subscriptions/dispatcher.py), started with the app."""
    key = settings.subscription_signing_key
    return Dispatcher(store, watch, desk, Sender(key.read_bytes().strip() if key else None,
                                                     settings.subscription_loopback_http),
                      Timing(retry_window=settings.subscription_retry_hours * 3600))


def _authorization(settings: Settings) -> tuple[TokenService | None, SmartAuthorizationServer | None]:
    """The token service and authorization server, or (None, None) when auth is off."""
    if settings.auth == "off":
        return None, None
    registry = AuthRegistry(settings.data_dir / "auth.db")
    keys = SigningKeys(settings.data_dir / "signing-keys.json", settings.token_lifetime)
    audience = settings.base_url.rstrip("/")
    external = ExternalIssuers([
        TrustedIssuer(t.issuer, t.jwks_uri, t.audience or audience, t.psc)
        for t in settings.trusted_issuers])
    tokens = TokenService(keys, registry, issuer=settings.auth_url, audience=audience,
                          lifetime=settings.token_lifetime, external=external)
    oauth = SmartAuthorizationServer(registry, tokens, f"{settings.auth_url}/token", narrow_scope,
                                     narrow_for_user, terms_version=settings.terms_version)
    return tokens, oauth


class _Backups:
    """The backup archives of `directory`, as the retention run sees them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def taken(self) -> dict[str, date]:
        found = (self.directory.iterdir() if self.directory.is_dir() else ())
        return {path.name: at.date() for path in found if (at := taken_at(path)) is not None}

    def remove(self, names: list[str]) -> None:
        for name in names:
            (self.directory / name).unlink(missing_ok=True)


class _Notices:
    """Warnings through the notification scheduler (notify/)."""

    def __init__(self, store: RoutingStore) -> None:
        self.store = store

    async def scheduled(self, prefix: str) -> set[str]:
        return {item.key for item in await schedule_of(self.store).items(prefix)}

    async def warn(self, *, person: str, template: str, params: dict[str, str],
                   not_before: datetime, key: str) -> bool:
        return await enqueue(schedule_of(self.store), person=person, template=template,
                             params=params, not_before=not_before, key=key)


def open_lifecycle(settings: Settings, context: Context, codec: BodyCodec, store: RoutingStore,
                   recorder: AuditRecorder) -> Lifecycle | None:
    """The retention jobs on `context` (its $erase then pseudonymises held records instead,
    and forgets the archived reports of an erased patient). The policy is checked here, at
    start (PolicyError); None without a key ring: no erasure ledger, no checkpoint key."""
    policy = load_policy(settings.retention_policy, backup_days=settings.backup_retention_days)
    provider = key_provider(settings, codec)
    if provider is None or context.erasures is None:
        return None
    life = Lifecycle(context, policy, Pseudonyms(load_key(settings.pseudonym_key_path, create=True)),
                     Holds(context),
                     Trimmer(store.audit, recorder.chain.path,
                             checkpoint_key(provider.index_key("audit-checkpoint"))),
                     _Backups(settings.backup_path), _Notices(store),
                     Accounts(Users(AuthRegistry(settings.data_dir / "auth.db"))))
    context.erasures.hold = life.holds
    context.erasures.instead = partial(pseudonymise_instead, life)
    context.erasures.forget = forget_archived
    return life


def recorded_run(record: Callable[[dict[str, Any]], Awaitable[str]], operator: str
                 ) -> Callable[[Plan, bool], Awaitable[object]]:
    """What records a retention run: its AuditEvent, with its counts per rule."""
    async def audit(plan: Plan, dry_run: bool) -> object:
        return await record(retention_event(plan.counts(), len(plan.kept), dry_run=dry_run,
                                            operator=operator, failed=len(plan.failed)))
    return audit


def _schedule_figures(settings: Settings, context: Context) -> asyncio.Task[None] | None:
    """The task computing the day's trial figures ahead (trials/figures_pass.py), in a child
    process at a lower priority; none without the key ring (the figures' draws are keyed)."""
    if not settings.figures_daily or context.pseudonym_key is None:
        return None
    return asyncio.get_running_loop().create_task(every_day(
        settings.data_dir / ".figures.lock",
        partial(apart, environment=child_environment(settings), command=("figures", "run"))))


def _schedule_retention(settings: Settings, life: Lifecycle | None) -> asyncio.Task[None] | None:
    """The task running the retention every FHIR_SERVER_RETENTION_INTERVAL_HOURS, each run in a
    process of its own at a lower priority (privacy/retention_schedule.py)."""
    if not settings.retention_interval_hours:
        return None
    if life is None:
        log.error("no scheduled retention runs: they need the key ring, and there is none")
        return None
    return asyncio.get_running_loop().create_task(every_turn(
        settings.retention_interval_hours, settings.data_dir / ".retention.lock",
        partial(apart, environment=child_environment(settings))))
