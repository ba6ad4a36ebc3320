// Browser timings for a ViT-B/16-shaped RANDOM model in headless Chromium: kanoclip-wasm on
// the CPU and on WebGPU, and the same architecture and weights exported to ONNX
// (scripts/onnx_export.py) in onnxruntime-web's wasm backend, in the same session. Both
// wasm runtimes run single-threaded (the page is not cross-origin isolated).
//   scripts/build-web
//   python scripts/onnx_export.py /tmp/b16        # weights, config, ONNX
//   kanoclip convert --to web --clip-config /tmp/b16/b16_config.json \
//     --weights /tmp/b16/b16.safetensors --out /tmp/b16/bundle
//   npm install --prefix /tmp/ortweb onnxruntime-web@1.30.0
//   node benches/browser.mjs /tmp/b16/bundle /tmp/b16/b16_visual.onnx /tmp/ortweb/node_modules/onnxruntime-web/dist
import { chromium } from '../scripts/web/node_modules/playwright-core/index.mjs';
import { serve } from '../scripts/serve.mjs';
import { cpSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const [bundle, onnx, ortDist] = process.argv.slice(2).map((p) => resolve(p));
const dir = mkdtempSync(join(tmpdir(), 'kanoclip-bench-'));
cpSync(join(ROOT, 'www/kanoclip-wasm'), join(dir, 'kanoclip-wasm'), { recursive: true });
symlinkSync(bundle, join(dir, 'model'));
symlinkSync(onnx, join(dir, 'model.onnx'));
symlinkSync(ortDist, join(dir, 'ort'));
cpSync(join(ROOT, 'www/samples/hazelnut_toy/crack.jpg'), join(dir, 'crack.jpg'));
writeFileSync(join(dir, 'index.html'), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<script type="module">
import { createDetector } from './kanoclip-wasm/dist/index.js';
const med = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
window.kanoclip = async (backend, runs) => {
  const t0 = performance.now();
  const d = await createDetector({ weights: 'model/manifest.json', backend });
  const load = performance.now() - t0;
  const blob = await (await fetch('crack.jpg')).blob();
  const fwd = [], total = [];
  for (let i = 0; i < runs; i++) {
    const r = await d.detect(blob);
    fwd.push(r.timings.forwardMs); total.push(r.timings.totalMs);
  }
  const stats = await d.stats();
  d.dispose();
  return { backend: d.backend, loadMs: load, firstMs: total[0], warmForwardMs: med(fwd.slice(1)), warmTotalMs: med(total.slice(1)), wasmMB: stats.wasmBytes / 1e6 };
};
window.ort = async (runs) => {
  const ort = await import('./ort/ort.wasm.min.mjs');
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  const t0 = performance.now();
  const s = await ort.InferenceSession.create('model.onnx', { executionProviders: ['wasm'] });
  const load = performance.now() - t0;
  const x = new ort.Tensor('float32', Float32Array.from({ length: 3 * 224 * 224 }, () => Math.random() - 0.5), [1, 3, 224, 224]);
  const t = [];
  for (let i = 0; i < runs; i++) {
    const a = performance.now();
    await s.run({ image: x });
    t.push(performance.now() - a);
  }
  return { loadMs: load, firstMs: t[0], warmMs: med(t.slice(1)), version: ort.env.versions?.web };
};
</script>`);
const server = await serve(dir, 0);
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kanoclip-chromium-')), {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-quic', '--no-first-run', '--headless=new', '--enable-unsafe-webgpu'],
});
const page = await ctx.newPage();
page.on('pageerror', (e) => console.log('pageerror', e.message));
await page.goto(`http://127.0.0.1:${server.address().port}/`);
const out = {};
out.kanoclipCpu = await page.evaluate(() => window.kanoclip('cpu', 4));
console.log('kanoclip-wasm, CPU (flex, SIMD, 1 thread):', JSON.stringify(out.kanoclipCpu));
out.ort = await page.evaluate(() => window.ort(4));
console.log('onnxruntime-web, wasm (SIMD, 1 thread):', JSON.stringify(out.ort));
console.log(`ratio kanoclip forward / onnxruntime-web run (warm): ${(out.kanoclipCpu.warmForwardMs / out.ort.warmMs).toFixed(2)}`);
if (!process.env.SKIP_WEBGPU) {
  out.kanoclipWebgpu = await page.evaluate(() => window.kanoclip('webgpu', 2));
  console.log('kanoclip-wasm, WebGPU (Chromium SwiftShader, CPU-emulated):', JSON.stringify(out.kanoclipWebgpu));
}
writeFileSync(join(process.env.KANOCLIP_LOGS || tmpdir(), 'browser-bench.json'), JSON.stringify(out, null, 1));
await ctx.close();
server.close();
