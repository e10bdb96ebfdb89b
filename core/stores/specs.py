"""Stored specs and their build history in Redis (persisted by Redis AOF), as PrimeHub kept ImageSpec objects
with their build jobs beside them; history is pruned like OpenShift's, logs with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar

import redis
from pydantic import ValidationError

from core.errors import ConcurrentChange, UnknownSpec
from core.phases import BuildPhase
from core.reference import ImageReference, parse_reference
from core.result import BuildResult, utcnow
from core.spec import ImageSpec
from core.stored import HistoryEntry, HistoryMark, StoredSpec, Trigger
from core.stores.builds import RECORD_KEY, BuildState
from core.stores.logs import LOG_KEY, BuildLog
from core.tagging import compute_tag

SPEC_KEY = "imagebuilder:spec:{name}"  # JSON StoredSpec
SPECS_KEY = "imagebuilder:specs"  # sorted set of stored spec names, for listing in order
HISTORY_KEY = "imagebuilder:history:{name}"  # sorted set: build id -> submitted (epoch s)
# JSON HistoryMark (an older version kept a whole HistoryEntry here); no expiry, pruning removes it with the build's
# record, which a stored spec's build keeps for as long as its history does
ENTRY_KEY = "imagebuilder:history-entry:{id}"
# When one of a stored spec's builds ends, its history keeps the newest N succeeded and M failed or cancelled builds
# (their records say which) and drops the rest, with their marks, records and logs; a mark whose record is gone shows
# nothing and goes too. For the script that ends builds (core.stores.ending), so that whoever sees an end sees the
# history pruned. Needs LUA_PHASES.
LUA_PRUNE_HISTORY = f"""
local function prune_history(name, keep_succeeded, keep_failed)
  local history = '{HISTORY_KEY.format(name="")}' .. name
  local succeeded, failed = 0, 0
  for _, id in ipairs(redis.call('ZREVRANGE', history, 0, -1)) do
    local entry = '{ENTRY_KEY.format(id="")}' .. id
    local phase = phase_of(id) or cjson.decode(redis.call('GET', entry) or '{{}}')['phase']
    local over = not phase
    if phase == '{BuildPhase.SUCCEEDED.value}' then
      succeeded = succeeded + 1
      over = succeeded > tonumber(keep_succeeded)
    elseif phase and is_final(phase) then
      failed = failed + 1
      over = failed > tonumber(keep_failed)
    end
    if over then
      redis.call('ZREM', history, id)
      redis.call('DEL', entry, '{RECORD_KEY.format(id="")}' .. id, '{LOG_KEY.format(id="")}' .. id)
    end
  end
end
"""
# The index of specs by base, written with each apply and delete: per normalised base repository, a hash of spec
# name -> the base's tag (or "@digest" when pinned), for the specs built on any of its images; and per repository
# and tag, the set of specs built on that very tag, so that a push reads only those. Made from the specs once, for
# data stored before it (or before its latest shape) existed: the marker holds the shape's version.
BASED_ON_KEY = "imagebuilder:based-on:{repository}"
BASED_ON_TAG_KEY = "imagebuilder:based-on-tag:{repository}:{tag}"
BASED_ON_INDEXED_KEY = "imagebuilder:based-on-indexed"
BASE_INDEX_VERSION = "2"
MAX_WATCHED_TRIES = 20  # optimistic retries of one WATCHed step whose reads another writer changed meanwhile
T = TypeVar("T")

def base_key(reference: ImageReference) -> tuple[str, str]:
    """Where a base is indexed: its repository (registry/path), and its tag (`latest` when it names none), or
    `@digest` when pinned (a pinned base never changes, so no push matches it)."""
    if reference.digest:
        return reference.name, f"@{reference.digest}"
    return reference.name, reference.tag or "latest"


def _index_base(pipe: redis.client.Pipeline, spec: ImageSpec) -> None:
    repository, tag = base_key(parse_reference(spec.base_image))
    pipe.hset(BASED_ON_KEY.format(repository=repository), spec.name, tag)
    pipe.sadd(BASED_ON_TAG_KEY.format(repository=repository, tag=tag), spec.name)


def _unindex_base(pipe: redis.client.Pipeline, spec: ImageSpec) -> None:
    repository, tag = base_key(parse_reference(spec.base_image))
    pipe.hdel(BASED_ON_KEY.format(repository=repository), spec.name)
    pipe.srem(BASED_ON_TAG_KEY.format(repository=repository, tag=tag), spec.name)


SpecReader = Callable[[str], "StoredSpec | None"]
StoredForm = tuple[ImageSpec, "str | None"]  # the spec as stored and built, and the spec it takes platforms from


class ChainRules(Protocol):
    """What SpecStore.apply asks of image chains (core/imagechain.py), reading other specs through `read`."""

    def stored_form(self, spec: ImageSpec, read: SpecReader) -> StoredForm:
        """The form `spec` is stored in; raises to refuse it."""

    def built_on_image_of(self, stored: StoredSpec) -> list[str]:
        """The stored specs whose base is `stored`'s current image."""


