// The demo page: everything happens here and in the package's worker; the only requests
// go to this page's own origin (the model bundle and the sample images).
import { createDetector, groupSizes } from './kanoclip-wasm/dist/index.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/**
 * The bundle to load: `?model=` (default `model/manifest.json`), on this page's origin, or on
 * one the page lists in `<meta name="kanoclip-model-origins" content="https://a.example …">`.
 * A link to the page must not make it run a stranger's model on the user's images.
 */
function modelUrl() {
  const url = new URL(params.get('model') || 'model/manifest.json', location.href);
  const listed = document.querySelector('meta[name="kanoclip-model-origins"]')?.content ?? '';
  if (url.origin === location.origin || listed.split(/\s+/).includes(url.origin)) return url.href;
  throw new Error(
    `?model= points at another origin (${url.origin}); this page loads bundles from its own ` +
      'origin only, unless it lists others in <meta name="kanoclip-model-origins">',
  );
}
const SAMPLES = ['good', 'crack', 'colour'].map((n) => `samples/hazelnut_toy/${n}.jpg`);
// Ground-truth masks of the samples that have a defect.
const MASKS = { crack: 'samples/hazelnut_toy/crack_mask.jpg', colour: 'samples/hazelnut_toy/colour_mask.jpg' };

let detector = null;
let last = null; // { result, source, input, mask }
let referenceFiles = null; // the known-good images in force, re-applied after a reload
let busy = Promise.resolve();

function fail(e) {
  $('error').textContent = `Error: ${e.message || e}`;
}

/** Every control that needs the model is disabled until it is ready (and while it reloads). */
function setReady(ready) {
  for (const el of document.querySelectorAll('[data-needs-model], #samples button')) el.disabled = !ready;
  $('drop').setAttribute('aria-disabled', String(!ready));
  $('batch-drop').setAttribute('aria-disabled', String(!ready));
}

/** The colour scale of the map, drawn by the package's own colouring of a 0→1 ramp. */
async function drawLegend() {
  const width = 256;
  const map = Float32Array.from({ length: width }, (_, i) => i / (width - 1));
  const bar = await detector.heatmap({ width, height: 1, map }, 1);
  $('legend').getContext('2d').drawImage(bar, 0, 0);
  bar.close();
}

/** The sample's ground-truth mask beside the map, when asked for and known. */
async function drawTruth() {
  const show = $('show-truth').checked && last?.mask;
  if (!show) {
    $('truth-figure').hidden = true;
    return;
  }
  const { result, mask } = last;
  const bitmap = await createImageBitmap(await (await fetch(mask)).blob());
  const c = $('truth');
  c.width = result.width;
  c.height = result.height;
  c.getContext('2d').drawImage(bitmap, 0, 0, result.width, result.height);
  bitmap.close();
  // Shown once drawn, and only if it is still the image on show.
  $('truth-figure').hidden = last?.mask !== mask || !$('show-truth').checked;
}

async function load(backend) {
  if (live) toggleLive();
  setReady(false);
  detector?.dispose();
  detector = null;
  $('progress').value = 0;
  $('progress-label').textContent = 'Loading the model…';
  const t0 = performance.now();
  detector = await createDetector({
    weights: modelUrl(),
    backend,
    stats: params.has('stats'),
    onProgress: (p) => {
      if (p.phase === 'weights' && p.total > 0) $('progress').value = p.loaded / p.total;
      $('progress-label').textContent =
        p.phase === 'start' ? 'Starting the model…' : `Loading the model${p.cached ? ' (from this browser)' : ''}…`;
    },
  });
  $('progress').value = 1;
  $('progress-label').textContent = 'Model ready';
  const i = detector.info;
  $('model-info').textContent = `${i.name}, ${i.mode}, ${(i.bundleBytes / 1e6).toFixed(1)} MB` +
    `${i.cached ? ' from the browser cache' : ''}, on ${detector.backend} (${detector.backendReason}; loaded in ` +
    `${Math.round(performance.now() - t0)} ms)`;
  $('notice').hidden = !detector.notice;
  $('notice').textContent = detector.notice || '';
  $('threshold').value = String(detector.threshold);
  $('threshold-value').textContent = detector.threshold.toFixed(3);
  window.kanoclipDemo.loadMs = performance.now() - t0;
  if (referenceFiles) await applyReferences(referenceFiles, false);
  await drawLegend();
  setReady(true);
  return detector;
}

