"""The Redis side of a queued ingest (see :mod:`chenyu_assets.batch.queue`): one Stream of
item ids read by one consumer group, and one record per item.

Keys, all under ``chenyu-assets:queue:{JOB}:`` (one hash tag: one cluster slot)::

    stream        XADD id=<item id> per item, read by the group "workers"
    item:<id>     the item's record (a hash): key, name, path, url, label, asset_type,
                  state, worker, attempts, sent, asset_id, error_code, message, updated
    counts        items per state (a hash), kept by the scripts below with every move
    problems      ids of failed / retryable / skipped items (a set); retryable: the
                  retryable ones (requeued when a worker starts)
    meta          group_id, created
    enqueuers     live enqueue runs (a sorted set of leases on the server's clock)
    workers       live workers (the same, renewed by each worker's heartbeat)

An item id is 32 hex digits of blake2b(key), so enqueueing a key twice finds its record
and adds nothing. States: ``queued`` → ``claimed`` → ``sending`` (``sent`` = 1, set only
by the owner of the stream entry, atomically) → ``created`` → ``active`` | ``failed`` |
``retryable`` | ``skipped``. No record holds a secret: URLs with credentials are refused at
enqueue, upload URLs stay in the worker's memory and journal, messages are redacted.

Every Redis failure raises :class:`~chenyu_assets.errors.LimiterUnavailableError` (the
run stops, as when the shared limiter is lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Final

from chenyu_assets._core.logs import redact_url, register_secret
from chenyu_assets._core.redis_limits import import_redis
from chenyu_assets.errors import ConfigurationError, LimiterUnavailableError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["GROUP", "QueueStore", "item_id"]

GROUP: Final = "workers"

#: moves a record to another state, keeping ``counts`` and the problem sets in step
_MOVE: Final = """
local function move(rec, counts, new, base)
  local old = redis.call('HGET', rec, 'state')
  if old == new then return end
  if old then redis.call('HINCRBY', counts, old, -1) end
  redis.call('HINCRBY', counts, new, 1)
  redis.call('HSET', rec, 'state', new)
  local id = string.sub(rec, #base + 6)
  if new == 'failed' or new == 'retryable' or new == 'skipped' then
    redis.call('SADD', base .. 'problems', id)
  else
    redis.call('SREM', base .. 'problems', id)
  end
  if new == 'retryable' then redis.call('SADD', base .. 'retryable', id)
  else redis.call('SREM', base .. 'retryable', id) end
end
local function owner(stream, entry)
  local p = redis.call('XPENDING', stream, 'workers', entry, entry, 1)
  if #p == 1 then return p[1][2] end
  return false
end
"""

#: KEYS record; ARGV base, item id, state, field, value... -> 1 added, 0 known already
_ENQUEUE: Final = (
    _MOVE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
move(KEYS[1], ARGV[1] .. 'counts', ARGV[3], ARGV[1])
redis.call('HINCRBY', ARGV[1] .. 'counts', 'total', 1)
if ARGV[3] == 'queued' then redis.call('XADD', ARGV[1] .. 'stream', '*', 'id', ARGV[2]) end
return 1
"""
)

#: KEYS record; ARGV base, entry id, me, now -> the record (after the claim), or false when
#: it is finished already (the entry is acknowledged)
_CLAIM: Final = (
    _MOVE
    + """
local stream = ARGV[1] .. 'stream'
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'active' or state == 'failed' or state == 'skipped'
   or state == 'retryable' then
  redis.call('XACK', stream, 'workers', ARGV[2])
  return false
end
move(KEYS[1], ARGV[1] .. 'counts', 'claimed', ARGV[1])
redis.call('HSET', KEYS[1], 'worker', ARGV[3], 'updated', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return redis.call('HGETALL', KEYS[1])
"""
)

