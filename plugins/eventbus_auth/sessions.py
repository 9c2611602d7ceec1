"""Private chat sessions: who may join, read and speak in room ``session:<id>``.

A session belongs to the user who opened it: the first user without a privileged role to
join it or send to it claims it, and keeps it while they use it (each use renews the claim
for :data:`OWNER_TTL` seconds, or ``EVENTBUS_HISTORY_MAX_AGE`` if that is longer). A token
may instead list its user's sessions in a ``sessions`` claim (``["s-1", "s-2"]``): such a
user may use exactly those, whoever else uses them. Roles ``admin`` and ``agent`` may
join, read and speak in any session, and never claim one.

Owners live in Redis when ``EVENTBUS_REDIS_URL`` is set (key
``<EVENTBUS_REDIS_PREFIX>:session-owner:<id>``, written with ``SET NX`` and an expiry), so
every server process agrees; otherwise in this process's memory, bounded (see
:class:`MemoryOwners`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from eventbus.config import ConfigError
from eventbus.identity import AuthError, Identity
from eventbus.redact import clean

if TYPE_CHECKING:
    from eventbus.config import Config

log = logging.getLogger("eventbus.auth")

SESSION_PREFIX = "session:"
#: Roles that may join, read and speak in every session without claiming it.
PRIVILEGED_ROLES = ("admin", "agent")
#: The actions on a session room that the session rules decide.
SESSION_ACTIONS = frozenset({"join", "publish", "history"})
#: Seconds a claim lasts after its owner's last use.
OWNER_TTL = 24 * 3600.0
MAX_SESSIONS = 100_000
MAX_SESSIONS_PER_USER = 1_000


def session_of(room: str | None) -> str | None:
    """The session id of a ``session:<id>`` room, else ``None``."""
    if room and room.startswith(SESSION_PREFIX) and len(room) > len(SESSION_PREFIX):
        return room[len(SESSION_PREFIX):]
    return None


def parse_sessions(value: Any, source: str) -> frozenset[str] | None:
    """The ``sessions`` claim: ``None`` when absent, a string is one session, else a list of
    strings; anything else is an :class:`AuthError` (``unauthorized``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(s, str) for s in value):
        return frozenset(value)
    raise AuthError(f"{source}: 'sessions' must be a list of strings", code="unauthorized")


def listed_sessions(identity: Identity) -> frozenset[str] | None:
    """The sessions ``identity``'s token lists, ``None`` when it lists none. A malformed
    claim (from a strategy that did not check it) lists nothing, so it grants nothing."""
    claims = identity.claims if isinstance(identity.claims, Mapping) else {}
    try:
        return parse_sessions(claims.get("sessions"), "token")
    except AuthError:
        return frozenset()


class OwnerStore(Protocol):
    def use(self, session_id: str, user_id: str, claim: bool) -> str | None:
        """The session's owner after this use: with ``claim``, ``user_id`` becomes the owner
        of a session that has none; the owner's own use renews the claim. ``None`` when the
        session has no owner (or the store cannot tell)."""


class MemoryOwners:
    """Owners in this process, oldest use first.

    Bounded by ``max_sessions`` claims in all and ``max_per_user`` per user. A claim lapses
    ``ttl`` seconds after its owner's last use, and only lapsed claims are ever removed:
    when the table is full of live claims, a new session cannot be claimed (the user gets
    ``forbidden``, counted as ``full``) rather than a live claim being dropped, because a
    dropped claim would let the next user take over a session whose history is still kept.
    One user cannot fill the table alone (``max_per_user``).

    As the cache of :class:`RedisOwners` (``remember``), entries are copies of what Redis
    said; a full cache forgets its least recently used entry, which is safe because Redis
    still holds the claim.
    """

    def __init__(self, ttl: float = OWNER_TTL, max_sessions: int = MAX_SESSIONS,
                 max_per_user: int = MAX_SESSIONS_PER_USER, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_per_user = max_per_user
        self.clock = clock
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id -> (owner, expires)
        self._per_user: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._owners)

    def use(self, session_id: str, user_id: str, claim: bool) -> str | None:
        now = self.clock()
        with self._lock:
            owner = self._live(session_id, now)
            if owner == user_id:
                self._owners[session_id] = (owner, now + self.ttl)
                self._owners.move_to_end(session_id)
            if owner is not None or not claim:
                return owner
            self._drop_lapsed(now)
            if len(self._owners) >= self.max_sessions:
                self.counters["full"] += 1
                log.warning("session table full (%d claims): %s cannot open a session",
                            self.max_sessions, clean(user_id))
                return None
            if self._per_user[user_id] >= self.max_per_user:
                self.counters["user_full"] += 1
                log.warning("user %s holds %d sessions, the most one user may", clean(user_id),
                            self.max_per_user)
                return None
            self._owners[session_id] = (user_id, now + self.ttl)
            self._per_user[user_id] += 1
            self.counters["claims"] += 1
            return user_id

    def remember(self, session_id: str, owner: str, ttl: float) -> None:
        """Keep a copy of an owner another store answered; evicts the least recently used
        copy when full."""
        now = self.clock()
        with self._lock:
            previous = self._owners.pop(session_id, None)
            if previous is not None:
                self._forget_owner(previous[0])
            self._drop_lapsed(now)
            while len(self._owners) >= self.max_sessions:
                _, (evicted, _) = self._owners.popitem(last=False)
                self._forget_owner(evicted)
                self.counters["evicted"] += 1
            self._owners[session_id] = (owner, now + ttl)
            self._per_user[owner] += 1

    # -- under the lock ---------------------------------------------------------------
    def _live(self, session_id: str, now: float) -> str | None:
        record = self._owners.get(session_id)
        if record is None:
            return None
        if record[1] <= now:
            del self._owners[session_id]
            self._forget_owner(record[0])
            self.counters["lapsed"] += 1
            return None
        return record[0]

    def _drop_lapsed(self, now: float) -> None:
        # Oldest use first, and every claim lasts the same ttl: lapsed claims are at the front.
        while self._owners:
            session_id, (owner, expires) = next(iter(self._owners.items()))
            if expires > now:
                return
            del self._owners[session_id]
            self._forget_owner(owner)
            self.counters["lapsed"] += 1

    def _forget_owner(self, owner: str) -> None:
        self._per_user[owner] -= 1
        if self._per_user[owner] <= 0:
            del self._per_user[owner]