async function draw() {
  if (!last || !detector) return;
  const { result, source } = last;
  const view = $('view');
  view.width = result.width;
  view.height = result.height;
  const ctx = view.getContext('2d');
  ctx.drawImage(source, 0, 0, result.width, result.height);
  const overlay = await detector.heatmap(result, Number($('opacity').value));
  ctx.drawImage(overlay, 0, 0);
  overlay.close();
  $('show-truth').disabled = !last.mask;
  await drawTruth();
}

function show(result) {
  const t = Number($('threshold').value);
  $('score').textContent = result.score.toFixed(4);
  $('verdict').textContent = result.score >= t ? 'anomalous' : 'normal';
  $('used-backend').textContent = result.backend;
  const ms = result.timings;
  $('timings').textContent = `total ${ms.totalMs.toFixed(0)} ms (pre ${ms.preprocessMs.toFixed(0)}, ` +
    `model ${ms.forwardMs.toFixed(0)}, post ${ms.postprocessMs.toFixed(0)})`;
}

/**
 * Inspect a Blob (file, paste, sample; `mask`: a sample's ground-truth mask URL). Returns
 * the result, or null after showing an error.
 */
async function inspect(blob, mask = null) {
  if (!detector) return null;
  const run = async () => {
    if (!detector) return null;
    $('error').textContent = '';
    try {
      const result = await detector.detect(blob);
      let source;
      try {
        source = await createImageBitmap(blob);
      } catch {
        source = await createImageBitmap(new ImageData(result.width, result.height));
      }
      last?.source.close?.();
      last = { result, source, input: blob, mask };
      show(result);
      await draw();
      return result;
    } catch (e) {
      fail(e);
      return null;
    }
  };
  return queued(run);
}

/** Run `job` after every inspection already asked for: one at a time, in order. */
function queued(job) {
  const p = busy.then(job, job);
  busy = p.catch(() => null);
  return p;
}

/** Inspect a camera snapshot, in the same queue as files; the replaced bitmap is closed. */
async function inspectCanvas(canvas) {
  if (!detector) return null;
  return queued(async () => {
    if (!detector) return null;
    $('error').textContent = '';
    try {
      const result = await detector.detect(canvas);
      const source = await createImageBitmap(canvas);
      last?.source.close?.();
      last = { result, source };
      show(result);
      await draw();
      return result;
    } catch (e) {
      fail(e);
      return null;
    }
  });
}

/** Few-shot mode: build the memory of `files` (and calibrate on them when asked). */
async function applyReferences(files, calibrate) {
  const status = $('references-status');
  const weight = Number($('few-shot-weight').value);
  const info = await detector.setReference(files, {
    weight,
    onProgress: (p) => {
      status.textContent = p.loaded < p.total ? `Reading known-good image ${p.loaded} of ${p.total - 1}…` : 'Building the memory…';
    },
  });
  referenceFiles = files;
  let text = `${info.count} known-good image${info.count === 1 ? '' : 's'} in use ` +
    `(${(info.bytes / 1e6).toFixed(1)} MB memory).`;
  if (info.skipped.length) text += ` Skipped ${info.skipped.length}: ${info.skipped.map((s) => `${s.name} (${s.error})`).join('; ')}.`;
  if (calibrate) {
    const usable = files.filter((f) => !info.skipped.some((s) => s.name === f.name));
    text += ` ${explain(await detector.calibrate(usable), usable)}`;
  }
  status.textContent = text;
  $('clear-references').disabled = false;
  return info;
}

/** Why the calibrated threshold is what it is (from the statistics calibration returns); shows it on the slider. */
function explain(cal, files) {
  $('threshold').value = String(cal.threshold);
  $('threshold-value').textContent = cal.threshold.toFixed(3);
  if (batch.length) $('batch-status').textContent = renderBatch();
  const n = cal.images;
  let text = `Threshold set to ${cal.threshold.toFixed(3)} from ${n} normal image${n === 1 ? '' : 's'}: ` +
    `their scores have mean ${cal.mean.toFixed(3)}, standard deviation ${cal.std.toFixed(3)} and maximum ${cal.max.toFixed(3)}. ` +
    `The threshold is the larger of mean + 3 × deviation (${cal.meanPlus3Std.toFixed(3)}) and just above the ` +
    'highest score, so that none of these images is called anomalous.';
  if (cal.skipped.length) {
    text += ` Skipped ${cal.skipped.length}: ${cal.skipped.map((s) => `${files[s.index].name} (${s.error})`).join('; ')}.`;
  }
  return text;
}

