"""The market pipeline in CPython, in the two designs the seed weighed: generators with demand
credits sent through `send()` (the design sluicegate puts at a component boundary), and one
thread per stage with bounded `queue.Queue`s (the design it rejected).

Same decode, filter, VWAP and crossover as example-stages/market-data, so the orders' checksum
must equal the Rust variants'. Every variant of the benchmark reads the same ticks, prepared
before timing: here, the file the benchmark wrote, read whole before the clock starts.

Usage: python3 market.py TICKS_FILE CREDITS DESIGN [latency]
  DESIGN: generators | threads
-> prints one JSON line: records, orders, checksum, seconds (the pipeline alone), user_s and
   sys_s (the process's CPU time over the same span, all threads), input_rss_kib (the resident
   set once the input is read) and peak_rss_kib (the peak resident set from then to the end of
   the run, the input included), and with `latency` the time from each tick's emission to its
   order's arrival at the sink, in ns.
"""

import json
import queue
import resource
import sys
import threading
import time
from collections import deque

MASK = (1 << 64) - 1
KEEP = {"AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM"}
QUEUE_BATCHES = 4  # batches in flight per queue, as in the Rust threaded variant

STAMPS = None  # seq -> perf_counter_ns() at emission, when latency is measured


def parse_price(text):
    whole, _, frac = text.partition(".")
    return int(whole) * 10_000 + int((frac + "0000")[:4])


# The work of each stage on one batch, shared by both designs.

def decode_batch(batch):
    out = []
    for line in batch:
        f = line.split(",")
        if len(f) == 6:
            out.append((int(f[0]), f[2], parse_price(f[3]), int(f[4]), f[5]))
    return out


def filter_batch(batch):
    return [t for t in batch if t[1] in KEEP]


class Vwap:
    def __init__(self, size=32):
        self.size, self.windows = size, {}

    def batch(self, batch):
        out = []
        for seq, sym, price, qty, _side in batch:
            w = self.windows.get(sym)
            if w is None:
                w = self.windows[sym] = [deque(), 0, 0]
            w[0].append((price, qty))
            w[1] += price * qty
            w[2] += qty
            if len(w[0]) > self.size:
                p, q = w[0].popleft()
                w[1] -= p * q
                w[2] -= q
            out.append((seq, sym, w[1] // w[2] if w[2] else price, price))
        return out


class Crossover:
    def __init__(self, fast=5, slow=20, qty=100):
        self.fast, self.slow, self.qty, self.state = fast, slow, qty, {}

    def batch(self, batch):
        out = []
        for seq, sym, v, last in batch:
            s = self.state.get(sym)
            if s is None:
                s = self.state[sym] = [deque(), None]
            s[0].append(v)
            if len(s[0]) > self.slow:
                s[0].popleft()
            if len(s[0]) < self.slow:
                continue
            hist = list(s[0])
            above = sum(hist[-self.fast:]) // self.fast > sum(hist) // self.slow
            crossed = s[1] is not None and s[1] != above
            s[1] = above
            if crossed:
                out.append((seq, sym, last, self.qty, "B" if above else "S"))
        return out


def emit(lines, start, credits):
    """The next batch of at most `credits` lines from `start`, stamped when measuring."""
    batch = lines[start:start + credits]
    if STAMPS is not None:
        now = time.perf_counter_ns()
        for i in range(start, start + len(batch)):
            STAMPS[i + 1] = now
    return batch


# Design 1: generators. Each stage is primed with next(), then driven with send(credits): it
# asks its upstream for that many records (`yield from`-style delegation of demand) and yields a
# batch of at most that many.

def source(lines):
    credits = yield
    at = 0
    while at < len(lines):
        batch = emit(lines, at, credits)
        at += len(batch)
        credits = yield batch


def stage(upstream, work):
    credits = yield
    while True:
        try:
            batch = upstream.send(credits)
        except StopIteration:
            return
        credits = yield work(batch)


def run_generators(lines, credits, sink):
    gens = [source(lines)]
    for work in (decode_batch, filter_batch, Vwap().batch, Crossover().batch):
        gens.append(stage(gens[-1], work))
    for gen in gens:  # prime upstream-first, as sluicegate primes stages
        next(gen)
    tail = gens[-1]
    while True:
        try:
            sink(tail.send(credits))
        except StopIteration:
            return


# Design 2: one thread per stage, bounded queues of batches between them; None ends the stream.

def run_threads(lines, credits, sink):
    queues = [queue.Queue(maxsize=QUEUE_BATCHES) for _ in range(5)]

    def produce():
        at = 0
        while at < len(lines):
            batch = emit(lines, at, credits)
            at += len(batch)
            queues[0].put(batch)
        queues[0].put(None)

    def relay(work, q_in, q_out):
        while True:
            batch = q_in.get()
            if batch is None:
                q_out.put(None)
                return
            q_out.put(work(batch))

    works = (decode_batch, filter_batch, Vwap().batch, Crossover().batch)
    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=relay, args=(w, queues[i], queues[i + 1]))
                for i, w in enumerate(works)]
    for t in threads:
        t.start()
    while True:
        batch = queues[4].get()
        if batch is None:
            break
        sink(batch)
    for t in threads:
        t.join()


def encode_order(order):
    seq, sym, price, qty, side = order
    return (seq.to_bytes(8, "little") + sym.encode().ljust(8, b"\0")
            + price.to_bytes(8, "little", signed=True) + qty.to_bytes(4, "little")
            + side.encode() + b"\0\0\0")


def status_kib(key):
    """A `kB` field of /proc/self/status, or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Resets the process's peak resident set to its current one (Linux: `5` into
    /proc/self/clear_refs), so the peak after the run is the run's, the input held included but
    not the reading of it; returns the resident set at that point, or None where the peak cannot
    be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return status_kib("VmRSS")


def main():
    global STAMPS
    path, credits, design = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    latencies = None
    if sys.argv[4:5] == ["latency"]:
        STAMPS, latencies = {}, []
    # The input, prepared before timing: the benchmark wrote it, it is read here whole.
    with open(path, encoding="ascii") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    input_rss_kib = reset_peak_rss()
    run = {"generators": run_generators, "threads": run_threads}[design]
    totals = {"checksum": 0xCBF29CE484222325, "orders": 0}

    def sink(batch):
        checksum = totals["checksum"]
        for order in batch:
            if latencies is not None:
                latencies.append(time.perf_counter_ns() - STAMPS[order[0]])
            record = encode_order(order)
            for byte in len(record).to_bytes(4, "little") + record:
                checksum = ((checksum ^ byte) * 0x100000001B3) & MASK
        totals["checksum"] = checksum
        totals["orders"] += len(batch)

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run(lines, credits, sink)
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"records": len(lines), "orders": totals["orders"],
                      "checksum": "%016x" % totals["checksum"], "seconds": elapsed,
                      "user_s": after.ru_utime - before.ru_utime,
                      "sys_s": after.ru_stime - before.ru_stime,
                      "input_rss_kib": input_rss_kib,
                      "peak_rss_kib": status_kib("VmHWM") or after.ru_maxrss,
                      "latencies_ns": latencies or []}))


if __name__ == "__main__":
    main()
