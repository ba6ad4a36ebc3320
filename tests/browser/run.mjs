// Browser tests in real headless Chromium (Debian's, driven by playwright-core), over the
// demo page and the packed npm package. Run by scripts/test after scripts/build-web:
//   node tests/browser/run.mjs NATIVE_DIR ARTIFACT_DIR
// NATIVE_DIR holds `kanoclip detect --raw-maps` outputs for the same bundles (free/, head/)
// and the packed package (kanoclip-wasm-*.tgz). Prints "browser: N passed, M failed".
import { chromium } from '../../scripts/web/node_modules/playwright-core/index.mjs';
import { serve } from '../../scripts/serve.mjs';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { tmpdir } from 'node:os';

/** CRC-32 (PNG's), written out: node:zlib has crc32 only from Node 20.15. */
function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

const ROOT = resolve(new URL('../..', import.meta.url).pathname);
const [NATIVE, ARTIFACTS] = process.argv.slice(2).map((p) => resolve(p));
mkdirSync(ARTIFACTS, { recursive: true });
const SAMPLES = ['good', 'crack', 'colour'];
const TOL = 1e-3;
const FLAGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-quic', '--no-first-run', '--headless=new', '--enable-unsafe-webgpu'];
const results = [];
const measures = {};

async function browser() {
  return chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kanoclip-chromium-')), {
    executablePath: '/usr/bin/chromium', headless: true, args: FLAGS, viewport: { width: 1100, height: 1400 },
  });
}

async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`test ${name} ... ok (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`test ${name} ... FAILED\n  ${String(e && e.stack || e).split('\n').slice(0, 6).join('\n  ')}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function native(kind) {
  const report = JSON.parse(readFileSync(join(NATIVE, kind, 'report.json'), 'utf8'));
  const out = {};
  for (const r of report.results) {
    const name = r.file.split('/').pop().replace('.jpg', '');
    const buf = readFileSync(r.raw_map);
    out[name] = { score: r.score, width: r.width, height: r.height, map: new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4) };
  }
  return out;
}

/** Open the demo page on `backend` with `model`, collecting every request's origin. */
async function openDemo(ctx, origin, { backend = 'cpu', model = 'model/manifest.json' } = {}) {
  const page = await ctx.newPage();
  const foreign = [];
  const errors = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!['data:', 'blob:'].includes(u.protocol) && u.origin !== origin) foreign.push(r.url());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${origin}/?backend=${backend}&model=${encodeURIComponent(model)}`);
  await page.evaluate(() => window.kanoclipDemo.ready);
  return { page, foreign, errors };
}

async function detectSamples(page) {
  return page.evaluate(async (samples) => {
    const out = {};
    for (const s of samples) {
      const blob = await (await fetch(`samples/hazelnut_toy/${s}.jpg`)).blob();
      const r = await window.kanoclipDemo.inspect(blob);
      if (!r) throw new Error(document.getElementById('error').textContent);
      out[s] = { score: r.score, width: r.width, height: r.height, backend: r.backend, map: Array.from(r.map), ms: r.timings.totalMs };
    }
    return out;
  }, SAMPLES);
}

function compare(got, want, label) {
  let worst = 0;
  for (const s of SAMPLES) {
    const g = got[s], w = want[s];
    assert(g.width === w.width && g.height === w.height, `${label} ${s}: ${g.width}×${g.height} vs ${w.width}×${w.height}`);
    worst = Math.max(worst, Math.abs(g.score - w.score));
    for (let i = 0; i < w.map.length; i++) worst = Math.max(worst, Math.abs(g.map[i] - w.map[i]));
  }
  assert(worst <= TOL, `${label}: differs from native kanoclip detect by ${worst}`);
  return worst;
}

const server = await serve(join(ROOT, 'www'), 0);
const origin = `http://127.0.0.1:${server.address().port}`;
const ctx = await browser();