async function rerun() {
  if (last?.input) await inspect(last.input, last.mask);
}

let live = null; // the running watch loop, if any

/** Live mode: inspect the camera continuously, the heatmap drawn over the latest frame. */
function toggleLive() {
  if (live) {
    live.stop();
    live = null;
    $('live').textContent = 'Inspect continuously';
    $('live').setAttribute('aria-pressed', 'false');
    $('live-fps').hidden = true;
    return;
  }
  if (!detector) return;
  const v = $('video');
  $('error').textContent = '';
  live = detector.watch(
    v,
    async (result, stats) => {
      const source = await createImageBitmap(v);
      last?.source.close?.();
      last = { result, source };
      show(result);
      await draw();
      $('live-fps').textContent = `${stats.fps.toFixed(1)} inspections per second, ${stats.dropped} frames skipped ` +
        'while inspecting';
    },
    { onError: fail },
  );
  $('live').textContent = 'Stop inspecting';
  $('live').setAttribute('aria-pressed', 'true');
  $('live-fps').hidden = false;
  $('live-fps').textContent = 'Starting…';
}

function stopCamera() {
  if (live) toggleLive();
  const v = $('video');
  for (const t of v.srcObject?.getTracks() ?? []) t.stop();
  v.srcObject = null;
  v.hidden = true;
  $('snap').hidden = true;
  $('live').hidden = true;
  $('camera-stop').hidden = true;
  $('camera').hidden = false;
}

/** Files: the drop zone, the file picker and pasting. */
/** Every file dropped: the files themselves, or the files inside dropped folders. */
async function droppedFiles(dt) {
  const entries = [...(dt?.items || [])].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.some((e) => e.isDirectory)) return [...(dt?.files || [])];
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      out.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
      return;
    }
    const reader = entry.createReader();
    for (;;) {
      const some = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!some.length) break;
      for (const e of some) await walk(e);
    }
  };
  for (const e of entries) await walk(e);
  return out;
}

/**
 * A drop zone that opens `picker` on click, Enter or Space and hands a drop's DataTransfer
 * to `onDrop`, all while the model is ready (the zone's aria-disabled says so).
 */
function dropZone(zone, picker, onDrop) {
  const ready = () => zone.getAttribute('aria-disabled') !== 'true';
  zone.addEventListener('click', () => ready() && picker.click());
  zone.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && ready()) {
      e.preventDefault();
      picker.click();
    }
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    if (ready()) onDrop(e.dataTransfer);
  });
}

function setupInputs() {
  dropZone($('drop'), $('file'), (dt) => {
    const f = dt?.files?.[0];
    if (f) inspect(f);
  });
  $('file').addEventListener('change', (e) => {
    const f = e.target.files?.[0];
    if (f) inspect(f);
  });
  document.addEventListener('paste', (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === 'file');
    const f = item?.getAsFile();
    if (f) inspect(f);
  });
}

/** The view: overlay opacity, ground truth, threshold. */
function setupView() {
  $('opacity').addEventListener('input', () => {
    $('opacity-value').textContent = Number($('opacity').value).toFixed(2);
    draw();
  });
  $('show-truth').addEventListener('change', () => drawTruth().catch(fail));
  $('threshold').addEventListener('input', async () => {
    const t = Number($('threshold').value);
    $('threshold-value').textContent = t.toFixed(3);
    await detector?.setThreshold(t);
    if (last) show(last.result);
    if (batch.length) $('batch-status').textContent = renderBatch();
  });
}

/** The backend picker: reload the model and inspect the last image again. */
function setupBackend() {
  $('backend').addEventListener('change', async () => {
    $('error').textContent = '';
    try {
      const t = detector?.threshold;
      await load($('backend').value);
      if (t !== undefined) {
        await detector.setThreshold(t);
        $('threshold').value = String(t);
        $('threshold-value').textContent = t.toFixed(3);
      }
      await rerun();
    } catch (e) {
      fail(e);
      // Another backend may work: keep the choice open.
      $('backend').disabled = false;
    }
  });
}

