// kanoclip-wasm: KAnoCLIP anomaly detection in the browser. Images are decoded and
// inspected on this device (WebGPU, or the CPU when WebGPU is absent); nothing is sent
// anywhere. Inference runs in a Web Worker by default, one request at a time.

import { createEngine } from './engine.js';
import type {
  BackendChoice,
  Payload,
  Progress,
  Ready,
  ReferenceInfo,
  ReferenceItem,
  Reply,
  Request,
  RequestBody,
  Stats,
} from './protocol.js';
import { turbo } from './turbo.js';

export type { BackendChoice, Progress, ReferenceInfo, Stats } from './protocol.js';
export { CACHE_NAME } from './weights.js';

export type ImageInput =
  | HTMLImageElement
  | HTMLCanvasElement
  | OffscreenCanvas
  | ImageBitmap
  | ImageData
  | Blob
  | File
  | string;

export interface DetectorOptions {
  /** URL of the bundle's `manifest.json` (from `kanoclip convert --to web`). */
  weights: string | URL;
  /** `auto` (default) uses WebGPU when the browser offers it, else the CPU. */
  backend?: BackendChoice;
  onProgress?: (p: Progress) => void;
  /** Run inference in a Web Worker (default) or on the calling thread. */
  worker?: boolean;
}

export interface Timings {
  preprocessMs: number;
  forwardMs: number;
  postprocessMs: number;
  totalMs: number;
}

export interface DetectionResult {
  /** Fused image score (0.5 · global probability + 0.5 · map maximum). */
  score: number;
  isAnomalous: boolean;
  threshold: number;
  globalProbability: number;
  /** The anomaly map at the image's size, row-major, values in [0, 1]. */
  map: Float32Array;
  width: number;
  height: number;
  backend: 'webgpu' | 'cpu';
  timings: Timings;
}

interface Transport {
  send(req: Request, transfer: Transferable[]): void;
  terminate(): void;
}

type Pending = {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  onProgress?: (p: Progress) => void;
};

function workerTransport(onReply: (r: Reply) => void, onCrash: (e: string) => void): Transport {
  const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'kanoclip' });
  w.onmessage = (ev: MessageEvent<Reply>) => onReply(ev.data);
  w.onerror = (ev: ErrorEvent) => {
    ev.preventDefault();
    onCrash(ev.message || 'the inference worker failed');
  };
  return { send: (req, transfer) => w.postMessage(req, transfer), terminate: () => w.terminate() };
}

function inlineTransport(onReply: (r: Reply) => void): Transport {
  let alive = true;
  const engine = createEngine((r) => queueMicrotask(() => alive && onReply(r)));
  let chain: Promise<void> = Promise.resolve();
  return {
    send: (req) => {
      chain = chain.then(() => engine(req));
    },
    terminate: () => {
      alive = false;
    },
  };
}

export class Detector {
  #transport!: Transport;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #needsRestart = false;
  #options: Required<Pick<DetectorOptions, 'backend' | 'worker'>> & { manifestUrl: string };
  #ready!: Ready;
  #threshold = 0.5;
  /** A threshold set by the user, kept across restarts. */
  #override: number | null = null;
  /** The reference memory in force (its file's bytes and λ), restored after a restart. */
  #memory: { bytes: Uint8Array; weight: number } | null = null;
  #reference: ReferenceInfo | null = null;