for (const backend of ['cpu', 'webgpu']) {
  for (const [kind, model] of [['free', 'model-free32/manifest.json'], ['head', 'model-head32/manifest.json']]) {
    await test(`${backend}: ${kind === 'free' ? 'training-free' : 'trained-head'} bundle equals native within ${TOL}`, async () => {
      const { page, foreign, errors } = await openDemo(ctx, origin, { backend, model });
      const got = await detectSamples(page);
      assert(Object.values(got).every((r) => r.backend === backend), `ran on ${got.good.backend}, not ${backend}`);
      const worst = compare(got, native(kind), `${backend}/${kind}`);
      measures[`max |browser − native| ${backend} ${kind}`] = worst;
      measures[`detect ms (tiny model, ${backend}, ${kind})`] = SAMPLES.map((s) => Math.round(got[s].ms));
      assert(foreign.length === 0, `requests to other origins: ${foreign}`);
      assert(errors.length === 0, `page errors: ${errors}`);
      await page.close();
    });
  }
}

const REFS = [0, 1, 2].map((i) => readFileSync(join(ROOT, `tests/fixtures/images/fewshot_ref_${i}.png`)).toString('base64'));
for (const backend of ['cpu', 'webgpu']) {
  await test(`${backend}: few-shot setReference equals native --reference; export, clear, import; bad references`, async () => {
    const { page, errors } = await openDemo(ctx, origin, { backend, model: 'model-free32/manifest.json' });
    const r = await page.evaluate(async (refs) => {
      const d = window.kanoclipDemo.detector();
      const blobs = refs.map((b64) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], { type: 'image/png' }));
      const broken = new Blob([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3])]);
      const phases = [];
      const info = await d.setReference([...blobs, broken], {
        names: ['ref0', 'ref1', 'ref2', 'broken.png'], onProgress: (p) => phases.push(p.loaded),
      });
      const exported = await d.exportReference();
      const reject = async (f) => { try { await f(); return null; } catch (e) { return e.message; } };
      const none = await reject(() => d.setReference([]));
      const allBad = await reject(() => d.setReference([broken], { names: ['broken.png'] }));
      const badWeight = await reject(() => d.setFewShotWeight(2));
      const junk = await reject(() => d.importReference(exported.slice(0, 100)));
      return { info, phases, exportedBytes: exported.length, none, allBad, badWeight, junk, still: d.reference?.count };
    }, REFS);
    assert(r.info.count === 3 && r.info.skipped.length === 1 && r.info.skipped[0].name === 'broken.png',
      `reference info: ${JSON.stringify(r.info)}`);
    assert(r.phases.length >= 4, `progress: ${r.phases}`);
    assert(r.none && r.allBad && /broken/.test(r.allBad) && /\[0, 1\]/.test(r.badWeight) && r.junk, `bad references: ${JSON.stringify(r)}`);
    assert(r.still === 3, 'a refused call dropped the memory in force');
    const few = await detectSamples(page);
    const worst = compare(few, native('fewshot'), `${backend}/few-shot`);
    measures[`max |browser − native| ${backend} few-shot`] = worst;
    measures[`detect ms (tiny model, ${backend}, few-shot k = 3)`] = SAMPLES.map((s) => Math.round(few[s].ms));
    measures[`reference memory bytes (tiny, k = 3), exported file bytes`] = [r.info.bytes, r.exportedBytes];
    // Cleared: zero-shot again. Imported from the exported bytes: few-shot again.
    await page.evaluate(() => window.kanoclipDemo.detector().clearReference());
    compare(await detectSamples(page), native('free'), `${backend}/cleared`);
    // Re-import the k = 3 memory built above, through the page's own API.
    await page.evaluate(async (refs) => {
      const d = window.kanoclipDemo.detector();
      const blobs = refs.map((b64) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))]));
      await d.setReference(blobs);
      const bytes = await d.exportReference();
      await d.clearReference();
      await d.importReference(bytes);
    }, REFS);
    compare(await detectSamples(page), native('fewshot'), `${backend}/imported`);
    assert(errors.length === 0, `page errors: ${errors}`);
    await page.close();
  });
}

