"""SessionStore: server-side sessions in Redis, one round trip per operation."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from redis.crc import key_slot

from .._counters import counts_for, snapshot
from .._failures import ANY, UNAVAILABLE, describe_error, failure, is_cluster
from .._replicas import replicas_for
from .._telemetry import operation
from .._validate import seconds
from ..codec import get_codec, strict_json_encoder
from ..connection import Client
from ..errors import ConfigError, RedkitError, SerializationError
from ..keys import validate_key_part
from ..scripts import Script
from . import _ids
from ._layout import Layout
from ._record import Session, decode_record

__all__ = ["Session", "SessionDataTooLarge", "SessionStats", "SessionStore"]

log = logging.getLogger("redkit.session")

DEFAULT_MAX_DATA_BYTES = 64 * 1024

# Every deadline a script computes must stay an exact microsecond count in a
# Lua double (2**53 us after the epoch is the year 2255) and a 4-digit-year
# RFC 3339 timestamp that Go and Python parse: a century of ttl keeps both.
MAX_TTL_SECONDS = 100 * 365.25 * 86400


class SessionDataTooLarge(RedkitError, ValueError):
    """Raised by :meth:`SessionStore.create` and :meth:`SessionStore.update`
    when the session data, encoded as JSON, would exceed the store's
    ``max_data_bytes``. Nothing is written."""


@dataclasses.dataclass(frozen=True)
class SessionStats:
    """Counters of one :class:`SessionStore` since it was made."""

    created: int = 0
    hits: int = 0
    misses: int = 0
    malformed_ids: int = 0
    updated: int = 0
    refreshed: int = 0  # refresh() calls that found the session
    rotated: int = 0
    destroyed: int = 0
    errors: int = 0


_encode_json = strict_json_encoder(None, "session data")


def _script(name: str, *, lib: bool = True) -> Script:
    """time.lua, lib.lua (unless ``lib=False``) and the script's own file,
    as one script."""
    parts = ["time.lua", "lib.lua"] if lib else ["time.lua"]
    sources = [Script.from_package("redkit.session", f"lua/{p}").source for p in parts]
    body = Script.from_package("redkit.session", f"lua/{name}.lua")
    return Script(body.name, "\n".join([*sources, body.source]))


_GET = _script("get", lib=False)
_READ = _script("read")
_CREATE = _script("create")
_UPDATE = _script("update")
_ROTATE = _script("rotate")
_DESTROY = _script("destroy")
_LIST = _script("list")
_DESTROY_ALL = _script("destroy_all")


def _found(reply: Any) -> bool:
    """Whether a read, rotate or take script's reply is a record (it wrote)."""
    return reply is not None and not isinstance(reply, list)


def _updated(reply: Any) -> bool:
    return reply is not None and reply[0] == 1


def _micros(value: object, what: str) -> int:
    return max(1, int(seconds(value, what, maximum=MAX_TTL_SECONDS) * 1_000_000))


def _check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str):
        raise ConfigError(f"user_id must be a string, got {type(user_id).__name__}")
    if user_id:
        validate_key_part(user_id, "user_id")
    return user_id


def _check_keys(data: Mapping[Any, Any], what: str) -> None:
    for key in data:
        if not isinstance(key, str):
            raise SerializationError(
                f"{what} keys must be strings, got {type(key).__name__} key {key!r}"
            )


def _address(client: Any) -> str:
    """Where the store's Redis is, for error messages."""
    if is_cluster(client):
        node = client.get_default_node()
        return f"cluster node {node.name}" if node is not None else "a cluster"
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    if kwargs.get("host") is None:  # Sentinel: the master moves
        return "the Sentinel-managed master"
    return f"{kwargs['host']}:{kwargs.get('port')}"


