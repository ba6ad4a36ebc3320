// Browser rows of the speed comparison (#10): kanoclip-wasm against onnxruntime-web running
// the SAME graph, in one headless Chromium session: a ViT-B/16-shaped RANDOM model at 224
// with a random 4-level head, CLIP-VV from block 4, taps 3/6/9/12, maps, σ = 4 and the
// score (scripts/onnx_export.py writes the weights, the head file and the ONNX graph from
// the same numbers). The CPU rows: on a page that is not cross-origin isolated, both on
// one thread (kanoclip-wasm's single-threaded module); then on an isolated page (COOP/COEP),
// kanoclip-wasm's threaded module and onnxruntime-web's threaded wasm at 1 and 2 threads
// (KANOCLIP_BENCH_THREADS, default "1 2"), each configuration on a page of its own (ort's
// thread count is fixed at its first session). The WebGPU rows run on Chromium's
// SwiftShader adapter (emulated on the CPU): a path check, not a GPU figure.
//
//   scripts/bench-browser         # does all of it: export, convert, npm, this script
//   node benches/browser.mjs DIR ORT_DIST
//     DIR: onnx_export.py's output with the converted bundle in DIR/bundle
// Environment: KANOCLIP_WWW (a page copy holding kanoclip-wasm/, default www),
// KANOCLIP_BENCH_RUNS (detects per page, 4), KANOCLIP_BENCH_ROUNDS (3), SKIP_WEBGPU=1, KANOCLIP_BENCH_JSON (a file for JSON lines).
// The weights are random: timings, not accuracy.
import { chromium } from '../scripts/web/node_modules/playwright-core/index.mjs';
import { serve } from '../scripts/serve.mjs';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const [src, ortDist] = process.argv.slice(2).map((p) => resolve(p));
const www = resolve(process.env.KANOCLIP_WWW || join(ROOT, 'www'));
const runs = Number(process.env.KANOCLIP_BENCH_RUNS || 4);
const expected = JSON.parse(readFileSync(join(src, 'expected.json'), 'utf8'));
const dir = mkdtempSync(join(tmpdir(), 'kanoclip-bench-'));
cpSync(join(www, 'kanoclip-wasm'), join(dir, 'kanoclip-wasm'), { recursive: true });
symlinkSync(join(src, 'bundle'), join(dir, 'model'));
symlinkSync(join(src, 'b16_detect.onnx'), join(dir, 'detect.onnx'));
symlinkSync(join(src, 'input.bin'), join(dir, 'input.bin'));
symlinkSync(ortDist, join(dir, 'ort'));
cpSync(join(ROOT, 'www/samples/hazelnut_toy/crack.jpg'), join(dir, 'crack.jpg'));
// The page's code is a file of its own: serve.mjs's CSP allows no inline script.
writeFileSync(join(dir, 'index.html'), '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">' +
  '<script type="module" src="bench.js"></script>');
