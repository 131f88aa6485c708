"""The market pipeline as CPython generators with demand credits sent through `send()`:
the design sluicegate puts at a component boundary, run natively in CPython.

Same feed (splitmix64, bursty, 64 symbols), same decode, filter, VWAP and crossover as
example-stages/market-data, so the orders' checksum must equal the Rust variants'.

Usage: python3 market.py RECORDS CREDITS [latency]  ->  prints one JSON line; with `latency`,
the time from each tick's emission to its order's arrival at the sink, in ns, too.
"""

import json
import sys
import time
from collections import deque

MASK = (1 << 64) - 1
NAMED = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM"]
KEEP = set(NAMED)


class Feed:
    def __init__(self, records, seed=42, symbols=64, max_burst=64):
        self.rng = seed ^ 0x9E3779B97F4A7C15
        self.records, self.max_burst = records, max_burst
        self.seq, self.ts, self.burst_left = 0, 1_700_000_000_000_000_000, 0
        self.symbols = []
        for i in range(symbols):
            name = NAMED[i] if i < len(NAMED) else "SYM%04d" % i
            self.symbols.append([name, 50_0000 + self.next() % 450_0000])

    def next(self):
        self.rng = (self.rng + 0x9E3779B97F4A7C15) & MASK
        z = self.rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def line(self):
        if self.seq >= self.records:
            return None
        self.seq += 1
        if self.burst_left == 0:
            self.burst_left = 1 + self.next() % self.max_burst
            self.ts += 1_000_000 + self.next() % 4_000_000
        else:
            self.ts += 100 + self.next() % 900
        self.burst_left -= 1
        n = len(self.symbols)
        a = self.next() % n
        b = self.next() % n
        index = a * b // n
        step = self.next() % 201 - 100
        qty = 1 + (self.next() % 50) * 100
        side = "B" if self.next() % 2 == 0 else "S"
        sym = self.symbols[index]
        sym[1] = max(sym[1] + step, 1_0000)
        price = sym[1]
        return "%d,%d,%s,%d.%04d,%d,%s" % (
            self.seq, self.ts, sym[0], price // 10_000, price % 10_000, qty, side)


def parse_price(text):
    whole, _, frac = text.partition(".")
    return int(whole) * 10_000 + int((frac + "0000")[:4])


# Each stage is a generator primed with next(), then driven with send(credits): it asks
# its upstream for that many records (`yield from`-style delegation of demand) and yields
# a batch of at most that many.

STAMPS = None  # seq -> perf_counter_ns() at emission, when latency is measured


def source(feed):
    credits = yield
    while True:
        batch = []
        for _ in range(credits):
            line = feed.line()
            if line is None:
                break
            if STAMPS is not None:
                STAMPS[feed.seq] = time.perf_counter_ns()
            batch.append(line)
        if not batch:
            return
        credits = yield batch


def decode(upstream):
    credits = yield
    while True:
        try:
            batch = upstream.send(credits)
        except StopIteration:
            return
        out = []
        for line in batch:
            f = line.split(",")
            if len(f) == 6:
                out.append((int(f[0]), f[2], parse_price(f[3]), int(f[4]), f[5]))
        credits = yield out


def symbol_filter(upstream):
    credits = yield
    while True:
        try:
            batch = upstream.send(credits)
        except StopIteration:
            return
        credits = yield [t for t in batch if t[1] in KEEP]


def vwap(upstream, size=32):
    windows = {}
    credits = yield
    while True:
        try:
            batch = upstream.send(credits)
        except StopIteration:
            return
        out = []
        for seq, sym, price, qty, _side in batch:
            w = windows.get(sym)
            if w is None:
                w = windows[sym] = [deque(), 0, 0]
            w[0].append((price, qty))
            w[1] += price * qty
            w[2] += qty
            if len(w[0]) > size:
                p, q = w[0].popleft()
                w[1] -= p * q
                w[2] -= q
            out.append((seq, sym, w[1] // w[2] if w[2] else price, price))
        credits = yield out


def strategy(upstream, fast=5, slow=20, qty=100):
    state = {}
    credits = yield
    while True:
        try:
            batch = upstream.send(credits)
        except StopIteration:
            return
        out = []
        for seq, sym, v, last in batch:
            s = state.get(sym)
            if s is None:
                s = state[sym] = [deque(), None]
            s[0].append(v)
            if len(s[0]) > slow:
                s[0].popleft()
            if len(s[0]) < slow:
                continue
            hist = list(s[0])
            above = sum(hist[-fast:]) // fast > sum(hist) // slow
            crossed = s[1] is not None and s[1] != above
            s[1] = above
            if crossed:
                out.append((seq, sym, last, qty, "B" if above else "S"))
        credits = yield out


def encode_order(order):
    seq, sym, price, qty, side = order
    return (seq.to_bytes(8, "little") + sym.encode().ljust(8, b"\0")
            + price.to_bytes(8, "little", signed=True) + qty.to_bytes(4, "little")
            + side.encode() + b"\0\0\0")


def main():
    global STAMPS
    records, credits = int(sys.argv[1]), int(sys.argv[2])
    latencies = None
    if sys.argv[3:4] == ["latency"]:
        STAMPS, latencies = {}, []
    started = time.perf_counter()
    chain = strategy(vwap(symbol_filter(decode(source(Feed(records))))))
    stages = [chain]
    # Prime every generator upstream-first, as sluicegate primes stages.
    g = chain
    frames = []
    while g is not None:
        frames.append(g)
        g = g.gi_frame.f_locals.get("upstream") if g.gi_frame else None
    for gen in reversed(frames):
        next(gen)
    checksum, orders = 0xCBF29CE484222325, 0
    while True:
        try:
            batch = chain.send(credits)
        except StopIteration:
            break
        for order in batch:
            if latencies is not None:
                latencies.append(time.perf_counter_ns() - STAMPS[order[0]])
            record = encode_order(order)
            for byte in len(record).to_bytes(4, "little") + record:
                checksum = ((checksum ^ byte) * 0x100000001B3) & MASK
            orders += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"records": records, "orders": orders,
                      "checksum": "%016x" % checksum, "seconds": elapsed,
                      "latencies_ns": latencies or []}))
    del stages


if __name__ == "__main__":
    main()
