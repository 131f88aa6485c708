"""Record framing and a map-stage driver for sluicegate stages written in Python.

Pure Python, no dependencies: copy it next to your stage. A chunk is a batch of records, each
framed by its length as a little-endian u32 followed by that many bytes (docs/protocol.md).

``MapStage`` implements the generator protocol for a stage that turns each input record into
zero or more output records: subclass it, define ``map`` (and optionally ``init`` and
``on_close``), and name the subclass ``Generator`` in your app module. It primes on the first
``resume(0)``, answers pauses with an empty chunk, never returns more records than the credits
it was given (extra output is carried to the next call, never dropped), pulls only what it
needs from upstream, and returns ``None`` once upstream is finished and nothing is pending.

``State`` makes the stage hot-swappable without losing anything: import it into your app
module and build for the ``stateful-stage`` world. On a swap the old version's pending records,
whether upstream had finished, and whatever your ``snapshot_state`` returns go to the new
version (its ``restore_state`` gets your bytes back). The envelope is the Rust SDK's, so a
Python stage and a Rust rewrite of it can replace each other live.
"""

from collections import deque
import struct

from componentize_py_types import Err
from wit_world.imports import host, upstream

_LEN = struct.Struct("<I")


class FramingError(ValueError):
    """A chunk whose length prefixes do not add up."""


def records(chunk):
    """Yields the records of ``chunk`` as ``bytes``; raises ``FramingError`` on bad framing."""
    view = memoryview(chunk)
    at, end = 0, len(view)
    while at < end:
        if end - at < 4:
            raise FramingError(f"truncated length prefix at byte {at}")
        (size,) = _LEN.unpack_from(view, at)
        at += 4
        if size > end - at:
            raise FramingError(f"record at byte {at - 4} claims {size} bytes, {end - at} left")
        yield bytes(view[at : at + size])
        at += size


def frame(recs):
    """Frames an iterable of ``bytes`` records into one chunk."""
    out = bytearray()
    for rec in recs:
        out += _LEN.pack(len(rec))
        out += rec
    return bytes(out)


def config_dict(pairs):
    """The host's configuration pairs as a dict (a later key wins)."""
    return dict(pairs)


def config_list(pairs, key):
    """A comma-separated configuration value as a list of non-empty, stripped strings."""
    raw = config_dict(pairs).get(key, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


# The one stage of this component instance. componentize-py constructs the exported class
# once per exported *function* (``resume`` and ``close`` each get an instance, and ``State``'s
# ``snapshot`` and ``restore`` too), so every construction must give back the same stage:
# otherwise ``close`` would run on a stage that was never primed and skip the cleanup.
_stage = None


class MapStage:
    """The generator protocol for a record-by-record map (see the module docs). Set up your
    state in ``init``, not ``__init__``: there is one stage per component instance."""

    def __new__(cls):
        global _stage
        if type(_stage) is not cls:
            _stage = super().__new__(cls)
            _stage._primed = False
            _stage._pending = deque()
            _stage._upstream_done = False
        return _stage

    # --- what a stage author overrides -------------------------------------------------
    def init(self, config):
        """Called once, while priming, with the configuration as (key, value) pairs."""

    def map(self, record):
        """Returns an iterable of output records for one input record."""
        return (record,)

    def on_close(self):
        """Called once, at close. Must not pull from upstream."""

    def snapshot_state(self):
        """Bytes for the next version on a hot swap, or ``None`` if there is nothing to carry."""
        return None

    def restore_state(self, state):
        """Takes over the previous version's ``snapshot_state`` bytes (after ``init``). Raise
        an exception to refuse the swap; the previous version then keeps running."""
        raise ValueError("this stage keeps no state to restore")

    # --- the protocol; authors do not call these ------------------------------------------
    def resume(self, credits):
        if not self._primed:
            self._primed = True
            self.init(host.config())
            return b""
        if credits == 0:
            return b""
        out = []
        pending = self._pending
        while len(out) < credits:
            if pending:
                out.append(pending.popleft())
                continue
            if self._upstream_done:
                break
            chunk = upstream.pull(credits - len(out))
            if chunk is None:
                self._upstream_done = True
                break
            for rec in records(chunk):
                for mapped in self.map(rec):
                    if len(out) < credits:
                        out.append(mapped)
                    else:
                        pending.append(mapped)
            if not chunk:
                break  # upstream paused: answer what we have
        if not out and self._upstream_done and not pending:
            return None
        return frame(out)

    def close(self):
        if self._primed:  # nothing was set up if the stage was never primed
            self.on_close()

    def snapshot(self):
        """The hot-swap envelope: pending records, whether upstream finished, the user state."""
        user = self.snapshot_state()
        if not self._pending and not self._upstream_done and user is None:
            return None
        out = bytearray(_LEN.pack(len(self._pending)))
        for rec in self._pending:
            out += _LEN.pack(len(rec))
            out += rec
        out.append(1 if self._upstream_done else 0)
        if user is None:
            out.append(0)
        else:
            out.append(1)
            out += user
        return bytes(out)

    def restore(self, state):
        """Takes over an envelope from ``snapshot`` (or from a Rust SDK stage)."""
        view = memoryview(state)
        try:
            (count,) = _LEN.unpack_from(view, 0)
            at, pending = 4, deque()
            for _ in range(count):
                (size,) = _LEN.unpack_from(view, at)
                at += 4
                if size > len(view) - at:
                    raise ValueError("a pending record runs past the end")
                pending.append(bytes(view[at : at + size]))
                at += size
            done, has_user = view[at], view[at + 1]
        except (struct.error, IndexError, ValueError) as e:
            raise ValueError(f"state envelope is truncated or not from sluicegate: {e}")
        if has_user:
            self.restore_state(bytes(view[at + 2 :]))
        self._pending = pending
        self._upstream_done = done == 1


class State:
    """The ``state`` export of the ``stateful-stage`` world, served by this instance's stage."""

    def snapshot(self):
        return None if _stage is None else _stage.snapshot()

    def restore(self, state):
        if _stage is None or not _stage._primed:
            raise Err("restore before priming: the host primes a new version first")
        try:
            _stage.restore(state)
        except Exception as e:  # the swap is refused with the reason; nothing is lost
            raise Err(str(e))
