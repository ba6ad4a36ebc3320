// `npm pack` / `npm publish` guard: refuse to pack a package without its compiled
// TypeScript (dist/) and its wasm module (wasm/), which scripts/build-web makes. A package
// without them installs, imports and then fails at the first detect.
import { existsSync, statSync } from 'node:fs';

const need = ['dist/index.js', 'dist/index.d.ts', 'dist/worker.js', 'wasm/kanoclip.js', 'wasm/kanoclip_bg.wasm', 'dist/pool.js', 'wasm-threads/kanoclip.js', 'wasm-threads/kanoclip_bg.wasm', 'LICENSE-MIT', 'LICENSE-APACHE'];
const missing = need.filter((f) => !existsSync(f) || statSync(f).size === 0);
if (missing.length) {
  console.error(`kanoclip-wasm: refusing to pack without ${missing.join(', ')}: run scripts/build-web first`);
  process.exit(1);
}
