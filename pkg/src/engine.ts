// The inference side: loads the bundle and the wasm module and answers requests one at a
// time. It runs in a Web Worker (worker.ts) or, with `worker: false`, on the page itself.

import type { GroupEntry, PoolInit, Ready, Reply, Request } from './protocol.js';
import { loadBundle } from './weights.js';
import { KanoclipError, messageOf, toKanoclipError } from './errors.js';
import { backendOf, builtReferenceOf, calibrationOf, detectionOf, groupResultOf, referenceInfoOf } from './check.js';

import type { WebDetector } from '../wasm/kanoclip.js';

type Wasm = typeof import('../wasm/kanoclip.js');

let wasmPromise: Promise<Wasm> | null = null;
let wasmMemory: WebAssembly.Memory | null = null;

/**
 * Live WebGPU buffers (creations minus destructions) and compute dispatches (in all, and
 * by pipeline label: the kernel's name) since counting began, for `stats`. Counting wraps
 * `GPUDevice.prototype.createBuffer`, `createComputePipeline(Async)` and the compute pass's
 * `setPipeline` and `dispatchWorkgroups(Indirect)` in this engine's global scope (the
 * worker's, by default), and only once stats are asked for (`stats: true` at load, or the
 * first `stats()` call): importing the package changes nothing.
 */
const gpu = { live: 0, created: 0, dispatches: 0, kinds: new Map<string, number>(), counting: false };

function countGpu(): void {
  type Buffer = { destroy: () => void };
  type Pipeline = object;
  type Method = (this: object, ...a: unknown[]) => unknown;
  type Proto = Record<string, Method>;
  const g = globalThis as { GPUDevice?: { prototype: Proto }; GPUComputePassEncoder?: { prototype: Proto } };
  if (gpu.counting || !g.GPUDevice) return;
  gpu.counting = true;
  const device = g.GPUDevice.prototype;
  const create = device.createBuffer;
  device.createBuffer = function (this: object, desc: unknown) {
    const buffer = create.call(this, desc) as Buffer;
    gpu.live++;
    gpu.created++;
    const destroy = buffer.destroy.bind(buffer);
    let done = false;
    buffer.destroy = () => {
      if (!done) gpu.live--;
      done = true;
      destroy();
    };
    return buffer;
  };
  const labels = new WeakMap<Pipeline, string>();
  const label = (desc: unknown) => String((desc as { label?: string } | null)?.label || 'unlabelled');
  const pipeline = device.createComputePipeline;
  device.createComputePipeline = function (this: object, desc: unknown) {
    const p = pipeline.call(this, desc) as Pipeline;
    labels.set(p, label(desc));
    return p;
  };
  const pipelineAsync = device.createComputePipelineAsync;
  if (pipelineAsync) {
    device.createComputePipelineAsync = async function (this: object, desc: unknown) {
      const p = (await pipelineAsync.call(this, desc)) as Pipeline;
      labels.set(p, label(desc));
      return p;
    };
  }
  const pass = g.GPUComputePassEncoder?.prototype;
  if (!pass) return;
  const current = new WeakMap<object, string>();
  const setPipeline = pass.setPipeline;
  pass.setPipeline = function (this: object, p: unknown) {
    current.set(this, labels.get(p as Pipeline) ?? 'unlabelled');
    return setPipeline.call(this, p);
  };
  for (const name of ['dispatchWorkgroups', 'dispatchWorkgroupsIndirect']) {
    const dispatch = pass[name];
    if (!dispatch) continue;
    pass[name] = function (this: object, ...a: unknown[]) {
      gpu.dispatches++;
      const k = current.get(this) ?? 'unlabelled';
      gpu.kinds.set(k, (gpu.kinds.get(k) ?? 0) + 1);
      return dispatch.apply(this, a);
    };
  }
}

/** The single-threaded module (wasm/), from `wasmUrl` or beside this file. */
async function wasm(wasmUrl?: string): Promise<Wasm> {
  if (!wasmPromise) {
    wasmPromise = (async () => {
      const m = await import('../wasm/kanoclip.js');
      const url = wasmUrl ?? new URL('../wasm/kanoclip_bg.wasm', import.meta.url);
      const exports = await m.default({ module_or_path: url });
      wasmMemory = exports.memory;
      return m;
    })();
  }
  return wasmPromise;
}