#: KEYS record; ARGV base, entry id, me, now -> 1: this worker owns the entry and may send
#: CreateAsset (the record says ``sending``, ``sent`` = 1); 0: another worker owns it
_FENCE: Final = (
    _MOVE
    + """
if owner(ARGV[1] .. 'stream', ARGV[2]) ~= ARGV[3] then return 0 end
move(KEYS[1], ARGV[1] .. 'counts', 'sending', ARGV[1])
redis.call('HSET', KEYS[1], 'sent', 1, 'worker', ARGV[3], 'updated', ARGV[4])
return 1
"""
)

#: KEYS record; ARGV base, entry id, state, asset id, code, message, now, me, ack
#: (a finished state never goes back; ``active`` is never overwritten by a failure)
_SET: Final = (
    _MOVE
    + """
local old = redis.call('HGET', KEYS[1], 'state')
local done = old == 'active' or old == 'failed' or old == 'skipped' or old == 'retryable'
local final = ARGV[3] == 'active' or ARGV[3] == 'failed' or ARGV[3] == 'skipped'
   or ARGV[3] == 'retryable'
if old and old ~= 'active' and (final or not done) then
  move(KEYS[1], ARGV[1] .. 'counts', ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'asset_id', ARGV[4], 'updated', ARGV[7], 'worker', ARGV[8])
  if final then redis.call('HSET', KEYS[1], 'error_code', ARGV[5], 'message', ARGV[6]) end
end
if ARGV[9] == '1' then redis.call('XACK', ARGV[1] .. 'stream', 'workers', ARGV[2]) end
return 1
"""
)

