// A decoder in JavaScript: turns raw text ticks `seq,ts_ns,SYMBOL,price,qty,side` into the
// 40-byte binary ticks the Rust stages read (example-stages/market-data/src/records.rs),
// normalising the decimal price to integer 1e-4 units. Malformed lines are dropped and counted.
// Built with componentize-js (jco) against wit/, world `stateful-stage`: on a hot swap its
// pending records and counts go to the next version, in the envelope the Rust SDK uses.

import { pull } from "sluicegate:stage/upstream@0.1.0";
import { log } from "sluicegate:stage/host@0.1.0";

// --- record framing: u32 little-endian length, then the bytes ------------------------------
function* records(chunk) {
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  let at = 0;
  while (at < chunk.length) {
    if (chunk.length - at < 4) throw new Error(`truncated length prefix at byte ${at}`);
    const size = view.getUint32(at, true);
    at += 4;
    if (size > chunk.length - at) throw new Error(`record at byte ${at - 4} overruns the chunk`);
    yield chunk.subarray(at, at + size);
    at += size;
  }
}

function frame(recs) {
  let total = 0;
  for (const r of recs) total += 4 + r.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const r of recs) {
    view.setUint32(at, r.length, true);
    out.set(r, at + 4);
    at += 4 + r.length;
  }
  return out;
}

// --- the decoder -------------------------------------------------------------------------
const U64_MAX = (1n << 64n) - 1n;
const I64_MAX = (1n << 63n) - 1n;
const DIGITS = /^\+?[0-9]+$/;
const SIGNED = /^[+-]?[0-9]+$/;
const ALNUM = /^[A-Za-z0-9]{1,8}$/;
const text = new TextDecoder("utf-8", { fatal: true });

function unsigned(field, max) {
  if (!DIGITS.test(field)) return null;
  const v = BigInt(field);
  return v <= max ? v : null;
}

// `189.2512` -> 1892512n (at most 4 decimals), as the Rust decoder does.
function priceE4(field) {
  const dot = field.indexOf(".");
  const int = dot < 0 ? field : field.slice(0, dot);
  const frac = dot < 0 ? "" : field.slice(dot + 1);
  if (frac.length > 4 || int === "" || !SIGNED.test(int)) return null;
  if (frac !== "" && !DIGITS.test(frac)) return null;
  const whole = BigInt(int);
  const fracE4 = (frac === "" ? 0n : BigInt(frac)) * 10n ** BigInt(4 - frac.length);
  const v = whole * 10000n + (whole < 0n ? -fracE4 : fracE4);
  return v >= -I64_MAX - 1n && v <= I64_MAX ? v : null;
}

function decode(raw) {
  let line;
  try {
    line = text.decode(raw).trimEnd();
  } catch {
    return null;
  }
  const f = line.split(",");
  if (f.length !== 6) return null;
  const seq = unsigned(f[0], U64_MAX);
  const ts = unsigned(f[1], U64_MAX);
  const symbol = f[2].trim();
  const price = priceE4(f[3]);
  const qty = unsigned(f[4], 0xffffffffn);
  const side = f[5].charCodeAt(0);
  if (seq === null || ts === null || !ALNUM.test(symbol) || price === null || qty === null) {
    return null;
  }
  if (side !== 66 /* B */ && side !== 83 /* S */) return null;
  const out = new Uint8Array(40);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, seq, true);
  view.setBigUint64(8, ts, true);
  for (let i = 0; i < symbol.length; i++) out[16 + i] = symbol.charCodeAt(i);
  view.setBigInt64(24, price, true);
  view.setUint32(32, Number(qty), true);
  out[36] = side;
  return out;
}

// --- the generator protocol ---------------------------------------------------------------
let primed = false;
let upstreamDone = false;
const pending = []; // decoded records beyond the last call's credits, carried, never dropped
let decoded = 0;
let dropped = 0;

export const generator = {
  resume(credits) {
    if (!primed) {
      primed = true;
      return new Uint8Array(0);
    }
    if (credits === 0) return new Uint8Array(0); // pause
    const out = pending.splice(0, credits);
    while (out.length < credits && !upstreamDone) {
      const chunk = pull(credits - out.length);
      if (chunk === undefined) {
        upstreamDone = true;
        break;
      }
      for (const raw of records(chunk)) {
        const tick = decode(raw);
        if (tick === null) dropped++;
        else if (out.length < credits) out.push(tick), decoded++;
        else pending.push(tick), decoded++;
      }
      if (chunk.length === 0) break; // upstream paused: answer what we have
    }
    if (out.length === 0 && upstreamDone && pending.length === 0) return undefined;
    return frame(out);
  },
  close() {
    if (!primed) return;
    log("info", `js decoder closed: decoded ${decoded}, dropped ${dropped}`, [
      ["decoded", String(decoded)],
      ["dropped", String(dropped)],
    ]);
  },
};

// --- hot swap: the state envelope of docs/hot-swap.md ------------------------------------------
// [pending count u32][each: length u32, bytes][upstream finished u8][has user state u8][user]
export const state = {
  snapshot() {
    if (!primed) return undefined;
    const user = new TextEncoder().encode(`${decoded},${dropped}`);
    let size = 4 + 2 + user.length;
    for (const r of pending) size += 4 + r.length;
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    view.setUint32(0, pending.length, true);
    let at = 4;
    for (const r of pending) {
      view.setUint32(at, r.length, true);
      out.set(r, at + 4);
      at += 4 + r.length;
    }
    out[at] = upstreamDone ? 1 : 0;
    out[at + 1] = 1;
    out.set(user, at + 2);
    return out;
  },
  restore(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 0;
    const need = (n) => {
      if (bytes.length - at < n) throw "state envelope is truncated";
    };
    need(4);
    const count = view.getUint32(at, true);
    at += 4;
    const carried = [];
    for (let i = 0; i < count; i++) {
      need(4);
      const size = view.getUint32(at, true);
      at += 4;
      need(size);
      carried.push(bytes.slice(at, at + size));
      at += size;
    }
    need(2);
    const done = bytes[at] === 1;
    const hasUser = bytes[at + 1] === 1;
    at += 2;
    if (hasUser) {
      const counts = new TextDecoder().decode(bytes.subarray(at)).split(",").map(Number);
      if (counts.length !== 2 || !counts.every(Number.isSafeInteger)) {
        throw "state is not a js-decode state";
      }
      [decoded, dropped] = counts;
    }
    pending.splice(0, pending.length, ...carried);
    upstreamDone = done;
  },
};