await test('the page is usable by keyboard, labels every control, and keeps a screenshot', async () => {
  const { page, foreign } = await openDemo(ctx, origin);
  for (const id of ['file', 'opacity', 'threshold', 'backend']) {
    const label = await page.evaluate((i) => document.getElementById(i).labels?.[0]?.textContent?.trim(), id);
    assert(label, `#${id} has no label`);
  }
  // Tab to the first sample button and press Enter: a result appears.
  let reached = false;
  for (let i = 0; i < 30 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement?.closest('#samples') !== null && document.activeElement?.tagName === 'BUTTON');
  }
  assert(reached, 'Tab never reached a sample button');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('score').textContent !== '–', null, { timeout: 60000 });
  // The threshold slider moves with the arrow keys and the verdict follows it.
  await page.focus('#threshold');
  const before = await page.inputValue('#threshold');
  await page.keyboard.press('ArrowRight');
  assert((await page.inputValue('#threshold')) !== before, 'the threshold slider ignores the keyboard');
  await page.fill('#threshold', '0');
  await page.dispatchEvent('#threshold', 'input');
  await page.waitForFunction(() => document.getElementById('verdict').textContent === 'anomalous');
  await page.fill('#threshold', '1');
  await page.dispatchEvent('#threshold', 'input');
  await page.waitForFunction(() => document.getElementById('verdict').textContent === 'normal');
  assert(await page.isVisible('#notice'), 'the untrained-model banner is not shown');
  assert((await page.textContent('#privacy')).includes('Nothing leaves this device'), 'no privacy statement');
  await page.screenshot({ path: join(ARTIFACTS, 'demo.png'), fullPage: true });
  assert(foreign.length === 0, `requests to other origins: ${foreign}`);
  await page.close();
});

await test('bad files each show an error and the page keeps working', async () => {
  const { page } = await openDemo(ctx, origin);
  const dir = mkdtempSync(join(tmpdir(), 'kanoclip-bad-'));
  // A PNG whose header claims 60000×60000 pixels (valid signature and IHDR, no data).
  const png = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(60000, 0);
  ihdr.writeUInt32BE(60000, 4);
  ihdr[8] = 8; ihdr[9] = 2;
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([Buffer.from('IHDR'), ihdr])));
  const bad = {
    'corrupt.jpg': Buffer.concat([readFileSync(join(ROOT, 'www/samples/hazelnut_toy/good.jpg')).subarray(0, 600), Buffer.alloc(100, 7)]),
    'empty.png': Buffer.alloc(0),
    'drawing.svg': Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'),
    'huge.png': Buffer.concat([png, ihdr, crc]),
  };
  for (const [name, bytes] of Object.entries(bad)) {
    writeFileSync(join(dir, name), bytes);
    await page.setInputFiles('#file', join(dir, name));
    await page.waitForFunction(() => document.getElementById('error').textContent.length > 0, null, { timeout: 30000 });
    const msg = await page.textContent('#error');
    console.log(`  ${name}: ${msg}`);
    assert(msg.startsWith('Error:'), `${name}: ${msg}`);
    if (name === 'huge.png') assert(/60000/.test(msg) && /limit/.test(msg), `huge.png refused for another reason: ${msg}`);
    // Still working: a good sample gives a result and clears the error.
    await page.setInputFiles('#file', join(ROOT, 'www/samples/hazelnut_toy/crack.jpg'));
    await page.waitForFunction(() => document.getElementById('error').textContent === '' && document.getElementById('score').textContent !== '–', null, { timeout: 60000 });
  }
  await page.close();
});