  private constructor(options: DetectorOptions) {
    this.#options = {
      backend: options.backend ?? 'auto',
      worker: options.worker ?? true,
      manifestUrl: new URL(String(options.weights), globalThis.location?.href).href,
    };
  }

  /** Download (or read from Cache Storage), verify and start the model. */
  static async create(options: DetectorOptions): Promise<Detector> {
    const backend = options.backend ?? 'auto';
    if (!['webgpu', 'cpu', 'auto'].includes(backend)) {
      throw new Error(`backend must be 'webgpu', 'cpu' or 'auto', not ${JSON.stringify(backend)}`);
    }
    const d = new Detector(options);
    await d.#start(options.onProgress);
    return d;
  }

  /** `webgpu` or `cpu`: where inference runs. */
  get backend(): 'webgpu' | 'cpu' {
    return this.#ready.backend;
  }
  get threshold(): number {
    return this.#threshold;
  }
  /** The bundle's notice (for instance that its model is an untrained test model), or null. */
  get notice(): string | null {
    return this.#ready.notice;
  }
  /** Model name, mode, bundle size and whether the weights came from the cache. */
  get info(): Readonly<Ready> {
    return this.#ready;
  }

  async #start(onProgress?: (p: Progress) => void): Promise<void> {
    const onReply = (r: Reply) => this.#onReply(r);
    const onCrash = (m: string) => this.#crash(m);
    this.#transport = this.#options.worker ? workerTransport(onReply, onCrash) : inlineTransport(onReply);
    this.#ready = (await this.#request(
      { type: 'load', manifestUrl: this.#options.manifestUrl, backend: this.#options.backend },
      [],
      onProgress,
    )) as Ready;
    // A restarted engine keeps the threshold the user set.
    if (this.#override !== null) await this.#request({ type: 'threshold', value: this.#override }, []);
    if (this.#memory) {
      const bytes = this.#memory.bytes.slice();
      await this.#request({ type: 'importReference', bytes, weight: this.#memory.weight }, [bytes.buffer]);
    }
    this.#threshold = this.#override ?? this.#ready.threshold;
    this.#needsRestart = false;
  }

  #onReply(r: Reply): void {
    const p = this.#pending.get(r.id);
    if (!p) return;
    if (r.type === 'progress') {
      p.onProgress?.(r.progress);
      return;
    }
    this.#pending.delete(r.id);
    if (r.type === 'ok') p.resolve(r.value);
    else {
      if (r.fatal) this.#needsRestart = true;
      p.reject(new Error(`kanoclip: ${r.message}`));
    }
  }

  #crash(m: string): void {
    this.#needsRestart = true;
    for (const [, p] of this.#pending) p.reject(new Error(`kanoclip: ${m}`));
    this.#pending.clear();
  }

  #request(body: RequestBody, transfer: Transferable[], onProgress?: (p: Progress) => void): Promise<unknown> {
    if (this.#disposed) return Promise.reject(new Error('kanoclip: the detector was disposed'));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      this.#transport.send({ ...body, id } as Request, transfer);
    });
  }

  /** Run `job` after every earlier call, restarting the engine first if it stopped. */
  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = async () => {
      if (this.#disposed) throw new Error('kanoclip: the detector was disposed');
      if (this.#needsRestart) {
        this.#transport.terminate();
        await this.#start();
      }
      return job();
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  /** Inspect one image. Calls are queued: concurrent calls run one after another. */
  async detect(image: ImageInput): Promise<DetectionResult> {
    if (this.#disposed) throw new Error('kanoclip: the detector was disposed');
    const payload = await toPayload(image);
    return this.#enqueue(
      () =>
        this.#request(
          payload,
          payload.type === 'encoded' ? [payload.bytes.buffer] : [payload.rgba.buffer],
        ) as Promise<DetectionResult>,
    );
  }

  /** The map as a TURBO-coloured overlay with the given opacity (0–1), at the image's size. */
  async heatmap(result: DetectionResult, opacity = 0.5): Promise<ImageBitmap> {
    if (!(opacity >= 0 && opacity <= 1)) throw new Error('opacity must be between 0 and 1');
    const { width, height, map } = result;
    if (map.length !== width * height) throw new Error('the result has no map of its size');
    const px = new Uint8ClampedArray(width * height * 4);
    const alpha = Math.round(opacity * 255);
    for (let i = 0; i < map.length; i++) {
      const [r, g, b] = turbo(map[i]);
      px[i * 4] = r;
      px[i * 4 + 1] = g;
      px[i * 4 + 2] = b;
      px[i * 4 + 3] = alpha;
    }
    return createImageBitmap(new ImageData(px, width, height));
  }

  /** Set the decision threshold used from now on. */
  async setThreshold(t: number): Promise<void> {
    if (typeof t !== 'number' || !Number.isFinite(t)) throw new Error(`threshold ${t} is not a finite number`);
    await this.#enqueue(() => this.#request({ type: 'threshold', value: t }, []));
    this.#override = t;
    this.#threshold = t;
  }

  /**
   * Set the threshold from images known to be normal: max(mean + 3·std, max + 1e-4) of their
   * scores. Returns the threshold and the scores.
   */
  async calibrate(normalImages: ImageInput[]): Promise<{ threshold: number; scores: number[] }> {
    if (!Array.isArray(normalImages) || normalImages.length === 0) {
      throw new Error('calibration needs at least one normal image');
    }
    const scores: number[] = [];
    for (const img of normalImages) scores.push((await this.detect(img)).score);
    const threshold = (await this.#enqueue(() => this.#request({ type: 'calibrate', scores }, []))) as number;
    await this.setThreshold(threshold);
    return { threshold, scores };
  }

  /**
   * Few-shot mode: known-good images whose patch features sharpen the maps from now on
   * (spec §10). An image that cannot be read is named in `skipped` and left out; none
   * readable rejects. `weight` is λ in [0, 1] (1: the few-shot map alone). Progress
   * reports phase `reference`: images read, then the memory built.
   *
   * @example
   * const info = await detector.setReference([good1, good2, good3, good4]);
   * console.log(`${info.count} references, ${info.bytes} bytes`);
   */
  async setReference(
    images: ImageInput[],
    options: { weight?: number; names?: string[]; onProgress?: (p: Progress) => void } = {},
  ): Promise<ReferenceInfo> {
    if (!Array.isArray(images) || images.length === 0) {
      throw new Error('kanoclip: setReference needs at least one known-good image');
    }
    const weight = options.weight ?? 0.5;
    if (!(weight >= 0 && weight <= 1)) throw new Error(`kanoclip: the few-shot weight ${weight} is not in [0, 1]`);
    const names = options.names ?? images.map((img, i) => (img instanceof File ? img.name : `reference ${i + 1}`));
    if (names.length !== images.length) throw new Error('kanoclip: one name per reference image');
    const total = images.length + 1;
    const items: ReferenceItem[] = [];
    const keep: string[] = [];
    const unreadable: { name: string; error: string }[] = [];
    for (let i = 0; i < images.length; i++) {
      try {
        const p = await toPayload(images[i]);
        items.push(p.type === 'encoded' ? p.bytes : { rgba: p.rgba, width: p.width, height: p.height });
        keep.push(names[i]);
      } catch (e) {
        unreadable.push({ name: names[i], error: e instanceof Error ? e.message : String(e) });
      }
      options.onProgress?.({ phase: 'reference', loaded: i + 1, total, cached: false });
    }
    const transfer = items.map((it) => (it instanceof Uint8Array ? it.buffer : it.rgba.buffer));
    const info = (await this.#enqueue(() =>
      this.#request({ type: 'reference', items, names: keep, weight }, transfer),
    )) as ReferenceInfo;
    info.skipped = [...unreadable, ...info.skipped];
    options.onProgress?.({ phase: 'reference', loaded: total, total, cached: false });
    await this.#keepMemory(weight);
    this.#reference = info;
    return info;
  }

  /** The reference memory in force (count, names, bytes, λ), or null in zero-shot mode. */
  get reference(): ReferenceInfo | null {
    return this.#reference;
  }

  /** Back to zero-shot detection. */
  async clearReference(): Promise<void> {
    await this.#enqueue(() => this.#request({ type: 'clearReference' }, []));
    this.#memory = null;
    this.#reference = null;
  }

  /** λ of the memory in force, in [0, 1]. */
  async setFewShotWeight(weight: number): Promise<void> {
    if (!(weight >= 0 && weight <= 1)) throw new Error(`kanoclip: the few-shot weight ${weight} is not in [0, 1]`);
    await this.#enqueue(() => this.#request({ type: 'fewShotWeight', value: weight }, []));
    if (this.#memory) this.#memory.weight = weight;
    if (this.#reference) this.#reference = { ...this.#reference, weight };
  }

  /**
   * The memory in force as bytes (a `kanoclip reference build` memory file), for an app
   * to keep, for instance in IndexedDB, and give back to `importReference`.
   */
  async exportReference(): Promise<Uint8Array> {
    if (!this.#memory) throw new Error('kanoclip: there is no reference memory to export');
    return this.#memory.bytes.slice();
  }

  /** Use memory bytes from `exportReference` or `kanoclip reference build`. */
  async importReference(bytes: Uint8Array, options: { weight?: number } = {}): Promise<ReferenceInfo> {
    const weight = options.weight ?? 0.5;
    if (!(bytes instanceof Uint8Array)) throw new Error('kanoclip: importReference takes a Uint8Array');
    const copy = bytes.slice();
    const info = (await this.#enqueue(() =>
      this.#request({ type: 'importReference', bytes: copy, weight }, [copy.buffer]),
    )) as ReferenceInfo;
    await this.#keepMemory(weight);
    this.#reference = info;
    return info;
  }

  /** Keep the engine's memory bytes on the page, so a restarted engine gets it back. */
  async #keepMemory(weight: number): Promise<void> {
    const bytes = (await this.#enqueue(() => this.#request({ type: 'exportReference' }, []))) as Uint8Array;
    this.#memory = { bytes, weight };
  }

  /** Stop the worker and free the model. Pending and later calls reject. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#transport?.terminate();
    for (const [, p] of this.#pending) p.reject(new Error('kanoclip: the detector was disposed'));
    this.#pending.clear();
  }

  /** Memory and GPU-buffer figures of the engine (wasm memory size, live WebGPU buffers). */
  async stats(): Promise<Stats> {
    return (await this.#enqueue(() => this.#request({ type: 'stats' }, []))) as Stats;
  }

  /** For tests: make the wasm module panic; the next call restarts it. */
  async debugPanic(): Promise<void> {
    await this.#enqueue(() => this.#request({ type: 'panic' }, []));
  }
}

export function createDetector(options: DetectorOptions): Promise<Detector> {
  return Detector.create(options);
}

function rgbaOf(source: CanvasImageSource, width: number, height: number): Payload {
  if (!(width > 0 && height > 0)) throw new Error(`the image is ${width}×${height} pixels`);
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d');
  if (!ctx) throw new Error('no 2D canvas to read the image');
  ctx.drawImage(source, 0, 0);
  const data = ctx.getImageData(0, 0, width, height);
  return { type: 'rgba', rgba: new Uint8Array(data.data.buffer), width, height };
}

async function toPayload(image: ImageInput): Promise<Payload> {
  if (typeof image === 'string') {
    const resp = await fetch(image);
    if (!resp.ok) throw new Error(`cannot fetch ${image}: HTTP ${resp.status}`);
    return { type: 'encoded', bytes: new Uint8Array(await resp.arrayBuffer()) };
  }
  if (typeof Blob !== 'undefined' && image instanceof Blob) {
    // Decoded inside the module, which reads the size from the header before allocating.
    return { type: 'encoded', bytes: new Uint8Array(await image.arrayBuffer()) };
  }
  if (typeof ImageData !== 'undefined' && image instanceof ImageData) {
    return { type: 'rgba', rgba: new Uint8Array(image.data.slice().buffer), width: image.width, height: image.height };
  }
  if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement) {
    if (!image.complete || image.naturalWidth === 0) throw new Error('the image element has not loaded an image');
    return rgbaOf(image, image.naturalWidth, image.naturalHeight);
  }
  if (typeof ImageBitmap !== 'undefined' && image instanceof ImageBitmap) return rgbaOf(image, image.width, image.height);
  if (typeof HTMLCanvasElement !== 'undefined' && image instanceof HTMLCanvasElement) {
    return rgbaOf(image, image.width, image.height);
  }
  if (typeof OffscreenCanvas !== 'undefined' && image instanceof OffscreenCanvas) {
    return rgbaOf(image, image.width, image.height);
  }
  throw new Error('detect() takes an image element, canvas, ImageBitmap, ImageData, Blob, File or URL');
}
