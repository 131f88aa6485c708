"""The cost of a CPython generator hop, the baseline of the benchmark's hop table.

Chains of DEPTH relay generators, each driven with `send(credits)` as in the seed's design,
above a source that answers every demand of one credit with a one-record chunk of BYTES bytes
(the same record each time, as the host-native source of the sluicegate chains does). One
record per chunk (credits 1); only the relaying is timed, the chain built and warmed first.

Two relays: `pass` hands the chunk it pulled on as it is (the cheapest a generator hop can be);
`map` builds a new chunk of the records it pulled, as a map stage does (the records themselves
are shared: CPython never copies their bytes, where a sluicegate hop copies them into the next
stage's memory).

Usage: python3 hops.py pass|map BYTES ITERS DEPTH...
-> prints one JSON line: per_chunk_ns, the ns per chunk through each DEPTH, in order.
"""

import json
import sys
import time


def source(record):
    demand = yield
    while True:
        demand = yield [record] if demand else []


def relay(upstream):
    demand = yield
    while True:
        chunk = upstream.send(demand)
        demand = yield chunk


def map_relay(upstream):
    demand = yield
    while True:
        chunk = upstream.send(demand)
        demand = yield [record for record in chunk]


def chain_ns(kind, depth, record, iters):
    stage = source(record)
    next(stage)
    for _ in range(depth):
        stage = kind(stage)
        next(stage)
    send = stage.send
    for _ in range(iters // 10):
        send(1)
    started = time.perf_counter_ns()
    for _ in range(iters):
        send(1)
    elapsed = time.perf_counter_ns() - started
    stage.close()
    return elapsed / iters


def main():
    kind = {"pass": relay, "map": map_relay}[sys.argv[1]]
    size, iters = int(sys.argv[2]), int(sys.argv[3])
    record = bytes([7]) * size
    per_chunk = [chain_ns(kind, int(depth), record, iters) for depth in sys.argv[4:]]
    print(json.dumps({"per_chunk_ns": per_chunk}))


if __name__ == "__main__":
    main()