type Threaded = typeof import('../wasm-threads/kanoclip.js');

/**
 * Why the threaded module cannot run here, or null if it can: it needs shared memory
 * (a cross-origin isolated page) and a Web Worker to block in (never the page's thread).
 */
export function threadsDeclined(): string | null {
  const g = globalThis as { crossOriginIsolated?: boolean; WorkerGlobalScope?: abstract new () => unknown };
  if (!g.WorkerGlobalScope || !(globalThis instanceof g.WorkerGlobalScope)) return 'the engine runs on the page (worker: false)';
  if (g.crossOriginIsolated !== true || typeof SharedArrayBuffer !== 'function') {
    return 'the page is not cross-origin isolated (COOP/COEP headers)';
  }
  return null;
}

/** The pool threads' workers, kept so that they are not collected. */
const poolWorkers: Worker[] = [];

function startPoolThread(module: WebAssembly.Module, memory: WebAssembly.Memory, channel: string): Promise<void> {
  return new Promise((ok, fail) => {
    const w = new Worker(new URL('./pool.js', import.meta.url), { type: 'module', name: 'kanoclip-pool' });
    poolWorkers.push(w);
    w.onmessage = (ev: MessageEvent<{ type: string; message?: string }>) => {
      if (ev.data?.type === 'ready') ok();
      else fail(new Error(ev.data?.message ?? 'no reason given'));
    };
    w.onerror = (ev: ErrorEvent) => {
      ev.preventDefault();
      fail(new Error(ev.message || 'its script did not load'));
    };
    const init: PoolInit = { module, memory, channel };
    w.postMessage(init);
  });
}

/**
 * The threaded module (wasm-threads/) on `threads` threads, this one and `threads - 1`
 * workers: the module is compiled once here and instantiated by each worker on this
 * instance's shared memory.
 */
async function wasmThreads(threads: number, url: string | undefined, channel: string): Promise<Wasm> {
  const m: Threaded = await import('../wasm-threads/kanoclip.js');
  const src = url ?? new URL('../wasm-threads/kanoclip_bg.wasm', import.meta.url).href;
  const res = await fetch(src);
  if (!res.ok) throw new Error(`${src}: HTTP ${res.status}`);
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compileStreaming(res.clone());
  } catch {
    module = await WebAssembly.compile(await res.arrayBuffer()); // a server without application/wasm
  }
  const exports = await m.default({ module_or_path: module });
  // This thread is the pool's thread 0. The other workers first (each then waits for its
  // thread), then the pool, which hands the threads out and returns once all of them run.
  m.poolPrepare();
  await Promise.all(Array.from({ length: threads - 1 }, () => startPoolThread(module, exports.memory, channel)));
  m.poolBuild(threads);
  wasmMemory = exports.memory;
  // The same exports as the single module's, plus the pool's.
  return m as unknown as Wasm;
}

/**
 * The module for a load: the threaded one for the CPU path where it can run (`threads`
 * caps its pool; every core by default), else the single-threaded one, which is also the
 * one with WebGPU. Only the module picked is downloaded; the threaded one falls back to
 * the other if it cannot start, and says why.
 */
async function moduleFor(req: Request & { type: 'load' }, cpu: boolean): Promise<{ m: Wasm; threads: number; note: string }> {
  if (wasmPromise) return { m: await wasmPromise, threads: threadCount, note: '' };
  const cores = Math.max(1, Math.floor(globalThis.navigator?.hardwareConcurrency || 1));
  const threads = Math.max(1, Math.min(req.threads ?? cores, cores));
  const declined = !cpu ? 'WebGPU runs on the single-threaded module' : threadsDeclined() ?? (!req.poolChannel ? 'no channel to the page' : null);
  if (!declined) {
    const started = wasmThreads(threads, req.wasmThreadsUrl, req.poolChannel as string);
    try {
      wasmPromise = started;
      const m = await started;
      threadCount = threads;
      return { m, threads, note: `${threads} CPU thread${threads === 1 ? '' : 's'}` };
    } catch (e) {
      for (const w of poolWorkers.splice(0)) w.terminate();
      wasmPromise = null;
      const m = await wasm(req.wasmUrl);
      return { m, threads: 1, note: `1 CPU thread: the threaded module did not start (${messageOf(e)})` };
    }
  }
  const m = await wasm(req.wasmUrl);
  return { m, threads: 1, note: cpu ? `1 CPU thread: ${declined}` : '' };
}