/** Few-shot mode: known-good images, λ, back to zero-shot. */
function setupFewShot() {
  $('references').addEventListener('change', async (e) => {
    const files = [...(e.target.files || [])];
    if (!files.length || !detector) return;
    $('error').textContent = '';
    try {
      await applyReferences(files, $('calibrate-refs').checked);
      await rerun();
    } catch (err) {
      fail(err);
    }
  });
  $('few-shot-weight').addEventListener('input', async () => {
    const w = Number($('few-shot-weight').value);
    $('few-shot-weight-value').textContent = w.toFixed(2);
    if (detector?.reference) {
      await detector.setFewShotWeight(w);
      await rerun();
    }
  });
  $('clear-references').addEventListener('click', async () => {
    if (!detector) return;
    await detector.clearReference();
    referenceFiles = null;
    $('references-status').textContent = 'None: zero-shot mode.';
    $('clear-references').disabled = true;
    $('references').value = '';
    await rerun();
  });
}

/** Calibration from normal images. */
function setupCalibration() {
  $('calibrate-files').addEventListener('change', async (e) => {
    const files = [...(e.target.files || [])];
    if (!files.length || !detector) return;
    $('error').textContent = '';
    $('calibrate-status').textContent = `Scoring ${files.length} normal image${files.length === 1 ? '' : 's'}…`;
    try {
      $('calibrate-status').textContent = explain(await detector.calibrate(files), files);
      if (last) show(last.result);
    } catch (err) {
      $('calibrate-status').textContent = 'Not calibrated.';
      fail(err);
    }
  });
}

/** The camera: start, stop and snapshots (through the same queue as files). */
function setupCamera() {
  $('camera').addEventListener('click', async () => {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      const v = $('video');
      v.srcObject = stream;
      v.hidden = false;
      $('snap').hidden = false;
      $('live').hidden = false;
      $('camera-stop').hidden = false;
      $('camera').hidden = true;
      await v.play();
    } catch (e) {
      fail(new Error(`the camera is not available (${e.message || e})`));
    }
  });
  $('camera-stop').addEventListener('click', stopCamera);
  $('live').addEventListener('click', toggleLive);
  $('snap').addEventListener('click', () => {
    const v = $('video');
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    c.getContext('2d').drawImage(v, 0, 0);
    inspectCanvas(c);
  });
}

/** The sample images. */
function setupSamples() {
  for (const url of SAMPLES) {
    const name = url.split('/').pop().replace('.jpg', '');
    const b = document.createElement('button');
    b.type = 'button';
    b.setAttribute('aria-label', `Inspect the sample "${name}"`);
    const img = document.createElement('img');
    img.src = url;
    img.alt = `hazelnut sample: ${name}`;
    b.append(img);
    b.disabled = true;
    b.addEventListener('click', async () => inspect(await (await fetch(url)).blob(), MASKS[name] ?? null));
    $('samples').append(b);
  }
}

// The batch view: mutual scoring of several images of one product (spec §11).
const THUMB = 384;
let batch = []; // [{ name, score, scoredAs, fallback, view }] or [{ name, error }]
let batchAbort = null;
const isImageFile = (f) => f.type.startsWith('image/') || /\.(png|jpe?g|bmp|tiff?|webp|gif)$/i.test(f.name);

/** `result`'s overlay on `file`, at most THUMB pixels wide: the batch keeps no full-size maps. */
async function thumbnail(file, result) {
  const scale = Math.min(1, THUMB / Math.max(result.width, result.height));
  const c = document.createElement('canvas');
  c.width = Math.max(1, Math.round(result.width * scale));
  c.height = Math.max(1, Math.round(result.height * scale));
  c.setAttribute('aria-hidden', 'true');
  const ctx = c.getContext('2d');
  try {
    const bitmap = await createImageBitmap(file);
    ctx.drawImage(bitmap, 0, 0, c.width, c.height);
    bitmap.close();
  } catch {
    // The model read it, the browser cannot draw it (e.g. TIFF): the map alone.
  }
  const overlay = await detector.heatmap(result, Number($('opacity').value));
  ctx.drawImage(overlay, 0, 0, c.width, c.height);
  overlay.close();
  return c;
}

