// The inference side: loads the bundle and the wasm module and answers requests one at a
// time. It runs in a Web Worker (worker.ts) or, with `worker: false`, on the page itself.

import type { Ready, Reply, Request } from './protocol.js';
import { loadBundle } from './weights.js';

import type { WebDetector } from '../wasm/kanoclip.js';

type Wasm = typeof import('../wasm/kanoclip.js');

let wasmPromise: Promise<Wasm> | null = null;
let wasmMemory: WebAssembly.Memory | null = null;

/** Live WebGPU buffers made by this engine (creations minus destructions), for `stats`. */
const gpu = { live: 0, created: 0 };
const GPUDeviceClass = (globalThis as { GPUDevice?: { prototype: { createBuffer: (d: unknown) => unknown } } }).GPUDevice;
if (GPUDeviceClass && !(GPUDeviceClass.prototype as { __kanoclipCounted?: boolean }).__kanoclipCounted) {
  const create = GPUDeviceClass.prototype.createBuffer;
  GPUDeviceClass.prototype.createBuffer = function (this: unknown, desc: unknown) {
    const buffer = create.call(this, desc) as { destroy: () => void };
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
  (GPUDeviceClass.prototype as { __kanoclipCounted?: boolean }).__kanoclipCounted = true;
}

async function wasm(): Promise<Wasm> {
  if (!wasmPromise) {
    wasmPromise = (async () => {
      const m = await import('../wasm/kanoclip.js');
      const exports = await m.default({ module_or_path: new URL('../wasm/kanoclip_bg.wasm', import.meta.url) });
      wasmMemory = exports.memory;
      return m;
    })();
  }
  return wasmPromise;
}

function message(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
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
      post({ id, type: 'error', message: 'the wasm module stopped; restarting', fatal: true });
      return;
    }
    try {
      const m = await wasm();
      switch (req.type) {
        case 'load': {
          const bundle = await loadBundle(req.manifestUrl, (progress) => post({ id, type: 'progress', progress }));
          post({ id, type: 'progress', progress: { phase: 'start', loaded: 0, total: 0, cached: bundle.cached } });
          const vision = bundle.files.get('vision');
          if (!vision) throw new Error('the bundle has no vision file');
          const head = bundle.files.get('head') ?? new Uint8Array(0);
          detector = await m.WebDetector.create(bundle.manifestText, vision, head, req.backend);
          const ready: Ready = {
            backend: detector.backend() as Ready['backend'],
            threshold: detector.threshold(),
            notice: detector.notice() ?? null,
            name: bundle.manifest.name,
            mode: bundle.manifest.mode,
            bundleBytes: bundle.manifest.files.reduce((n, f) => n + f.size, 0),
            cached: bundle.cached,
          };
          post({ id, type: 'ok', value: ready });
          return;
        }
        case 'threshold':
          need(detector).setThreshold(req.value);
          post({ id, type: 'ok', value: null });
          return;
        case 'calibrate':
          post({ id, type: 'ok', value: m.calibrationThreshold(new Float64Array(req.scores)) });
          return;
        case 'reference': {
          post({ id, type: 'ok', value: await need(detector).setReference(req.items, req.names, req.weight) });
          return;
        }
        case 'referenceInfo':
          post({ id, type: 'ok', value: need(detector).referenceInfo() });
          return;
        case 'clearReference':
          need(detector).clearReference();
          post({ id, type: 'ok', value: null });
          return;
        case 'exportReference': {
          const bytes = need(detector).exportReference();
          post({ id, type: 'ok', value: bytes }, [bytes.buffer]);
          return;
        }
        case 'importReference':
          post({ id, type: 'ok', value: need(detector).importReference(req.bytes, req.weight) });
          return;
        case 'fewShotWeight':
          need(detector).setFewShotWeight(req.value);
          post({ id, type: 'ok', value: null });
          return;
        case 'panic':
          m.debugPanic();
          return;
        case 'stats': {
          post({ id, type: 'ok', value: { wasmBytes: wasmMemory?.buffer.byteLength ?? null, gpuBuffersLive: gpu.live, gpuBuffersCreated: gpu.created } });
          return;
        }
        case 'encoded':
        case 'rgba': {
          const d = need(detector);
          const result =
            req.type === 'encoded'
              ? await d.detectEncoded(req.bytes)
              : await d.detectRgba(req.rgba, req.width, req.height);
          post({ id, type: 'ok', value: result }, [(result as { map: Float32Array }).map.buffer]);
          return;
        }
      }
    } catch (e) {
      const fatal = isTrap(e);
      if (fatal) broken = true;
      post({ id, type: 'error', message: fatal ? `the wasm module stopped (${message(e)}); restarting` : message(e), fatal });
    }
  };
}

function need(d: WebDetector | null): WebDetector {
  if (!d) throw new Error('the detector is not loaded');
  return d;
}