await test('a panic, dispose() during detect, and 50 detects in bounded memory', async () => {
  const { page } = await openDemo(ctx, origin);
  const cdp = await page.context().newCDPSession(page);
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    return page.evaluate(() => performance.memory.usedJSHeapSize);
  };
  const r = await page.evaluate(async () => {
    const d = window.kanoclipDemo.detector();
    const blob = await (await fetch('samples/hazelnut_toy/good.jpg')).blob();
    // A panic rejects the call; the next call runs on a fresh instance.
    let panicked = null;
    try { await d.debugPanic(); } catch (e) { panicked = e.message; }
    const after = await d.detect(blob);
    window.__blob = blob;
    return { panicked, after: after.score, first: await d.stats() };
  });
  r.heap0 = await heap();
  // 50 sequential detects: the wasm memory (worker) and the page's JS heap (after GC).
  r.last = await page.evaluate(async () => {
    const d = window.kanoclipDemo.detector();
    for (let i = 0; i < 50; i++) await d.detect(window.__blob);
    return d.stats();
  });
  r.heap1 = await heap();
  console.log(`  panic: ${r.panicked}`);
  assert(r.panicked && /stopped/.test(r.panicked), `the panic did not reject: ${r.panicked}`);
  assert(Number.isFinite(r.after), 'no result after the panic');
  measures['wasm memory MB after 1 / 51 detects (cpu)'] = [r.first.wasmBytes / 1e6, r.last.wasmBytes / 1e6];
  measures['page JS heap MB before / after 50 detects'] = [r.heap0 / 1e6, r.heap1 / 1e6];
  // Bounds: the wasm memory may grow once for its allocator's pools, not per detect
  // (16 MB); the page's heap holds no results (8 MB).
  assert(r.last.wasmBytes - r.first.wasmBytes <= 16e6, `wasm memory grew ${r.first.wasmBytes} → ${r.last.wasmBytes}`);
  assert(r.heap1 - r.heap0 <= 8e6, `JS heap grew ${r.heap0} → ${r.heap1}`);
  // dispose() while a detect runs: the detect rejects with a clear error, nothing hangs.
  const d = await page.evaluate(async () => {
    const det = window.kanoclipDemo.detector();
    const blob = await (await fetch('samples/hazelnut_toy/crack.jpg')).blob();
    const p = det.detect(blob);
    await new Promise((r) => setTimeout(r, 5));
    det.dispose();
    let msg = null;
    try { await p; } catch (e) { msg = e.message; }
    let later = null;
    try { await det.detect(blob); } catch (e) { later = e.message; }
    return { msg, later };
  });
  assert(d.msg && d.msg.includes('disposed'), `detect during dispose: ${d.msg}`);
  assert(d.later && d.later.includes('disposed'), `detect after dispose: ${d.later}`);
  await page.close();
});

await test('webgpu: 50 detects keep the live GPU buffer count bounded', async () => {
  const { page } = await openDemo(ctx, origin, { backend: 'webgpu' });
  const r = await page.evaluate(async () => {
    const d = window.kanoclipDemo.detector();
    const blob = await (await fetch('samples/hazelnut_toy/good.jpg')).blob();
    await d.detect(blob);
    const s1 = await d.stats();
    for (let i = 0; i < 50; i++) await d.detect(blob);
    const s2 = await d.stats();
    return { s1, s2 };
  });
  measures['live GPU buffers after 1 / 51 detects (created in all)'] = [r.s1.gpuBuffersLive, r.s2.gpuBuffersLive, r.s2.gpuBuffersCreated];
  // Burn pools its GPU memory: after the first detect, the live count may not grow by
  // more than a few buffers however many detects follow.
  assert(r.s2.gpuBuffersLive <= r.s1.gpuBuffersLive + 8, `live buffers ${r.s1.gpuBuffersLive} → ${r.s2.gpuBuffersLive}`);
  await page.close();
});

await test('the second load works offline from Cache Storage, and is faster', async () => {
  const ctx2 = await browser();
  const t0 = Date.now();
  let { page } = await openDemo(ctx2, origin);
  const cold = await page.evaluate(async () => {
    const blob = await (await fetch('samples/hazelnut_toy/crack.jpg')).blob();
    await window.kanoclipDemo.inspect(blob);
    return window.kanoclipDemo.loadMs;
  });
  measures['time to first result, cold (ms, page open → result)'] = Date.now() - t0;
  measures['model load ms cold / cached'] = [Math.round(cold)];
  const info1 = await page.evaluate(() => window.kanoclipDemo.detector().info.cached);
  assert(info1 === false, 'a fresh profile found the weights cached');
  // Offline: only the page itself can come from the network (served here); the bundle
  // must come from Cache Storage.
  await ctx2.route('**/model/**', (route) => route.abort());
  const t1 = Date.now();
  await page.reload();
  await page.evaluate(() => window.kanoclipDemo.ready);
  const r = await page.evaluate(async () => {
    const blob = await (await fetch('samples/hazelnut_toy/crack.jpg')).blob();
    const res = await window.kanoclipDemo.inspect(blob);
    return { cached: window.kanoclipDemo.detector().info.cached, score: res?.score, loadMs: window.kanoclipDemo.loadMs };
  });
  measures['time to first result, cached weights (ms)'] = Date.now() - t1;
  measures['model load ms cold / cached'].push(Math.round(r.loadMs));
  assert(r.cached === true && Number.isFinite(r.score), `offline load: ${JSON.stringify(r)}`);
  await ctx2.close();
});