class NoChains:
    """Specs stored as applied, none following another (a store used without image chains)."""

    def stored_form(self, spec: ImageSpec, read: SpecReader) -> StoredForm:
        return spec, None

    def built_on_image_of(self, stored: StoredSpec) -> list[str]:
        return []


def _stored_as(form: StoredForm, updated_at: datetime) -> StoredSpec:
    spec, platforms_from = form
    return StoredSpec(spec=spec, tag=compute_tag(spec), updated_at=updated_at, platforms_from=platforms_from)


def _same(stored: StoredSpec, other: StoredSpec) -> bool:
    return stored.spec == other.spec and stored.platforms_from == other.platforms_from


def _watched(pipe: redis.client.Pipeline, name: str) -> StoredSpec | None:
    """A spec read on a pipeline that watches it, so that the transaction fails if it changes before the write."""
    key = SPEC_KEY.format(name=name)
    pipe.watch(key)
    raw = pipe.get(key)
    return StoredSpec.model_validate_json(raw) if raw else None


def _followers(pipe: redis.client.Pipeline, changed: StoredSpec, chains: ChainRules) -> list[StoredSpec]:
    """The specs whose inherited platforms change with `changed` (built on its current image, and on theirs in
    turn), re-derived; read WATCHed, to be written with it. Their tags change: each is rebuilt once the spec
    before it in the chain has pushed its image (trigger `base-rebuilt`)."""
    fresh = {changed.spec.name: changed}
    read: SpecReader = lambda name: fresh.get(name) or _watched(pipe, name)  # noqa: E731
    parents, followers = [changed], []
    while parents:
        for name in chains.built_on_image_of(parents.pop()):
            child = None if name in fresh else read(name)
            if child is None:
                continue
            rederived = _stored_as(chains.stored_form(child.written, read), child.updated_at)
            if not _same(child, rederived):
                fresh[name] = rederived
                followers.append(rederived)
                parents.append(rederived)
    return followers


def _entry(raw: str, record: BuildResult | None) -> HistoryEntry | None:
    """A build's history entry: its mark with its record; an older version's whole entry where the record is gone."""
    if record is not None:
        return HistoryEntry.of(HistoryMark.model_validate_json(raw), record)
    try:
        return HistoryEntry.model_validate_json(raw)
    except ValidationError:  # a mark whose record is gone: nothing left to show
        return None


def _first_success(ids: list[str], entries: dict[str, HistoryEntry]) -> HistoryEntry | None:
    kept = (entries[i] for i in ids if i in entries)
    return next((e for e in kept if e.phase is BuildPhase.SUCCEEDED and not e.error), None)