#: ARGV base, me, entry ids... -> the ids this worker no longer owns (the others' idle time
#: is reset: XCLAIM to itself, JUSTID, no delivery counted)
_HEARTBEAT: Final = (
    _MOVE
    + """
local stream, lost = ARGV[1] .. 'stream', {}
for i = 3, #ARGV do
  if owner(stream, ARGV[i]) == ARGV[2] then
    redis.call('XCLAIM', stream, 'workers', ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
)

#: ARGV base, count -> retryable items put back on the stream
_REQUEUE: Final = (
    _MOVE
    + """
local ids = redis.call('SRANDMEMBER', ARGV[1] .. 'retryable', tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local rec = ARGV[1] .. 'item:' .. id
  move(rec, ARGV[1] .. 'counts', 'queued', ARGV[1])
  redis.call('XADD', ARGV[1] .. 'stream', '*', 'id', id)
end
return #ids
"""
)

#: KEYS a set of leases; ARGV op (add | del | count | list), member, ttl ms -> how many are
#: live (list: their names)
_LEASE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'add' then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
elseif ARGV[1] == 'del' then redis.call('ZREM', KEYS[1], ARGV[2])
elseif ARGV[1] == 'list' then return redis.call('ZRANGE', KEYS[1], 0, -1) end
return redis.call('ZCARD', KEYS[1])
"""


def item_id(key: str) -> str:
    """An item's id in the queue: 32 hex digits of blake2b(key)."""
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


class QueueStore:
    """The keys of one queued job in the Redis at ``url`` (see the module docstring).
    Building one does no I/O; :meth:`aclose` closes the connection."""

    def __init__(self, url: str, *, job: str = "default", timeout: float = 5.0) -> None:
        aioredis, redis = import_redis(url, "--queue", "queue URL")
        if not job or not job.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigurationError("a job name is letters, digits, '.', '_' and '-'")
        from urllib.parse import urlsplit

        register_secret(urlsplit(url).password)
        self._aioredis = aioredis
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self.url = url
        self.shown_url = redact_url(url)
        self.job = job
        self.base = f"chenyu-assets:queue:{{{job}}}:"
        self.stream = self.base + "stream"
        self.timeout = timeout
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<QueueStore {self.shown_url} job={self.job}>"

    def record_key(self, iid: str) -> str:
        return f"{self.base}item:{iid}"

    def redis(self) -> Redis:
        if self._client is None:
            self._client = self._aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                encoding_errors="surrogateescape",  # file names that are not UTF-8
            )
        return self._client

    async def guard(self, call: Awaitable[Any]) -> Any:
        """Await one Redis call; any failure becomes LimiterUnavailableError."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await call
        except self._errors as exc:
            raise LimiterUnavailableError(
                f"queue at {self.shown_url} unavailable ({type(exc).__name__}: {exc}); "
                "stopped (rerun the same command once Redis is back: the job resumes)"
            ) from exc

    async def script(self, text: str, keys: Sequence[str], *args: str | int) -> Any:
        script = self._scripts.get(text)
        if script is None:
            script = self._scripts[text] = self.redis().register_script(text)
        return await self.guard(script(keys=list(keys), args=list(args)))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- the job ------------------------------------------------------------------------
    async def open_job(self, group_id: str | None) -> str:
        """The job's group id (``group_id`` records it for a new job; a job holds one group:
        another id is refused). Creates the stream and its consumer group if missing."""
        r = self.redis()
        if group_id is not None:
            await self.guard(r.hsetnx(self.base + "meta", "group_id", group_id))
            await self.guard(r.hsetnx(self.base + "meta", "created", f"{time.time():.3f}"))
        known = await self.guard(r.hget(self.base + "meta", "group_id"))
        if known is None:
            raise ConfigurationError(
                f"queue job {self.job!r} at {self.shown_url} has no items yet: enqueue a "
                "source first (chenyu-assets enqueue SOURCE --queue URL --group-id ID)"
            )
        if group_id is not None and _text(known) != group_id:
            raise ConfigurationError(
                f"queue job {self.job!r} belongs to group {_text(known)}, not {group_id} "
                "(use another --job)"
            )
        try:
            await self.guard(r.xgroup_create(self.stream, GROUP, id="0", mkstream=True))
        except LimiterUnavailableError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        return _text(known)

    async def add(self, rows: Sequence[tuple[str, str, dict[str, str]]]) -> int:
        """Add ``(item id, state, fields)`` rows not known yet (one round trip); how many
        were new."""
        r = self.redis()
        sha = await self.guard(r.script_load(_ENQUEUE))  # then one EVALSHA per row
        pipe = r.pipeline(transaction=False)
        for iid, state, fields in rows:
            flat = [x for kv in fields.items() for x in kv]
            pipe.evalsha(sha, 1, self.record_key(iid), self.base, iid, state, *flat)
        return sum(int(x) for x in await self.guard(pipe.execute()))

    async def lease(self, op: str, member: str, ttl: float = 10.0, *, of: str = "enqueuers") -> int:
        """Enqueuers (``of="enqueuers"``: workers do not end while one is live) and workers
        (``"workers"``: shown by status) announce themselves with a lease."""
        reply = await self.script(_LEASE, [self.base + of], op, member, int(ttl * 1000))
        return int(reply)

    async def live(self, of: str) -> list[str]:
        """The names of the live leases of ``of``."""
        reply = await self.script(_LEASE, [self.base + of], "list", "", 0)
        return sorted(_text(x) for x in reply)

    async def requeue_retryable(self, limit: int = 10_000) -> int:
        return int(await self.script(_REQUEUE, [], self.base, limit))

    # -- a worker's moves -------------------------------------------------------------------
    async def claim(self, me: str, count: int, idle: float) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries: first those idle over ``idle`` s in any worker (a dead
        one's: XAUTOCLAIM), then new ones; each with its record (after the claim)."""
        r = self.redis()
        reply = await self.guard(
            r.xautoclaim(self.stream, GROUP, me, int(idle * 1000), "0-0", count=count)
        )
        entries = list(reply[1] or [])
        for stale in reply[2] if len(reply) > 2 else ():  # trimmed away: nothing to do
            await self.guard(r.xack(self.stream, GROUP, stale))
        if len(entries) < count:
            fresh = await self.guard(
                r.xreadgroup(GROUP, me, {self.stream: ">"}, count=count - len(entries))
            )
            for _stream, more in fresh or []:
                entries += more
        ids = [(_text(e), _text(d.get(b"id", b""))) for e, d in entries if d is not None]
        if not ids:
            return []
        sha = await self.guard(r.script_load(_CLAIM))  # then one EVALSHA per entry
        pipe = r.pipeline(transaction=False)
        now = f"{time.time():.3f}"
        for eid, iid in ids:
            pipe.evalsha(sha, 1, self.record_key(iid), self.base, eid, me, now)
        records = await self.guard(pipe.execute())
        return [
            (eid, {**_pairs(rec), "id": iid})
            for (eid, iid), rec in zip(ids, records, strict=True)
            if rec  # else finished already: acknowledged by the script
        ]

    async def fence(self, me: str, eid: str, iid: str) -> bool:
        now = f"{time.time():.3f}"
        return bool(await self.script(_FENCE, [self.record_key(iid)], self.base, eid, me, now))

    async def set_state(
        self,
        me: str,
        eid: str,
        iid: str,
        state: str,
        *,
        asset_id: str | None = None,
        code: str | None = None,
        message: str | None = None,
        ack: bool = False,
    ) -> None:
        await self.script(
            _SET,
            [self.record_key(iid)],
            self.base,
            eid,
            state,
            asset_id or "",
            code or "",
            message or "",
            f"{time.time():.3f}",
            me,
            "1" if ack else "0",
        )

    async def heartbeat(self, me: str, eids: Sequence[str]) -> set[str]:
        """Reset the idle time of ``eids``; the ones another worker has taken over."""
        if not eids:
            return set()
        lost = await self.script(_HEARTBEAT, [], self.base, me, *eids)
        return {_text(x) for x in lost}

    async def finished(self) -> bool:
        """Nothing left anywhere: no live enqueuer, no entry the group has not read, none
        pending in any worker."""
        if await self.lease("count", ""):
            return False
        r = self.redis()
        groups = await self.guard(r.xinfo_groups(self.stream))
        mine = next((g for g in groups if _text(g.get("name", b"")) == GROUP), None)
        if mine is None:
            return False
        info = await self.guard(r.xinfo_stream(self.stream))
        delivered = _text(mine.get("last-delivered-id", b"0-0"))
        last = _text(info.get("last-generated-id", b"0-0"))
        return delivered == last and int(mine.get("pending", 0)) == 0

    async def snapshot(self, limit: int = 20) -> dict[str, Any]:
        """What ``status --queue`` shows (see :mod:`chenyu_assets._cli_queue`)."""
        r = self.redis()
        meta = _pairs(_flat(await self.guard(r.hgetall(self.base + "meta"))))
        counts = {
            k: int(v)
            for k, v in _pairs(_flat(await self.guard(r.hgetall(self.base + "counts")))).items()
        }
        per_worker: dict[str, int] = {}
        undelivered = 0
        if await self.guard(r.exists(self.stream)):
            summary = await self.guard(r.xpending(self.stream, GROUP))
            for c in summary.get("consumers") or []:
                per_worker[_text(c["name"])] = int(c["pending"])
            groups = await self.guard(r.xinfo_groups(self.stream))
            for g in groups:
                if _text(g.get("name", b"")) == GROUP and g.get("lag") is not None:
                    undelivered = int(g["lag"])
        ids = await self.guard(r.srandmember(self.base + "problems", limit)) if limit else []
        problems = []
        for iid in ids or []:
            rec = _pairs(_flat(await self.guard(r.hgetall(self.record_key(_text(iid))))))
            problems.append({k: rec.get(k) for k in ("key", "state", "error_code", "message")})
        problems.sort(key=lambda p: p["key"] or "")
        enqueuers = await self.lease("count", "")
        workers = await self.live("workers")
        return {
            "job": self.job,
            "queue": self.shown_url,
            "group_id": meta.get("group_id"),
            "total": counts.pop("total", 0),
            "states": {k: v for k, v in sorted(counts.items()) if v},
            "undelivered": undelivered,
            "in_flight": dict(sorted(per_worker.items())),
            "workers": workers,
            "enqueuing": enqueuers,
            "problems": problems,
        }


def _flat(mapping: dict[Any, Any]) -> list[Any]:
    return [x for kv in mapping.items() for x in kv]
