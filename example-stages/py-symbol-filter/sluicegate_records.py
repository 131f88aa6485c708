"""Record framing and a map-stage driver for sluicegate stages written in Python.

Pure Python, no dependencies: copy it next to your stage. A chunk is a batch of records, each
framed by its length as a little-endian u32 followed by that many bytes (docs/protocol.md).

``MapStage`` implements the generator protocol for a stage that turns each input record into
zero or more output records: subclass it, define ``map`` (and optionally ``init`` and
``on_close``), and name the subclass ``Generator`` in your app module. It primes on the first
``resume(0)``, answers pauses with an empty chunk, never returns more records than the credits
it was given (extra output is carried to the next call, never dropped), pulls only what it
needs from upstream, and returns ``None`` once upstream is finished and nothing is pending.
"""

from collections import deque
import struct

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


class MapStage:
    """The generator protocol for a record-by-record map (see the module docs)."""

    def __init__(self):
        self._primed = False
        self._pending = deque()
        self._upstream_done = False

    # --- what a stage author overrides -------------------------------------------------
    def init(self, config):
        """Called once, while priming, with the configuration as (key, value) pairs."""

    def map(self, record):
        """Returns an iterable of output records for one input record."""
        return (record,)

    def on_close(self):
        """Called once, at close. Must not pull from upstream."""

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