def _encode_data(codec: Any, data: Mapping[str, Any] | None, limit: int) -> bytes:
    if data is None:
        return b"{}"
    if not isinstance(data, Mapping):
        raise SerializationError(f"session data must be a mapping, got {type(data).__qualname__}")
    _check_keys(data, "session data")
    encoded: bytes = codec.encode(dict(data))
    if len(encoded) > limit:
        raise SessionDataTooLarge(
            f"session data is {len(encoded)} bytes as JSON; the limit is {limit} (max_data_bytes)"
        )
    return encoded


class SessionStore:
    """Sessions in Redis under ``{prefix}:session:...``.

    :param client: what :func:`redkit.connect` returns (standalone or
        cluster); never closed by the store.
    :param secret: the key of the hash tag in session ids (``"redkit"``
        layout; required there): str or bytes of at least 16 random bytes,
        the same on every instance, or a list of them, current first, to
        rotate it (new sessions are tagged with the first; sessions tagged
        with the others stay readable, listed and destroyed with their
        user). Keep it apart from the cookie-signing ``secret_key`` of
        :class:`SessionMiddleware` (redkit domain-separates the two uses,
        so a shared value is not unsafe, but two secrets rotate
        independently). The ``"go"`` layout has no tag and needs none.
    :param prefix: key prefix. Default ``"app"`` in the ``"redkit"`` layout;
        in the ``"go"`` layout the default is no prefix at all, which yields
        the Go service's own keys ``session:<id>`` and ``session:user:<id>``.
    :param ttl: idle timeout: a session not used for this long ends. Each
        :meth:`refresh` and :meth:`update` restarts it. Seconds or a
        timedelta, at most 100 years.
    :param absolute_ttl: no session lives longer than this after it was
        created, however often it is used. Must be at least ``ttl``.
    :param layout: ``"redkit"`` (default) puts a hash tag keyed by
        ``secret`` and the user into every id, so a session and its user's
        index share a cluster slot; ``"go"`` reads and writes the Go
        service's layout (UUID ids accepted), for a standalone or Sentinel
        server only.
    :param max_data_bytes: largest session data, as encoded JSON.
    :param replicas: with N >= 1, every write (:meth:`create`,
        :meth:`update`, :meth:`refresh`, :meth:`rotate`, :meth:`destroy`,
        :meth:`destroy_all_for_user`) returns only once N replicas hold it
        (Redis ``WAIT``, in the same round trip), and raises
        :class:`~redkit.NotReplicated` when fewer acknowledge within
        ``replica_timeout``: the write was applied on the primary, but a
        failover may lose it. Reads, :meth:`touch` included, do not wait.
        Default 0: a write returns once the primary has it.
    :param replica_timeout: how long a write waits for its replicas;
        shorter than the client's read timeout by at least 0.25 s.

    Every method is one round trip (one Lua script), except :meth:`rotate`
    to another user on a cluster (see its docstring) and, while ``secret``
    lists older secrets, :meth:`list_for_user` and
    :meth:`destroy_all_for_user` (one per secret). Times come from the
    Redis server's clock. When Redis cannot be reached the methods raise
    :class:`~redkit.ConnectionUnavailable` (sessions fail closed).
    """

    def __init__(
        self,
        client: Client,
        *,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        prefix: str | None = None,
        ttl: timedelta | float = timedelta(hours=24),
        absolute_ttl: timedelta | float = timedelta(days=7),
        layout: Literal["redkit", "go"] = "redkit",
        max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
        replicas: int = 0,
        replica_timeout: timedelta | float = 0.5,
    ) -> None:
        if layout not in ("redkit", "go"):
            raise ConfigError(f"layout must be 'redkit' or 'go', got {layout!r}")
        if secret is None and layout == "redkit":
            raise ConfigError(
                "SessionStore needs secret=: the key of the user tag in session ids, "
                "at least 16 random bytes shared by every instance (for example "
                "secrets.token_urlsafe(32)), or a list of them, current first"
            )
        tags = _ids.UserTags(_ids.secret_list(secret, "secret") if secret is not None else [])
        self._ttl_us = _micros(ttl, "ttl")
        self._abs_us = _micros(absolute_ttl, "absolute_ttl")
        if self._abs_us < self._ttl_us:
            raise ConfigError(
                f"absolute_ttl ({absolute_ttl!r}) must not be shorter than ttl ({ttl!r})"
            )
        if isinstance(max_data_bytes, bool) or not isinstance(max_data_bytes, int):
            raise ConfigError(f"max_data_bytes must be an int, got {max_data_bytes!r}")
        if max_data_bytes < 2:
            raise ConfigError(f"max_data_bytes must be at least 2, got {max_data_bytes}")
        if prefix is None and layout == "redkit":
            prefix = "app"
        if prefix is not None:
            validate_key_part(prefix, "key prefix", allow_braces=False)
        self._cluster = is_cluster(client)
        if layout == "go" and self._cluster:
            raise ConfigError(
                "layout='go' keeps a session and its user index in different cluster slots; "
                "use layout='redkit' with a Redis Cluster"
            )
        self._client = client
        self._replicas = replicas_for(client, replicas, replica_timeout)
        self.replicas = replicas
        self.layout = layout
        self.prefix = prefix
        self.ttl = timedelta(microseconds=self._ttl_us)
        self.absolute_ttl = timedelta(microseconds=self._abs_us)
        self.max_data_bytes = max_data_bytes
        head = f"{prefix}:session:" if prefix else "session:"
        self._tagged = layout == "redkit"
        self._counts = counts_for(SessionStats)
        self._layout = Layout(head, tagged=self._tagged, tags=tags, counts=self._counts)
        # The layout's own method (it counts malformed ids): no call of ours
        # between an operation and its keys.
        self._keys = self._layout.keys
        # Sent with every script call: encoded once.
        self._argv_head: tuple[bytes, ...] = tuple(
            str(part).encode()
            for part in (
                "t" if self._tagged else "g",
                head,
                head + "user:",
                self._ttl_us,
                self._abs_us,
            )
        )
        self._abs_arg = [str(self._abs_us).encode()]
        self._codec = get_codec("json")

    def __repr__(self) -> str:
        return (
            f"SessionStore(prefix={self.prefix!r}, layout={self.layout!r}, "
            f"ttl={self.ttl}, absolute_ttl={self.absolute_ttl})"
        )

    # -- plumbing -----------------------------------------------------------

    async def _run(
        self,
        what: str,
        script: Script,
        keys: list[str],
        args: list[Any],
        *,
        head: bool = True,
        wrote: Callable[[Any], object] | None = None,
    ) -> Any:
        """The script's reply. A write passes ``wrote`` (did this reply
        change anything?), so that, with ``replicas``, it also waits for
        them and raises NotReplicated when a change was not acknowledged."""
        replicas = self._replicas
        try:
            if replicas is None or wrote is None:
                return await script(self._client, keys, [*self._argv_head, *args] if head else args)
            reply, acked = await replicas.run(script, keys, [*self._argv_head, *args])
        except ANY as exc:
            raise self._failure(what, exc) from exc
        if acked < replicas.count and wrote(reply):
            self._counts["errors"] += 1
            raise replicas.shortfall(
                f"session store could {what}",
                acked,
                "it was applied on the primary and may not survive a failover",
            )
        return reply

    def _failure(self, what: str, exc: BaseException) -> RedkitError:
        """The error for a request that failed with ``exc`` (one of
        :data:`~redkit._failures.ANY`), counted."""
        self._counts["errors"] += 1
        if isinstance(exc, UNAVAILABLE):
            return failure(
                f"session store could not {what} (Redis at {_address(self._client)})", exc
            )
        if "WRONGTYPE" in str(exc)[:200]:
            # A session key that holds a list, hash, ... was not written by
            # a session store: the same case as a string that is not a
            # record, so the middleware starts a fresh session over it.
            return SerializationError(
                f"session store could not {what}: a session key holds another kind of "
                f"Redis value: {describe_error(exc)}"
            )
        return failure(f"session store could not {what}", exc)

    def _decode(self, raw: bytes, where: str) -> Session:
        try:
            return decode_record(raw)
        except SerializationError as exc:
            self._counts["errors"] += 1
            raise SerializationError(f"session record at {where}: {exc}") from exc

    def _note_unreadable(self) -> None:
        """Count a record the middleware could not use (stats().errors)."""
        self._counts["errors"] += 1

    def _malformed_record(self, key: str, reason: object) -> SerializationError:
        self._counts["errors"] += 1
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        return SerializationError(f"session record at {key} is not a session record: {text}")

    # -- operations ---------------------------------------------------------

    @operation("session.create")
    async def create(self, user_id: str = "", data: Mapping[str, Any] | None = None) -> Session:
        """Start a session for ``user_id`` (``""``: anonymous, not indexed)
        with ``data``; returns it with a new id (256 random bits from
        :mod:`secrets`, URL-safe).

        Raises :class:`~redkit.SerializationError` when ``data`` has no
        faithful JSON form (an unsupported type, NaN or an infinity, nesting
        past the recursion limit) and :class:`SessionDataTooLarge` past
        ``max_data_bytes``; nothing is written then.
        """
        user_id = _check_user_id(user_id)
        encoded = _encode_data(self._codec, data, self.max_data_bytes)
        for _ in range(3):
            session_id, keys, tag = self._layout.new_id(user_id)
            session = await self._create(session_id, keys, tag, user_id, encoded)
            if session is not None:
                return session
        raise RedkitError("three fresh session ids in a row were taken; is the RNG broken?")

    async def _create(
        self, session_id: str, keys: list[str], tag: str, user_id: str, encoded: bytes
    ) -> Session | None:
        reply = await self._run(
            "create a session",
            _CREATE,
            keys,
            [
                f'"{session_id}"',
                _encode_json(user_id),
                user_id,
                encoded,
                session_id,
                tag,
            ],
            wrote=bool,
        )
        if not reply:
            return None
        self._counts["created"] += 1
        return self._decode(reply, keys[0])

    @operation("session.get")
    async def get(self, session_id: str) -> Session | None:
        """The live session ``session_id``; None when it does not exist, has
        expired (idle or absolute timeout), or the id is malformed (then
        nothing is sent to Redis). Does not extend the idle timeout.

        Raises :class:`~redkit.SerializationError` for a stored value that is
        not a session record (whatever its bytes: never another exception).
        """
        keys = self._keys(session_id)
        if keys is None:
            return None
        if self._tagged:
            # Only redkit writes this layout, and every write caps the key's
            # TTL at the absolute deadline: the TTL alone enforces both
            # timeouts, and a plain GET is the cheapest read.
            try:
                reply: Any = await self._client.get(keys[0])
            except ANY as exc:
                raise self._failure("read a session", exc) from exc
        else:
            # The Go service refreshes without a cap: check created_at on
            # the server's clock.
            reply = await self._run("read a session", _GET, keys[:1], self._abs_arg, head=False)
        if reply is None:
            self._counts["misses"] += 1
            return None
        if isinstance(reply, list):  # not the canonical shape: full check
            return await self._read(session_id, "get", 0)
        return self._accept(reply, keys[0], session_id)

    @operation("session.refresh")
    async def refresh(self, session_id: str) -> Session | None:
        """Restart the idle timeout of ``session_id`` (never past its
        absolute timeout) and return the session, None when there is no live
        session. Only ``expires_at`` is rewritten, inside Redis, so a
        concurrent :meth:`update` is never lost."""
        return await self._read(session_id, "touch", 0)

    @operation("session.touch")
    async def touch(self, session_id: str, min_interval: timedelta | float) -> Session | None:
        """Like :meth:`get`, and in the same round trip restart the idle
        timeout when that moves the expiry by at least ``min_interval`` (the
        middleware's "refresh at most every N seconds"). The decision uses
        the server's clock and the key's TTL."""
        return await self._read(session_id, "touch", _micros(min_interval, "min_interval"))

    async def _read(self, session_id: str, mode: str, min_move_us: int) -> Session | None:
        keys = self._keys(session_id)
        if keys is None:
            return None
        reply = await self._run(
            "read a session",
            _READ,
            keys,
            [mode, min_move_us, session_id],
            # refresh() always writes the expiry when found; touch() is a
            # read that sometimes moves it, and does not wait.
            wrote=_found if min_move_us == 0 else None,
        )
        if reply is None:
            self._counts["misses"] += 1
            return None
        if isinstance(reply, list):
            raise self._malformed_record(keys[0], reply[1])
        if mode == "touch" and min_move_us == 0:
            self._counts["refreshed"] += 1
        return self._accept(reply, keys[0], session_id)

    def _accept(self, raw: bytes, key: str, session_id: str) -> Session:
        session = self._decode(raw, key)
        if session.id != session_id:
            self._counts["errors"] += 1
            raise SerializationError(
                f"session record at {key} carries another id: {session.id[:80]!r}"
            )
        self._counts["hits"] += 1
        return session

    @operation("session.update")
    async def update(self, session_id: str, changes: Mapping[str, Any]) -> Session | None:
        """Merge ``changes`` into the session's data and restart its idle
        timeout; returns the updated session, None when there is no live
        session (nothing is created).

        Keys not named in ``changes`` keep their stored value, whatever
        other processes wrote meanwhile: two concurrent updates of different
        keys both survive. A key set to ``None`` is removed from the data.
        Values are encoded as JSON; the stored bytes of untouched keys are
        kept as they are.

        Raises :class:`~redkit.SerializationError` when a value does not
        encode and :class:`SessionDataTooLarge` when the merged data would
        exceed ``max_data_bytes``; nothing is written then.
        """
        if not isinstance(changes, Mapping):
            raise SerializationError(
                f"session changes must be a mapping, got {type(changes).__qualname__}"
            )
        _check_keys(changes, "session data")
        args: list[Any] = [session_id, self.max_data_bytes, len(changes)]
        size = 0
        for key, value in changes.items():
            encoded_key = _encode_json(key)
            encoded = b"" if value is None else self._codec.encode(value)
            size += len(encoded_key) + len(encoded) + 1
            args += [key, encoded_key, encoded]
        if size + 2 > self.max_data_bytes:
            raise SessionDataTooLarge(
                f"the changes alone are {size + 2} bytes as JSON; the limit is "
                f"{self.max_data_bytes} (max_data_bytes)"
            )
        keys = self._keys(session_id)
        if keys is None:
            return None
        reply = await self._run("update a session", _UPDATE, keys, args, wrote=_updated)
        if reply is None:
            self._counts["misses"] += 1
            return None
        code = reply[0]
        if code == 2:
            raise self._malformed_record(keys[0], reply[1])
        if code == 3:
            raise SessionDataTooLarge(
                f"session data would be {reply[1]} bytes as JSON after this update; the "
                f"limit is {self.max_data_bytes} (max_data_bytes); nothing was written"
            )
        self._counts["updated"] += 1
        return self._decode(reply[1], keys[0])

    @operation("session.rotate")
    async def rotate(self, session_id: str, *, user_id: str | None = None) -> Session | None:
        """Move the session to a new id; the old id stops working at once.
        Data and the idle timeout carry over. None when there is no live
        session.

        With ``user_id`` (a login, or a logout to ``""``) the session now
        belongs to that user and its absolute lifetime starts again; without
        it the user and ``created_at`` are kept.

        One script when the old and new ids share a cluster slot (always on
        a standalone server, always for the same user). On a cluster, a new
        user's ids live in another slot: the old session is read and deleted
        in one step, then the new one is created. A crash between the two
        loses that session (the user logs in again); it never leaves the old
        id alive or a live session outside its user's index.
        """
        if user_id is not None:
            user_id = _check_user_id(user_id)
        keys = self._keys(session_id)
        if keys is None:
            return None
        new_user = user_id is not None
        new_id, new_keys, tag = self._layout.next_id(session_id, user_id)
        if self._cluster and key_slot(keys[0].encode()) != key_slot(new_keys[0].encode()):
            return await self._rotate_across_slots(session_id, keys, user_id or "")
        if self._tagged:
            script_keys = [keys[0], new_keys[0], keys[1], new_keys[1]]
        else:
            script_keys = [keys[0], new_keys[0]]
        reply = await self._run(
            "rotate a session",
            _ROTATE,
            script_keys,
            [
                session_id,
                new_id,
                f'"{new_id}"',
                user_id or "",
                _encode_json(user_id or ""),
                "1" if new_user else "0",
                tag,
            ],
            wrote=_found,
        )
        if reply is None:
            self._counts["misses"] += 1
            return None
        if isinstance(reply, list):
            if reply[0] == 2:
                raise self._malformed_record(keys[0], reply[1])
            raise RedkitError("a fresh session id was taken; is the RNG broken?")
        self._counts["rotated"] += 1
        return self._decode(reply, new_keys[0])

    async def _rotate_across_slots(
        self, session_id: str, keys: list[str], user_id: str
    ) -> Session | None:
        reply = await self._run(
            "rotate a session", _READ, keys, ["take", 0, session_id], wrote=_found
        )
        if reply is None:
            self._counts["misses"] += 1
            return None
        if isinstance(reply, list):
            raise self._malformed_record(keys[0], reply[1])
        old = self._decode(reply, keys[0])
        encoded = _encode_json(old.data)
        for _ in range(3):
            new_id, new_keys, tag = self._layout.new_id(user_id)
            session = await self._create(new_id, new_keys, tag, user_id, encoded)
            if session is not None:
                self._counts["created"] -= 1
                self._counts["rotated"] += 1
                return session
        raise RedkitError("three fresh session ids in a row were taken; is the RNG broken?")

    @operation("session.destroy")
    async def destroy(self, session_id: str) -> bool:
        """Delete the session and its index entry; True if it existed."""
        keys = self._keys(session_id)
        if keys is None:
            return False
        found = await self._run("destroy a session", _DESTROY, keys, [session_id], wrote=bool)
        if found:
            self._counts["destroyed"] += 1
        return bool(found)

    async def destroy_all_for_user(self, user_id: str) -> int:
        """Delete every live session of ``user_id`` ("log out everywhere");
        returns how many there were. Costs O(that user's sessions): it walks
        the user's index, never the keyspace; one round trip per store
        secret, so sessions tagged under an older secret end too."""
        user_id = _check_user_id(user_id)
        if not user_id:
            raise ConfigError("user_id must not be empty: anonymous sessions are not indexed")
        count = 0
        for index, tag in self._layout.index_keys(user_id):
            count += int(
                await self._run(
                    "destroy a user's sessions", _DESTROY_ALL, [index], [user_id, tag], wrote=bool
                )
            )
        self._counts["destroyed"] += count
        return count

    async def list_for_user(self, user_id: str) -> list[Session]:
        """The live sessions of ``user_id``, newest first, those tagged under
        an older secret included; one round trip per store secret,
        O(that user's sessions). Index entries of ended sessions are dropped
        on the way."""
        user_id = _check_user_id(user_id)
        if not user_id:
            raise ConfigError("user_id must not be empty: anonymous sessions are not indexed")
        sessions = []
        for index, tag in self._layout.index_keys(user_id):
            replies = await self._run("list a user's sessions", _LIST, [index], [user_id, tag])
            for raw in replies:
                try:
                    session = self._decode(raw, index)
                except SerializationError:
                    log.warning("skipping an unreadable session record listed in %s", index)
                    continue
                if session.user_id == user_id:
                    sessions.append(session)
        sessions.sort(key=lambda s: s.created_at, reverse=True)
        return sessions

    def stats(self) -> SessionStats:
        """Counters since the store was made."""
        return snapshot(SessionStats, self._counts)
