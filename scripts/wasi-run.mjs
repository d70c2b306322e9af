// Runs a wasm32-wasip1 program built from this crate (its unit tests, the hot_paths bench)
// under Node's V8: the engine Envoy embeds, so the wasm-only code (the simd128 scan) runs
// as it does in Envoy. The proxy-wasm host functions the module imports are never called
// by these programs; each one throws if it is. `node scripts/wasi-run.mjs FILE.wasm ARGS...`
import { readFile } from 'node:fs/promises';
import { argv, env, exit } from 'node:process';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: argv.slice(2), env, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(argv[2]));
const imports = wasi.getImportObject();
imports.env = {};
for (const i of WebAssembly.Module.imports(module)) {
  if (i.module === 'env') {
    imports.env[i.name] = () => {
      throw new Error(`host function ${i.name} called outside Envoy`);
    };
  }
}
const instance = await WebAssembly.instantiate(module, imports);
// The library also exports `_initialize` (a Proxy-Wasm module is a reactor); a program
// starts at `_start`, which WASI refuses next to `_initialize`.
const exports = { ...instance.exports };
delete exports._initialize;
exit(wasi.start({ exports }) ?? 0);
