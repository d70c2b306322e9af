// The memory V8's optimising compiler needs for each function of a .wasm, largest first,
// and a check against budgets. Envoy compiles the whole module with TurboFan when it loads
// it (Liftoff off, eagerly), the largest functions first and several at once; the memory
// that compilation frees stays with Envoy's allocator, so the peak RSS the filter adds
// follows its largest functions ("Round 5" in docs/performance.md) and the whole module's
// compile memory, about 0.11 MB of RSS per MB of it ("Round 6").
//
//   node scripts/compile-memory.mjs FILE.wasm [TOP] [MAX_MB] [MAX_TWO_MB] [MAX_TOTAL_MB]
//   node scripts/compile-memory.mjs FILE.wasm --empty-over MB OUT.wasm
//
// Compiles FILE.wasm in a child Node (its V8, single-threaded, TurboFan for every function,
// as Envoy does) with V8's per-function trace, and prints the TOP (default 15) functions by
// the largest zone their compilation held. With MAX_MB, exits 1 when one function needs more;
// with MAX_TWO_MB, when the two largest together need more (two compile at once on a
// two-core machine); with MAX_TOTAL_MB, when all functions' zones add up to more.
// With --empty-over, it writes OUT.wasm: a measurement-only copy with the body of every
// function that needs more than MB replaced by `unreachable` (what such functions cost
// Envoy at start, "Round 6"; such a copy traps when its code runs, so measure it with a
// configuration that is refused, as scripts/rss-at-start.sh does).
import { readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { argv, exit, execPath } from 'node:process';

const [file, topArg, maxArg, twoArg, totalArg] = argv.slice(2);
const emptying = topArg === '--empty-over';
if (!file || (emptying && (maxArg === undefined || twoArg === undefined))) {
  console.error('usage: node scripts/compile-memory.mjs FILE.wasm [TOP] [MAX_MB] [MAX_TWO_MB] [MAX_TOTAL_MB]');
  console.error('       node scripts/compile-memory.mjs FILE.wasm --empty-over MB OUT.wasm');
  exit(2);
}
const bytes = readFileSync(file);

// Function names from the module's `name` section (subsection 1), for the report.
function names(buf) {
  const out = new Map();
  let i = 8;
  const uleb = () => {
    let r = 0, s = 0, b;
    do { b = buf[i++]; r += (b & 0x7f) * 2 ** s; s += 7; } while (b & 0x80);
    return r;
  };
  while (i < buf.length) {
    const id = buf[i++];
    const size = uleb();
    const end = i + size;
    if (id === 0) {
      const len = uleb();
      const name = buf.toString('utf8', i, i + len);
      i += len;
      while (name === 'name' && i < end) {
        const sub = buf[i++];
        const subSize = uleb();
        const subEnd = i + subSize;
        if (sub === 1) {
          for (let n = uleb(); n > 0; n--) {
            const index = uleb();
            const l = uleb();
            out.set(index, buf.toString('utf8', i, i + l));
            i += l;
          }
        }
        i = subEnd;
      }
    }
    i = end;
  }
  return out;
}

// A copy of the module with the bodies of the functions in `over` (absolute function
// indices, imports first, as V8's trace numbers them) replaced by `unreachable`.
function emptied(buf, over) {
  let i = 8;
  const uleb = () => {
    let r = 0, s = 0, b;
    do { b = buf[i++]; r += (b & 0x7f) * 2 ** s; s += 7; } while (b & 0x80);
    return r;
  };
  const enc = (n) => {
    const o = [];
    do { let b = n % 128; n = Math.floor(n / 128); if (n) b |= 0x80; o.push(b); } while (n);
    return Buffer.from(o);
  };
  const parts = [buf.subarray(0, 8)];
  let imports = 0, count = 0, saved = 0;
  while (i < buf.length) {
    const start = i;
    const id = buf[i++];
    const size = uleb();
    const end = i + size;
    if (id === 2) {
      const n = uleb();
      for (let k = 0; k < n; k++) {
        for (let name = 0; name < 2; name++) { const len = uleb(); i += len; } // module, field
        const kind = buf[i++];
        if (kind === 0) { imports++; uleb(); }
        else if (kind === 1) { i++; const f = buf[i++]; uleb(); if (f & 1) uleb(); }
        else if (kind === 2) { const f = buf[i++]; uleb(); if (f & 1) uleb(); }
        else if (kind === 3) { i += 2; }
        else throw new Error(`import kind ${kind}`);
      }
    }
    if (id === 10) {
      const n = uleb();
      const bodies = [enc(n)];
      for (let f = 0; f < n; f++) {
        const len = uleb();
        let body = buf.subarray(i, i + len);
        i += len;
        if (over.has(f + imports)) {
          saved += len;
          count++;
          body = Buffer.from([0x00, 0x00, 0x0b]); // no locals; unreachable; end
        }
        bodies.push(enc(body.length), body);
      }
      const section = Buffer.concat(bodies);
      parts.push(Buffer.from([10]), enc(section.length), section);
    } else {
      parts.push(buf.subarray(start, end));
    }
    i = end;
  }
  return { bytes: Buffer.concat(parts), count, saved };
}

// Rust's legacy mangling (`_ZN...17h<hash>E`), readable enough for a report.
function demangle(s) {
  if (!s.startsWith('_ZN')) return s;
  const parts = [];
  let i = 3;
  while (i < s.length && s[i] !== 'E') {
    const m = /^\d+/.exec(s.slice(i));
    if (!m) break;
    i += m[0].length;
    parts.push(s.slice(i, i + Number(m[0])));
    i += Number(m[0]);
  }
  if (parts.length && /^h[0-9a-f]{16}$/.test(parts[parts.length - 1])) parts.pop();
  return parts.map((p) => (p.startsWith('_$') ? p.slice(1) : p)).join('::')
    .replace(/\$LT\$/g, '<').replace(/\$GT\$/g, '>').replace(/\$RF\$/g, '&')
    .replace(/\$u20\$/g, ' ').replace(/\$C\$/g, ',').replace(/\$u7b\$/g, '{')
    .replace(/\$u7d\$/g, '}').replace(/\$BP\$/g, '*').replace(/\.\./g, '::');
}

const child = spawnSync(execPath, [
  '--no-liftoff', '--no-wasm-lazy-compilation', '--single-threaded',
  '--trace-wasm-compilation-times',
  '-e', `new WebAssembly.Module(require('fs').readFileSync(${JSON.stringify(file)}))`,
], { encoding: 'utf8', maxBuffer: 64 << 20 });
if (child.status !== 0) {
  console.error(child.stderr || child.stdout);
  exit(2);
}
const line = /#(\d+) using TurboFan, took [\d.]+ ms and (\d+) \/ \d+ max\/total bytes; bodysize (\d+)/;
const rows = child.stdout.split('\n').map((l) => line.exec(l)).filter(Boolean)
  .map((m) => ({ index: Number(m[1]), zone: Number(m[2]), body: Number(m[3]) }))
  .sort((a, b) => b.zone - a.zone);
if (rows.length === 0) {
  console.error('V8 reported no function compiled with TurboFan (has its trace changed?)');
  exit(2);
}
if (emptying) {
  const over = new Set(rows.filter((r) => r.zone > Number(maxArg) * 1e6).map((r) => r.index));
  const out = emptied(bytes, over);
  writeFileSync(twoArg, out.bytes);
  console.log(`${twoArg}: ${out.count} functions over ${maxArg} MB emptied (${out.saved} bytes ` +
    `of code), ${out.bytes.length} bytes`);
  exit(0);
}

const named = names(bytes);
const mb = (n) => (n / 1e6).toFixed(2);
const sum = (k) => rows.slice(0, k).reduce((a, r) => a + r.zone, 0);
console.log(`${file}: ${bytes.length} bytes, ${rows.length} functions; compile zone MB: ` +
  `largest ${mb(sum(1))}, two largest ${mb(sum(2))}, four ${mb(sum(4))}, sixteen ${mb(sum(16))}, ` +
  `all ${mb(sum(rows.length))}`);
for (const r of rows.slice(0, Number(topArg ?? 15))) {
  const name = demangle(named.get(r.index) ?? `#${r.index}`);
  console.log(`${mb(r.zone).padStart(6)} MB ${String(r.body).padStart(6)} B  ${name.slice(0, 140)}`);
}
let failed = false;
if (maxArg !== undefined && sum(1) > Number(maxArg) * 1e6) {
  console.error(`the largest function needs ${mb(sum(1))} MB to compile, over the budget of ${maxArg} MB`);
  failed = true;
}
if (twoArg !== undefined && sum(2) > Number(twoArg) * 1e6) {
  console.error(`the two largest functions need ${mb(sum(2))} MB to compile, over the budget of ${twoArg} MB`);
  failed = true;
}
if (totalArg !== undefined && sum(rows.length) > Number(totalArg) * 1e6) {
  console.error(`all functions together need ${mb(sum(rows.length))} MB to compile, over the budget of ${totalArg} MB`);
  failed = true;
}
exit(failed ? 1 : 0);