await test('npm pack: the tarball installs into a scratch project and works through its API', async () => {
  const tgz = readdirSync(NATIVE).find((f) => f.startsWith('kanoclip-wasm-') && f.endsWith('.tgz'));
  assert(tgz, 'no packed tarball');
  const dir = mkdtempSync(join(tmpdir(), 'kanoclip-npm-'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', join(NATIVE, tgz)], { cwd: dir, stdio: 'pipe' });
  cpSync(join(ROOT, 'www/model'), join(dir, 'model'), { recursive: true });
  cpSync(join(ROOT, 'www/samples/hazelnut_toy/crack.jpg'), join(dir, 'crack.jpg'));
  writeFileSync(join(dir, 'index.html'), `<!doctype html><meta charset="utf-8"><title>scratch</title><link rel="icon" href="data:,">
<script type="module">
import { createDetector } from './node_modules/kanoclip-wasm/dist/index.js';
window.run = async () => {
  const progress = [];
  const d = await createDetector({ weights: 'model/manifest.json', backend: 'cpu', onProgress: (p) => progress.push(p.phase) });
  const blob = await (await fetch('crack.jpg')).blob();
  const fromBlob = await d.detect(blob);
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  const fromCanvas = await d.detect(canvas);
  const fromImageData = await d.detect(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height));
  const fromUrl = await d.detect('crack.jpg');
  const img = new Image(); img.src = 'crack.jpg'; await img.decode();
  const fromImg = await d.detect(img);
  const fromBitmap = await d.detect(bitmap);
  const overlay = await d.heatmap(fromBlob, 0.4);
  await d.setThreshold(0.25);
  const after = await d.detect(blob);
  const cal = await d.calibrate([blob, blob]);
  const concurrent = await Promise.all([d.detect(blob), d.detect(canvas), d.detect('crack.jpg')]);
  let badThreshold = null; try { await d.setThreshold(NaN); } catch (e) { badThreshold = e.message; }
  d.dispose();
  return { progress, scores: [fromBlob, fromCanvas, fromImageData, fromUrl, fromImg, fromBitmap].map((r) => r.score),
    overlay: [overlay.width, overlay.height], after: [after.threshold, after.isAnomalous, after.score >= 0.25],
    cal: cal.threshold, calScores: cal.scores, concurrent: concurrent.map((r) => r.score), badThreshold };
};
</script>`);
  const s2 = await serve(dir, 0);
  const page = await ctx.newPage();
  await page.goto(`http://127.0.0.1:${s2.address().port}/`);
  const r = await page.evaluate(() => window.run());
  s2.close();
  await page.close();
  assert(r.progress.includes('weights') && r.progress.includes('start'), `progress: ${r.progress}`);
  // The same pixels by every route (JPEG decoding in Rust and in the browser may differ
  // by a rounding step, so within the parity tolerance).
  for (const s of r.scores) assert(Math.abs(s - r.scores[0]) < TOL, `scores by input type: ${r.scores}`);
  assert(r.overlay[0] === 512 && r.overlay[1] === 512, `overlay ${r.overlay}`);
  assert(r.after[0] === 0.25 && r.after[1] === r.after[2], `threshold: ${r.after}`);
  const cs = r.calScores;
  assert(Math.abs(r.cal - Math.max(cs[0] + 1e-4, cs[1] + 1e-4)) < 1e-6, `calibration ${r.cal} from ${cs}`);
  assert(r.concurrent.length === 3 && r.concurrent.every(Number.isFinite), `concurrent: ${r.concurrent}`);
  assert(r.badThreshold && r.badThreshold.includes('finite'), `NaN threshold: ${r.badThreshold}`);
});

await ctx.close();
server.close();
writeFileSync(join(ARTIFACTS, 'measures.json'), JSON.stringify(measures, null, 1));
for (const [k, v] of Object.entries(measures)) console.log(`measure ${k}: ${JSON.stringify(v)}`);
const failed = results.filter((r) => !r[1]).length;
console.log(`browser: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
