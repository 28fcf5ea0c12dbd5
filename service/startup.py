"""The start-up steps ``create_app`` calls, in order, each with a name (the factory itself only
wires: settings, clock, store, blueprints):

1. ``configure_logging(settings)``: JSON lines on standard error (service/logs.py), and a
   warning for each door left open (API_REQUIRE_AUTH, CDS_REQUIRE_JWT off);
2. ``check_clock(clock)``: the clock gives timezone-aware datetimes;
3. ``open_store(settings)``: the audit store at DATABASE_URL, with its timeouts;
4. ``migrate(store)``: its tables made or brought up to date;
5. ``purge_expired(store, clock)``: audit rows past AUDIT_RETENTION_DAYS and expired JWT ids
   deleted;
6. ``attach_spool(store, settings)``: the spool under SPOOL_DIR, and the records that
   processes which died left there replayed on a thread.

``open_audit_store`` runs 3 to 6: what every process that answers checks opens (create_app,
the watch worker).
"""

from __future__ import annotations

import logging

from . import logs
from .clock import Clock
from .config import Settings
from .spool import Spool
from .store import Store

log = logging.getLogger("baclofen_check")


def configure_logging(settings: Settings) -> None:
    logs.configure_logging()
    if not settings.api_require_auth:
        log.warning("API_REQUIRE_AUTH is off: every call to the FHIR endpoints is allowed")
    if not settings.cds_require_jwt:
        log.warning("CDS_REQUIRE_JWT is off: every CDS Hooks call is allowed")


def check_clock(clock: Clock) -> None:
    moment = clock()
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the clock given to create_app must give timezone-aware datetimes")


def open_store(settings: Settings) -> Store:
    """The store at DATABASE_URL, not yet migrated."""
    return Store(settings.database_url, settings.audit_retention_days,
                 settings.db_connect_timeout_s, settings.db_statement_timeout_s)


def migrate(store: Store) -> None:
    store.migrate()


def purge_expired(store: Store, clock: Clock) -> int:
    """The number of checks deleted."""
    return store.purge(clock())


def attach_spool(store: Store, settings: Settings) -> None:
    store.spool = Spool(settings.spool_dir, settings.spool_max_bytes,
                        settings.database_url).open()
    if store.spool.files():
        store.spool.replay_soon(store)


def open_audit_store(settings: Settings, clock: Clock) -> Store:
    store = open_store(settings)
    migrate(store)
    purge_expired(store, clock)
    attach_spool(store, settings)
    return store