class SpecStore:
    """Stored specs, their history, and its pruning to the last N succeeded and M failed or cancelled builds."""

    def __init__(self, client: redis.Redis, builds: BuildState, log: BuildLog):
        self._redis = client
        self._builds = builds
        self._log = log
        self._base_indexed = False

    # -- specs ---------------------------------------------------------------------------------------------
    def apply(self, spec: ImageSpec, chains: ChainRules = NoChains()) -> tuple[StoredSpec, bool]:
        """Create or update; True when the spec is new or its tag changed (it should then be built). `chains` gives
        the form it is stored in (or refuses it), and the specs that inherit their platforms from it, which are
        re-derived with it. The specs read and the writes are one atomic step (Redis WATCH: if any of them changes
        before the write, it all runs again on what is there then)."""
        self._ensure_base_index()
        return self._watched(lambda pipe: self._apply_watched(pipe, spec, chains), f"spec {spec.name!r}")

    def _apply_watched(self, pipe: redis.client.Pipeline, spec: ImageSpec,
                       chains: ChainRules) -> tuple[StoredSpec, bool]:
        previous = _watched(pipe, spec.name)
        stored = _stored_as(chains.stored_form(spec, lambda name: _watched(pipe, name)), utcnow())
        if previous is not None and _same(previous, stored):
            pipe.unwatch()
            return previous, False
        followers = _followers(pipe, stored, chains)
        pipe.multi()
        for each in (stored, *followers):
            pipe.set(SPEC_KEY.format(name=each.spec.name), each.model_dump_json())
        pipe.zadd(SPECS_KEY, {spec.name: 0})
        if previous is not None:
            _unindex_base(pipe, previous.spec)
        _index_base(pipe, spec)
        pipe.execute()
        return stored, previous is None or previous.tag != stored.tag

    def find(self, name: str) -> StoredSpec | None:
        raw = self._redis.get(SPEC_KEY.format(name=name))
        return StoredSpec.model_validate_json(raw) if raw else None

    def get(self, name: str) -> StoredSpec:
        stored = self.find(name)
        if stored is None:
            raise UnknownSpec(f"no stored spec named {name!r}")
        return stored

    def names(self, start: int = 0, count: int = -1) -> list[str]:
        return self._redis.zrange(SPECS_KEY, start, start + count - 1 if count > 0 else -1)

    def page(self, offset: int, limit: int, contains: str = "") -> tuple[list[str], int]:
        """A page of spec names in name order, those containing `contains` only; and how many match in all.
        Unfiltered, only the page is read; filtered, the names are (10,000 names are one fast read)."""
        if not contains:
            return self.names(offset, limit), int(self._redis.zcard(SPECS_KEY))
        matching = [name for name in self.names() if contains in name]
        return matching[offset:offset + limit], len(matching)

    def with_last_builds(self, names: list[str]) -> list[tuple[StoredSpec, HistoryEntry | None]]:
        """Each named spec that exists, with its newest build; two round trips whatever the number of names."""
        found = self._with_histories(names, last=0)
        entries = self.entries([ids[0] for _, _, ids in found if ids])
        return [(stored, entries.get(ids[0]) if ids else None) for _, stored, ids in found]

    def entries(self, build_ids: list[str]) -> dict[str, HistoryEntry]:
        """The history entries of those builds that are some stored spec's, by build id: each its mark with its
        record; two round trips."""
        raws = self._redis.mget([ENTRY_KEY.format(id=i) for i in build_ids]) if build_ids else []
        marked = {i: raw for i, raw in zip(build_ids, raws) if raw}
        records = self._builds.records(list(marked))
        return {i: entry for i, raw in marked.items() if (entry := _entry(raw, records.get(i))) is not None}

    def all(self) -> list[StoredSpec]:
        names = self.names()
        raws = self._redis.mget([SPEC_KEY.format(name=n) for n in names]) if names else []
        return [StoredSpec.model_validate_json(raw) for raw in raws if raw]

    def delete(self, name: str) -> None:
        """Remove the spec and its history (entries and logs); UnknownSpec if there is none."""
        stored = self.get(name)
        ids = self._redis.zrange(HISTORY_KEY.format(name=name), 0, -1)
        self._forget(name, ids)
        pipe = self._redis.pipeline()
        pipe.delete(SPEC_KEY.format(name=name), HISTORY_KEY.format(name=name))
        pipe.zrem(SPECS_KEY, name)
        _unindex_base(pipe, stored.spec)
        pipe.execute()

    # -- the index by base -----------------------------------------------------------------------------------
    def based_on(self, pushed: list[ImageReference]) -> list[str]:
        """Names of the specs whose base is one of these tags (same registry, repository and tag); one round
        trip that reads only the specs on those tags, whatever the number of stored specs."""
        self._ensure_base_index()
        pipe = self._redis.pipeline(transaction=False)
        for reference in pushed:
            repository, tag = base_key(reference)
            pipe.smembers(BASED_ON_TAG_KEY.format(repository=repository, tag=tag))
        return sorted({name for found in pipe.execute() for name in found})

    def based_on_repository(self, repository: str) -> dict[str, str]:
        """Every spec whose base is in `repository` (registry/path), with the base's tag (or @digest)."""
        self._ensure_base_index()
        return self._redis.hgetall(BASED_ON_KEY.format(repository=repository))

    def _ensure_base_index(self) -> None:
        """Index the stored specs by base, once per store and Redis: a no-op after the first look. The specs read
        and the index written are one step (WATCH), so an apply or delete meanwhile is never undone by it."""
        if self._base_indexed or self._redis.get(BASED_ON_INDEXED_KEY) == BASE_INDEX_VERSION:
            self._base_indexed = True
            return
        self._watched(self._index_all, "the index of specs by base")
        self._base_indexed = True

    def _index_all(self, pipe: redis.client.Pipeline) -> None:
        pipe.watch(SPECS_KEY)
        keys = [SPEC_KEY.format(name=name) for name in pipe.zrange(SPECS_KEY, 0, -1)]
        if keys:
            pipe.watch(*keys)
        raws = pipe.mget(keys) if keys else []
        pipe.multi()
        for raw in raws:
            if raw:
                _index_base(pipe, StoredSpec.model_validate_json(raw).spec)
        pipe.set(BASED_ON_INDEXED_KEY, BASE_INDEX_VERSION)
        pipe.execute()

    def _watched(self, step: Callable[[redis.client.Pipeline], T], what: str) -> T:
        """Run `step` (its reads WATCHed, its writes one MULTI) until nothing it read changed before it wrote."""
        with self._redis.pipeline() as pipe:
            for _ in range(MAX_WATCHED_TRIES):
                try:
                    return step(pipe)
                except redis.WatchError:
                    continue
        raise ConcurrentChange(f"{what} was changed {MAX_WATCHED_TRIES} times by others meanwhile; try again")

    # -- history -------------------------------------------------------------------------------------------
    def record(self, name: str, result: BuildResult, tag: str, trigger: Trigger) -> None:
        """Add a just-submitted build to the spec's history (its record, submitted kept, holds the rest)."""
        mark = HistoryMark(id=result.id, name=name, tag=tag, trigger=trigger)
        pipe = self._redis.pipeline()
        pipe.set(ENTRY_KEY.format(id=result.id), mark.model_dump_json())
        pipe.zadd(HISTORY_KEY.format(name=name), {result.id: time.time()})
        pipe.execute()

    def history(self, name: str) -> list[HistoryEntry]:
        """Every kept build of the spec, newest first."""
        ids = self._redis.zrevrange(HISTORY_KEY.format(name=name), 0, -1)
        entries = self.entries(ids)
        return [entries[i] for i in ids if i in entries]

    def with_last_success(self, names: list[str]) -> dict[str, tuple[StoredSpec, HistoryEntry | None]]:
        """Each named spec that exists, with its newest build that succeeded; two round trips in all."""
        found = self._with_histories(names, last=-1)
        entries = self.entries([build_id for _, _, ids in found for build_id in ids])
        return {name: (stored, _first_success(ids, entries)) for name, stored, ids in found}

    def _with_histories(self, names: list[str], *, last: int) -> list[tuple[str, StoredSpec, list[str]]]:
        """Each named spec that exists, with the ids of its builds newest first, up to rank `last` (-1: all);
        one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.get(SPEC_KEY.format(name=name))
            pipe.zrevrange(HISTORY_KEY.format(name=name), 0, last)
        answers = pipe.execute()
        return [(name, StoredSpec.model_validate_json(raw), ids)
                for name, raw, ids in zip(names, answers[0::2], answers[1::2]) if raw]

    def _forget(self, name: str, ids: list[str]) -> None:
        if not ids:
            return
        pipe = self._redis.pipeline()
        pipe.zrem(HISTORY_KEY.format(name=name), *ids)
        pipe.delete(*[ENTRY_KEY.format(id=i) for i in ids])
        pipe.execute()
        self._builds.forget(ids)
        self._log.forget(ids)