/** The pool size of the module in use (1: the single-threaded module). */
let threadCount = 1;

/**
 * Why `backend: 'auto'` should not take WebGPU here, or null to take it. A software
 * adapter (Chromium's SwiftShader, one flagged as a fallback, Mesa's llvmpipe/lavapipe,
 * Microsoft's WARP) emulates the GPU on the CPU and is far slower than the CPU path
 * (a B/16 detect: 203 s on SwiftShader against 2.0 s in wasm on one thread, issue #22).
 */
export async function autoDeclinesWebGpu(): Promise<string | null> {
  type Info = { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  type Adapter = { info?: Info; isFallbackAdapter?: boolean };
  const gpu = (globalThis.navigator as { gpu?: { requestAdapter: () => Promise<Adapter | null> } } | undefined)?.gpu;
  if (!gpu) return 'this browser offers no WebGPU';
  let adapter: Adapter | null = null;
  try {
    adapter = await gpu.requestAdapter();
  } catch {
    adapter = null;
  }
  if (!adapter) return 'this browser offers no WebGPU adapter';
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
  if (adapter.isFallbackAdapter || info.isFallbackAdapter) return `the WebGPU adapter is a fallback adapter (${name || 'unnamed'})`;
  if (/swiftshader|llvmpipe|lavapipe|softpipe|software|microsoft basic render|\bwarp\b/i.test(name)) {
    return `the WebGPU adapter is a software renderer (${name}), slower than the CPU path`;
  }
  return null;
}

/** A wasm trap (a Rust panic aborts) leaves the instance unusable: the host must restart. */
function isTrap(e: unknown): boolean {
  return e instanceof WebAssembly.RuntimeError;
}

export function createEngine(post: (r: Reply, transfer?: Transferable[]) => void) {
  let detector: WebDetector | null = null;
  let broken = false;
  return async (req: Request): Promise<void> => {
    const { id } = req;
    if (broken) {
      post({ id, type: 'error', message: 'the wasm module stopped; restarting', code: 'INTERNAL', fatal: true });
      return;
    }
    try {
      // `auto` takes WebGPU only on a hardware adapter; the reason is reported. That is
      // decided first, so that only the module the backend needs is downloaded.
      const declined = req.type === 'load' && req.backend === 'auto' ? await autoDeclinesWebGpu() : null;
      const picked = req.type === 'load' ? await moduleFor(req, req.backend === 'cpu' || declined !== null) : null;
      const m = picked?.m ?? (await wasm());
      switch (req.type) {
        case 'load': {
          if (req.stats) countGpu();
          const bundle = await loadBundle(req.manifestUrl, m.checkManifest, (progress) => post({ id, type: 'progress', progress }));
          post({ id, type: 'progress', progress: { phase: 'start', loaded: 0, total: 0, cached: bundle.cached } });
          const vision = bundle.files.get('vision');
          if (!vision) throw new KanoclipError('MODEL_INCOMPATIBLE', 'the bundle has no vision file');
          const head = bundle.files.get('head') ?? new Uint8Array(0);
          detector = await m.WebDetector.create(bundle.manifestText, vision, head, declined ? 'cpu' : req.backend);
          const backend = backendOf(detector.backend());
          const asked =
            req.backend !== 'auto'
              ? `asked for ${req.backend === 'cpu' ? 'the CPU' : 'WebGPU'}`
              : declined
                ? `automatic: ${declined}`
                : backend === 'webgpu'
                  ? 'automatic: a hardware WebGPU adapter'
                  : 'automatic: WebGPU did not start';
          const threads = backend === 'cpu' ? (picked?.threads ?? 1) : 1;
          const note = backend === 'cpu' ? picked?.note || '1 CPU thread' : '';
          const reason = note ? `${asked}; ${note}` : asked;
          const ready: Ready = {
            backend,
            backendReason: reason,
            threads,
            threshold: detector.threshold(),
            notice: detector.notice() ?? null,
            name: bundle.manifest.name,
            mode: bundle.manifest.mode,
            bundleBytes: bundle.manifest.files.reduce((n, f) => n + f.size, 0),
            cached: bundle.cached,
          };
          post({ id, type: 'ok', kind: 'load', value: ready });
          return;
        }
        case 'threshold':
          need(detector).setThreshold(req.value);
          post({ id, type: 'ok', kind: 'threshold', value: null });
          return;
        case 'calibrate':
          post({ id, type: 'ok', kind: 'calibrate', value: calibrationOf(m.calibrate(new Float64Array(req.scores))) });
          return;
        case 'reference': {
          const info = builtReferenceOf(await need(detector).setReference(req.items, req.names, req.weight));
          post({ id, type: 'ok', kind: 'reference', value: info });
          return;
        }
        case 'group': {
          // Each image's forward pass as it is added (only its tokens stay), so progress
          // is per image and one unreadable image costs only itself.
          const group = need(detector).beginGroup(req.weight, req.group);
          const entries: (GroupEntry | null)[] = [];
          try {
            for (const [i, item] of req.items.entries()) {
              try {
                if (item instanceof Uint8Array) group.addEncoded(item);
                else group.addRgba(item.rgba, item.width, item.height);
                entries.push(null);
              } catch (e) {
                if (isTrap(e)) throw e;
                const k = toKanoclipError(e);
                entries.push({ error: { code: k.code, message: k.message } });
              }
              post({ id, type: 'progress', progress: { phase: 'images', loaded: i + 1, total: req.items.length, cached: false } });
            }
            const scored = entries.some((e) => e === null) ? ((await group.finish()) as unknown[]) : [];
            let next = 0;
            const value: GroupEntry[] = entries.map((e) => e ?? { ok: groupResultOf(scored[next++]) });
            const maps = value.flatMap((e) => ('ok' in e ? [e.ok.map.buffer] : []));
            post({ id, type: 'ok', kind: 'group', value }, maps);
          } finally {
            group.free();
          }
          return;
        }
        case 'referenceInfo':
          post({ id, type: 'ok', kind: 'referenceInfo', value: referenceInfoOf(need(detector).referenceInfo()) });
          return;
        case 'clearReference':
          need(detector).clearReference();
          post({ id, type: 'ok', kind: 'clearReference', value: null });
          return;
        case 'exportReference': {
          const bytes = need(detector).exportReference();
          post({ id, type: 'ok', kind: 'exportReference', value: bytes }, [bytes.buffer]);
          return;
        }
        case 'importReference':
          post({ id, type: 'ok', kind: 'importReference', value: builtReferenceOf(need(detector).importReference(req.bytes, req.weight)) });
          return;
        case 'fewShotWeight':
          need(detector).setFewShotWeight(req.value);
          post({ id, type: 'ok', kind: 'fewShotWeight', value: null });
          return;
        case 'panic': {
          // On a pool thread: this thread then waits for it forever; the thread tells the
          // page, which restarts the engine.
          const pool = (m as unknown as Partial<Threaded>).debugPanicInPool;
          if (req.where === 'pool' && pool) pool();
          else if (req.where === 'pool') throw new KanoclipError('INVALID_ARGUMENT', 'this engine has no thread pool');
          else m.debugPanic();
          return;
        }
        case 'stats': {
          countGpu();
          const kinds = Object.fromEntries(gpu.kinds);
          post({ id, type: 'ok', kind: 'stats', value: { wasmBytes: wasmMemory?.buffer.byteLength ?? null, gpuBuffersLive: gpu.live,
            gpuBuffersCreated: gpu.created, gpuDispatches: gpu.dispatches, gpuDispatchKinds: kinds } });
          return;
        }
        case 'encoded':
        case 'rgba': {
          const d = need(detector);
          const result = detectionOf(
            req.type === 'encoded' ? await d.detectEncoded(req.bytes) : await d.detectRgba(req.rgba, req.width, req.height),
          );
          post({ id, type: 'ok', kind: req.type, value: result }, [result.map.buffer]);
          return;
        }
      }
    } catch (e) {
      const fatal = isTrap(e);
      if (fatal) broken = true;
      if (fatal) {
        post({ id, type: 'error', message: `the wasm module stopped (${messageOf(e)}); restarting`, code: 'INTERNAL', fatal });
      } else {
        const k = toKanoclipError(e);
        post({ id, type: 'error', message: k.message, code: k.code, fatal });
      }
    }
  };
}

function need(d: WebDetector | null): WebDetector {
  if (!d) throw new KanoclipError('INTERNAL', 'the detector is not loaded');
  return d;
}
