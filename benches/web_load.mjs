// Load times in headless Chromium (Debian's, by playwright-core), on the demo page, CPU
// backend: for each bundle, a cold start (an empty browser profile: download, verify,
// cache, start) and a cached one (the same profile, page reloaded), each to the model
// being ready and to the first result on a sample image. Run by scripts/bench-web.
//   node benches/web_load.mjs MANIFEST...        (paths under www/)
import { chromium } from '../scripts/web/node_modules/playwright-core/index.mjs';
import { serve } from '../scripts/serve.mjs';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
// KANOCLIP_BACKEND=webgpu times the WebGPU path (emulated on the CPU here).
const BACKEND = process.env.KANOCLIP_BACKEND || 'cpu';
const FLAGS = ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-quic', '--no-first-run', '--headless=new'];
// KANOCLIP_WWW serves another copy of the page (to compare builds of the module).
const WWW = process.env.KANOCLIP_WWW ? resolve(process.env.KANOCLIP_WWW) : join(ROOT, 'www');
const server = await serve(WWW, 0);
const origin = `http://127.0.0.1:${server.address().port}`;

async function run(page, model) {
  const t0 = Date.now();
  await page.goto(`${origin}/?backend=${BACKEND}&model=${encodeURIComponent(model)}`);
  await page.evaluate(() => window.kanoclipDemo.ready);
  const ready = Date.now() - t0;
  const detect = await page.evaluate(async () => {
    const blob = await (await fetch('samples/hazelnut_toy/crack.jpg')).blob();
    const t = performance.now();
    const r = await window.kanoclipDemo.inspect(blob);
    if (!r) throw new Error(document.getElementById('error').textContent);
    return performance.now() - t;
  });
  const wasmBytes = await page.evaluate(async () => (await window.kanoclipDemo.detector().stats()).wasmBytes);
  return { ready, first: ready + detect, detect, wasmBytes };
}

const models = process.argv.slice(2);
console.log('| bundle | MB | cold: ready / first result (ms) | cached: ready / first result (ms) | detect (ms) | wasm memory (MB) |');
console.log('|---|---|---|---|---|---|');
for (const model of models) {
  const m = JSON.parse(readFileSync(join(WWW, model), 'utf8'));
  const mb = m.files.reduce((n, f) => n + f.size, 0) / 1e6;
  const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kanoclip-bench-')), {
    executablePath: '/usr/bin/chromium', headless: true, args: FLAGS,
  });
  const page = await ctx.newPage();
  const cold = await run(page, model);
  const cached = await run(page, model);
  await ctx.close();
  console.log(`| ${m.name} (${m.dtype}) | ${mb.toFixed(1)} | ${cold.ready} / ${Math.round(cold.first)} | ` +
    `${cached.ready} / ${Math.round(cached.first)} | ${Math.round(cached.detect)} | ${(cached.wasmBytes / 1e6).toFixed(0)} |`);
}
server.close();