/** The batch, most anomalous first, with verdicts at the threshold now in force. */
function renderBatch() {
  const t = Number($('threshold').value);
  const list = $('batch-results');
  const ranked = [...batch].sort((a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity));
  list.replaceChildren(
    ...ranked.map((item) => {
      const li = document.createElement('li');
      const caption = document.createElement('p');
      if (item.error) {
        caption.textContent = `${item.name}: could not be read (${item.error})`;
      } else {
        const anomalous = item.score >= t;
        li.classList.toggle('anomalous', anomalous);
        li.append(item.view);
        caption.textContent = `${item.name}: ${item.score.toFixed(4)}, ${anomalous ? 'anomalous' : 'normal'}` +
          (item.scoredAs === 'alone' ? ` (scored alone: ${item.fallback})` : '');
      }
      li.append(caption);
      return li;
    }),
  );
  const scored = batch.filter((b) => !b.error);
  const anomalous = scored.filter((b) => b.score >= t).length;
  const unread = batch.length - scored.length;
  return `${scored.length} image${scored.length === 1 ? '' : 's'} scored against each other, ${anomalous} anomalous at ` +
    `threshold ${t.toFixed(3)}${unread ? `; ${unread} could not be read` : ''}.`;
}

/** Score `files` against each other, group by group (each group's maps are dropped once drawn). */
async function runBatch(files) {
  const images = files.filter(isImageFile);
  if (!detector) return null;
  if (!images.length) {
    $('batch-status').textContent = 'No image files among those chosen.';
    return null;
  }
  const group = Math.round(Number($('batch-group').value));
  return queued(async () => {
    $('error').textContent = '';
    batch = [];
    renderBatch();
    const abort = new AbortController();
    batchAbort = abort;
    $('batch-stop').hidden = false;
    const bar = $('batch-progress');
    bar.hidden = false;
    bar.value = 0;
    const status = $('batch-status');
    let done = 0;
    let start = 0;
    try {
      for (const n of groupSizes(images.length, group)) {
        const part = images.slice(start, start + n);
        start += n;
        const results = await detector.detect(part, {
          mutual: { group },
          signal: abort.signal,
          onProgress: (p) => {
            bar.value = (done + p.loaded) / images.length;
            status.textContent = `Reading and comparing image ${done + p.loaded} of ${images.length}…`;
          },
        });
        for (const [i, r] of results.entries()) {
          const name = part[i].webkitRelativePath || part[i].name;
          if (r instanceof Error) batch.push({ name, error: r.message.replace(/^kanoclip: /, '') });
          else batch.push({ name, score: r.score, scoredAs: r.mutual.scoredAs, fallback: r.mutual.fallback, view: await thumbnail(part[i], r) });
        }
        done += n;
        status.textContent = renderBatch();
      }
      if (images.length < 3) status.textContent += ' Fewer than 3 images: each was scored alone (zero-shot).';
    } catch (e) {
      if (e.code === 'ABORTED') status.textContent = `Stopped. ${renderBatch()}`;
      else fail(e);
    } finally {
      bar.hidden = true;
      $('batch-stop').hidden = true;
      batchAbort = null;
    }
    return batch;
  });
}

/** The batch view's inputs: drop zone, files, folder, group size, stop. */
function setupBatch() {
  dropZone($('batch-drop'), $('batch-files'), (dt) => droppedFiles(dt).then(runBatch).catch(fail));
  for (const id of ['batch-files', 'batch-folder']) {
    $(id).addEventListener('change', (e) => runBatch([...(e.target.files || [])]).catch(fail));
  }
  $('batch-stop').addEventListener('click', () => batchAbort?.abort());
}

function setup() {
  setupBatch();
  setupInputs();
  setupView();
  setupBackend();
  setupFewShot();
  setupCalibration();
  setupCamera();
  setupSamples();
}

window.kanoclipDemo = {
  inspect,
  applyReferences,
  runBatch,
  batch: () => batch,
  live: () => live,
  detector: () => detector,
  lastResult: () => last?.result ?? null,
  loadMs: null,
};
setup();
$('backend').value = params.get('backend') || 'auto';
window.kanoclipDemo.ready = load($('backend').value).catch((e) => {
  fail(e);
  $('backend').disabled = false;
  throw e;
});