#: Claim a free session or renew the owner's claim, atomically; returns the owner.
CLAIM_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return ARGV[1] end
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return owner
"""
#: Renew the owner's claim without claiming a free session; returns the owner or nil.
PEEK_LUA = """
local owner = redis.call('GET', KEYS[1])
if owner and owner == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return owner
"""


class RedisOwners:
    """Owners shared by every server process through Redis.

    While Redis does not answer, the owners this process last heard of still get in (a
    local copy, :class:`MemoryOwners`), and nobody can claim a session: a claim made here
    could clash with one made by another server.
    """

    def __init__(self, url: str, prefix: str, ttl: float = OWNER_TTL, client: Any = None):
        try:
            import redis
        except ImportError:
            raise ConfigError("EVENTBUS_REDIS_URL is set but redis is not installed: "
                              "pip install 'eventbus[redis]'") from None
        self.errors = (redis.exceptions.RedisError, OSError)
        self.client = client or redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                                     socket_connect_timeout=2.0)
        self.prefix = prefix
        self.ttl = ttl
        self.cache = MemoryOwners(ttl)
        self.counters: Counter[str] = Counter()
        self._claim = self.client.register_script(CLAIM_LUA)
        self._peek = self.client.register_script(PEEK_LUA)
        self._failing = False

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:session-owner:{session_id}"

    def use(self, session_id: str, user_id: str, claim: bool) -> str | None:
        script = self._claim if claim else self._peek
        try:
            owner = script(keys=[self.key(session_id)], args=[user_id, max(1, int(self.ttl))])
        except self.errors as exc:
            self.counters["errors"] += 1
            if not self._failing:
                self._failing = True
                log.warning("session owners: redis unavailable (%s: %s); only known owners get in",
                            type(exc).__name__, exc)
            return self.cache.use(session_id, user_id, claim=False)
        if self._failing:
            self._failing = False
            log.warning("session owners: redis is back")
        if owner is not None:
            self.cache.remember(session_id, owner, self.ttl)
        return owner


class SessionRules:
    """The private-session rules over one :class:`OwnerStore`."""

    def __init__(self, store: OwnerStore):
        self.store = store

    @classmethod
    def from_config(cls, config: Config) -> SessionRules | None:
        """The rules for ``config``; ``None`` when ``EVENTBUS_CHAT_SESSIONS=open``."""
        if config.chat_sessions == "open":
            return None
        ttl = max(OWNER_TTL, float(config.history_max_age))
        if config.redis_url:
            prefix = config.redis_prefix
            return cls(RedisOwners(config.redis_url, prefix, ttl))
        return cls(MemoryOwners(ttl))

    def allows(self, identity: Identity, session_id: str, action: str) -> bool:
        """May ``identity`` ``join``, ``publish`` in or read the ``history`` of the session?

        Privileged roles always may. A token that lists sessions may use exactly those. Any
        other user may use a session they own; joining or publishing claims a free one
        (reading history never does).
        """
        if identity.has_role(*PRIVILEGED_ROLES):
            return True
        listed = listed_sessions(identity)
        if listed is not None and session_id not in listed:
            return False
        owner = self.store.use(session_id, identity.user_id, claim=action != "history")
        return listed is not None or owner == identity.user_id