writeFileSync(join(dir, 'bench.js'), `import { createDetector } from './kanoclip-wasm/dist/index.js';
const med = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
window.kanoclip = async (backend, runs, threads) => {
  const t0 = performance.now();
  const d = await createDetector({ weights: 'model/manifest.json', backend, threads });
  const loadMs = performance.now() - t0;
  const blob = await (await fetch('crack.jpg')).blob();
  const fwd = [], total = [];
  let score;
  for (let i = 0; i < runs; i++) {
    const r = await d.detect(blob);
    fwd.push(r.timings.forwardMs); total.push(r.timings.totalMs); score = r.score;
  }
  const stats = await d.stats();
  d.dispose();
  return { backend: d.backend, threads: d.threads, loadMs, firstMs: total[0], warmForwardMs: med(fwd.slice(1)),
    warmMs: med(total.slice(1)), score, wasmMB: stats.wasmBytes / 1e6 };
};
window.ort = async (ep, runs, threads) => {
  const ort = await import(ep === 'webgpu' ? './ort/ort.webgpu.min.mjs' : './ort/ort.wasm.min.mjs');
  ort.env.wasm.numThreads = threads ?? 1;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  const t0 = performance.now();
  const s = await ort.InferenceSession.create('detect.onnx', { executionProviders: [ep] });
  const loadMs = performance.now() - t0;
  const data = new Float32Array(await (await fetch('input.bin')).arrayBuffer());
  const x = new ort.Tensor('float32', data, [1, 3, 224, 224]);
  const t = [];
  let score;
  for (let i = 0; i < runs; i++) {
    const a = performance.now();
    const out = await s.run({ image: x });
    score = out.score.data[0];
    t.push(performance.now() - a);
  }
  await s.release();
  return { backend: ep, threads: threads ?? 1, loadMs, firstMs: t[0], warmMs: med(t.slice(1)), score, version: ort.env.versions?.web };
};
`);
const server = await serve(dir, 0, { isolated: false });
const isolated = await serve(dir, 0);
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kanoclip-chromium-')), {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic', '--no-first-run', '--headless=new', '--enable-unsafe-webgpu'],
});
/** A fresh page on `srv`, ready to run either side. */
const open = async (srv) => {
  const page = await ctx.newPage();
  page.on('pageerror', (e) => console.log('pageerror', e.message));
  page.on('console', (m) => m.type() === 'error' && console.log('console', m.text()));
  await page.goto(`http://127.0.0.1:${srv.address().port}/`);
  await page.waitForFunction(() => window.kanoclip && window.ort);
  return page;
};
const json = process.env.KANOCLIP_BENCH_JSON;
const rows = [];
const row = (side, backend, r, label) => {
  rows.push({ side, backend, label, ...r });
  console.log(`${(side + (r.version ? ' ' + r.version : '')).padEnd(22)} ${label.padEnd(22)} warm ${r.warmMs.toFixed(0).padStart(6)} ms` +
    (r.warmForwardMs ? ` (forward ${r.warmForwardMs.toFixed(0)})` : '') +
    `  first ${r.firstMs.toFixed(0)} ms  load ${r.loadMs.toFixed(0)} ms  score ${r.score.toFixed(5)}` +
    (r.wasmMB ? `  wasm memory ${r.wasmMB.toFixed(0)} MB` : ''));
  if (json) appendFileSync(json, JSON.stringify({ side, work: 'browser-detect', ...r, label, ms: r.warmMs }) + '\n');
};
console.log(`same graph: ViT-B/16-shaped RANDOM model + head; reference score ${expected.score.toFixed(5)}`);
const ratios = [];
// A side that fails (onnxruntime-web's WebGPU run has closed the page on SwiftShader) is
// reported and skipped; the rows already measured are kept.
const attempt = async (srv, name, backend, label, f, arg) => {
  const page = await open(srv);
  try {
    const r = await page.evaluate(f, arg);
    row(name, backend, r, label);
    if (Math.abs(r.score - expected.score) > 2e-3) {
      console.log(`WARNING: ${name} ${backend} score ${r.score} is not the reference's ${expected.score}: not the same work`);
    }
    return r;
  } catch (e) {
    console.log(`${name} ${backend}: failed: ${String(e.message).split('\n')[0]}`);
    return null;
  } finally {
    if (!page.isClosed()) await page.close();
  }
};
// Rounds of both sides, the order swapped every round: this machine's speed drifts by up
// to ±30 % over minutes, and one kanoclip page then one onnxruntime-web page compared the
// drift as often as the code (2-thread ratios from 0.84× to 1.12× on one build). The line
// takes each side's median over the rounds and shows the rounds' own ratios beside it.
const rounds = Number(process.env.KANOCLIP_BENCH_ROUNDS || 3);
const median = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
const pair = async (srv, kb, ob, threads, label) => {
  const n = kb === 'cpu' ? runs : 2;
  const ks = [], os = [], own = [];
  for (let i = 0; i < (kb === 'cpu' ? rounds : 1); i++) {
    let k = null, o = null;
    for (const side of i % 2 ? ['ort', 'kanoclip'] : ['kanoclip', 'ort']) {
      if (side === 'kanoclip') {
        k = await attempt(srv, 'kanoclip-wasm', kb, label, ([b, n, t]) => window.kanoclip(b, n, t), [kb, n, threads]);
      } else {
        o = await attempt(srv, 'onnxruntime-web', ob, label, ([b, n, t]) => window.ort(b, n, t), [ob, n, threads]);
      }
    }
    if (k) ks.push(k);
    if (o) os.push(o);
    if (k && o) own.push(k.warmMs / o.warmMs);
  }
  if (!ks.length) return null;
  const k = { warmMs: median(ks.map((r) => r.warmMs)), warmForwardMs: median(ks.map((r) => r.warmForwardMs)) };
  if (os.length) {
    const o = median(os.map((r) => r.warmMs));
    const range = own.length > 1 ? `; the rounds' own ratios ${Math.min(...own).toFixed(2)}–${Math.max(...own).toFixed(2)}×` : '';
    ratios.push(`${label}: kanoclip ${k.warmMs.toFixed(0)} ms (forward ${k.warmForwardMs.toFixed(0)}), ` +
      `onnxruntime-web ${o.toFixed(0)} ms, medians of ${ks.length} and ${os.length} rounds: ` +
      `${(k.warmMs / o).toFixed(2)}× whole detect, ${(k.warmForwardMs / o).toFixed(2)}× forward only${range}`);
  }
  return k;
};
await pair(server, 'cpu', 'wasm', 1, 'cpu, not isolated, 1');
const byThreads = {};
for (const t of (process.env.KANOCLIP_BENCH_THREADS || '1 2').split(/\s+/).filter(Boolean).map(Number)) {
  byThreads[t] = await pair(isolated, 'cpu', 'wasm', t, `cpu, isolated, ${t}`);
}
const [one, two] = [byThreads[1], byThreads[2]];
if (one && two) ratios.push(`kanoclip-wasm 1 → 2 threads: ${(one.warmMs / two.warmMs).toFixed(2)}× faster`);
if (!process.env.SKIP_WEBGPU) await pair(server, 'webgpu', 'webgpu', undefined, 'webgpu');
ratios.forEach((r) => console.log(r));
writeFileSync(join(process.env.KANOCLIP_LOGS || tmpdir(), 'browser-bench.json'), JSON.stringify(rows, null, 1));
await ctx.close();
server.close();
isolated.close();
