// kanoclip-wasm: KAnoCLIP anomaly detection in the browser. Images are decoded and
// inspected on this device (WebGPU, or the CPU when WebGPU is absent); nothing is sent
// anywhere. Inference runs in a Web Worker by default, one request at a time.

import { inlineTransport, workerTransport } from './transport.js';
import type { Transport } from './transport.js';
import { toPayload } from './inputs.js';
import { overlayBitmap } from './heatmap.js';
import type { DetectOptions, DetectorOptions, ImageInput, MutualDetectOptions, WatchOptions, WatchStats } from './options.js';
import { DEFAULT_GROUP, MAX_GROUP, MIN_GROUP, groupSizes } from './groups.js';
import { CACHE_NAME as CACHE_NAME_LOCAL } from './weights.js';
import { answers } from './protocol.js';
import type {
  BackendChoice,
  CalibrationStats,
  DetectionResult,
  GroupResult,
  Kind,
  Ok,
  Payload,
  Progress,
  Ready,
  ReferenceInfo,
  ReferenceItem,
  Reply,
  Request,
  RequestBody,
  Stats,
  Values,
} from './protocol.js';
import { KanoclipError, toKanoclipError } from './errors.js';
import type { ErrorCode } from './errors.js';

export type {
  BackendChoice,
  CalibrationStats,
  DetectionResult,
  GroupInfo,
  GroupResult,
  Progress,
  ReferenceInfo,
  SkippedImage,
  Stats,
  Timings,
} from './protocol.js';
export type {
  DetectOptions,
  DetectorOptions,
  ImageInput,
  MutualDetectOptions,
  MutualOptions,
  WatchOptions,
  WatchStats,
} from './options.js';
export { DEFAULT_GROUP, groupSizes } from './groups.js';
export { CACHE_NAME } from './weights.js';
export { KanoclipError } from './errors.js';
export type { ErrorCode } from './errors.js';

const err = (code: ErrorCode, message: string) => new KanoclipError(code, message);
const disposed = () => err('DISPOSED', 'the detector was disposed');
const aborted = () => err('ABORTED', 'the call was aborted');

/** `p`, or an `ABORTED` rejection as soon as `signal` aborts (the work itself is dropped). */
function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(aborted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(aborted());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

type Pending = {
  /** Settles the request's promise with the reply's value, if it answers that request. */
  accept: (ok: Ok) => void;
  reject: (e: Error) => void;
  onProgress?: (p: Progress) => void;
};

const DEBUG_PANIC: unique symbol = Symbol.for('kanoclip.debugPanic') as typeof DEBUG_PANIC;

/**
 * A loaded model: inspects images, one call at a time. Made by `createDetector`.
 *
 * @example
 * const detector = await createDetector({ weights: '/model/manifest.json' });
 * const result = await detector.detect(file);
 * detector.dispose();
 */
export class Detector {
  #transport!: Transport;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #needsRestart = false;
  #options: Required<Pick<DetectorOptions, 'backend' | 'worker' | 'stats'>> & {
    manifestUrl: string;
    workerUrl?: string;
    wasmUrl?: string;
    wasmThreadsUrl?: string;
    threads?: number;
  };
  #ready!: Ready;
  #threshold = 0.5;
  /** A threshold set by the user, kept across restarts. */
  #override: number | null = null;
  /** The reference memory in force (its file's bytes and λ), restored after a restart. */
  #memory: { bytes: Uint8Array; weight: number } | null = null;
  #reference: ReferenceInfo | null = null;
  /** The `watch` loops running, each by its stop function. */
  #watchers = new Set<() => void>();

  private constructor(options: DetectorOptions) {
    this.#options = {
      backend: options.backend ?? 'auto',
      worker: options.worker ?? true,
      stats: options.stats ?? false,
      workerUrl: options.workerUrl === undefined ? undefined : String(options.workerUrl),
      wasmUrl:
        options.wasmUrl === undefined ? undefined : new URL(String(options.wasmUrl), globalThis.location?.href).href,
      wasmThreadsUrl:
        options.wasmThreadsUrl === undefined
          ? undefined
          : new URL(String(options.wasmThreadsUrl), globalThis.location?.href).href,
      threads: options.threads,
      manifestUrl: new URL(String(options.weights), globalThis.location?.href).href,
    };
  }

  /**
   * Download (or read from Cache Storage), verify and start the model. The same as
   * `createDetector`.
   * @example
   * const detector = await Detector.create({ weights: '/model/manifest.json', backend: 'cpu' });
   */
  static async create(options: DetectorOptions): Promise<Detector> {
    const backend = options.backend ?? 'auto';
    if (!['webgpu', 'cpu', 'auto'].includes(backend)) {
      throw err('INVALID_ARGUMENT', `backend must be 'webgpu', 'cpu' or 'auto', not ${JSON.stringify(backend)}`);
    }
    const { threads } = options;
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 256)) {
      throw err('INVALID_ARGUMENT', `threads must be a whole number from 1 to 256, not ${JSON.stringify(threads)}`);
    }
    const d = new Detector(options);
    const { signal } = options;
    if (signal?.aborted) throw aborted();
    const stop = () => d.dispose();
    signal?.addEventListener('abort', stop, { once: true });
    try {
      await abortable(d.#start(options.onProgress), signal);
    } catch (e) {
      d.dispose();
      throw signal?.aborted ? aborted() : toKanoclipError(e);
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    return d;
  }

  /**
   * `webgpu` or `cpu`: where inference runs.
   * @example
   * if (detector.backend === 'cpu') console.info('no WebGPU here: running on the CPU');
   */
  get backend(): 'webgpu' | 'cpu' {
    return this.#ready.backend;
  }
  /**
   * Why `backend` is what it is: asked for, or what `auto` found (it declines a software
   * WebGPU adapter, which is slower than the CPU path).
   * @example
   * console.info(`running on ${detector.backend}: ${detector.backendReason}`);
   */
  get backendReason(): string {
    return this.#ready.backendReason;
  }
  /**
   * The CPU threads inference runs on: on the CPU path of a cross-origin isolated page,
   * the threaded module's pool (every core, or `threads` at most); else 1.
   * @example
   * console.info(`${detector.backend}, ${detector.threads} thread(s)`);
   */
  get threads(): number {
    return this.#ready.threads;
  }
  /**
   * The decision threshold in force: the bundle's, or the last `setThreshold`/`calibrate`.
   * @example
   * slider.value = String(detector.threshold);
   */
  get threshold(): number {
    return this.#threshold;
  }
  /**
   * The bundle's notice (for instance that its model is an untrained test model), or null.
   * @example
   * if (detector.notice) banner.textContent = detector.notice;
   */
  get notice(): string | null {
    return this.#ready.notice;
  }
  /**
   * Model name, mode, bundle size and whether the weights came from the cache.
   * @example
   * const { name, mode, bundleBytes, cached } = detector.info;
   */
  get info(): Readonly<Ready> {
    return this.#ready;
  }

  async #start(onProgress?: (p: Progress) => void): Promise<void> {
    const onReply = (r: Reply) => this.#onReply(r);
    const onCrash = (m: string) => this.#crash(m);
    this.#transport = this.#options.worker
      ? workerTransport(onReply, onCrash, this.#options.workerUrl)
      : inlineTransport(onReply);
    this.#ready = await this.#request(
      {
        type: 'load',
        manifestUrl: this.#options.manifestUrl,
        backend: this.#options.backend,
        stats: this.#options.stats,
        wasmUrl: this.#options.wasmUrl,
        wasmThreadsUrl: this.#options.wasmThreadsUrl,
        threads: this.#options.threads,
        poolChannel: this.#transport.poolChannel,
      },
      [],
      onProgress,
    );
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
    if (r.type === 'ok') p.accept(r);
    else {
      if (r.fatal) this.#needsRestart = true;
      p.reject(err(r.code, r.message));
    }
  }

  #crash(m: string): void {
    this.#needsRestart = true;
    for (const [, p] of this.#pending) p.reject(err('INTERNAL', m));
    this.#pending.clear();
  }

  #request<K extends Kind>(
    body: RequestBody & { type: K },
    transfer: Transferable[],
    onProgress?: (p: Progress) => void,
  ): Promise<Values[K]> {
    if (this.#disposed) return Promise.reject(disposed());
    const id = this.#nextId++;
    const req: Request = { ...body, id };
    return new Promise((resolve, reject) => {
      const accept = (ok: Ok) =>
        answers(ok, body.type)
          ? resolve(ok.value)
          : reject(err('INTERNAL', `the engine answered a '${body.type}' request with a '${ok.kind}' reply`));
      this.#pending.set(id, { accept, reject, onProgress });
      this.#transport.send(req, transfer);
    });
  }

  /** Run `job` after every earlier call, restarting the engine first if it stopped. */
  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = async () => {
      if (this.#disposed) throw disposed();
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

  /**
   * Inspect one image. Calls are queued: concurrent calls run one after another. Pixel
   * sources (canvas, image element, bitmap, ImageData) are copied when called, so a later
   * change to them does not change the result; files, blobs and URLs are read only when
   * their turn comes, so many queued calls do not hold many images in memory.
   * @example
   * const one = await detector.detect(file);
   * const many = await detector.detect([a, b, c], { signal: AbortSignal.timeout(30_000) });
   */
  async detect(images: ImageInput[], options: MutualDetectOptions): Promise<(GroupResult | KanoclipError)[]>;
  async detect(image: ImageInput, options?: DetectOptions): Promise<DetectionResult>;
  async detect(images: ImageInput[], options?: DetectOptions): Promise<DetectionResult[]>;
  async detect(
    image: ImageInput | ImageInput[],
    options: DetectOptions | MutualDetectOptions = {},
  ): Promise<DetectionResult | DetectionResult[] | (GroupResult | KanoclipError)[]> {
    const { signal } = options;
    if ('mutual' in options && options.mutual) {
      if (!Array.isArray(image)) throw err('INVALID_ARGUMENT', 'mutual scoring takes an array of images');
      return this.#detectMutual(image, options);
    }
    if (Array.isArray(image)) return Promise.all(image.map((i) => this.detect(i, { signal })));
    if (this.#disposed) throw disposed();
    if (signal?.aborted) throw aborted();
    const deferred = typeof image === 'string' || (typeof Blob !== 'undefined' && image instanceof Blob);
    const snapshot = deferred ? null : await toPayload(image);
    const job = this.#enqueue(async () => {
      if (signal?.aborted) throw aborted();
      const payload = snapshot ?? (await toPayload(image));
      return this.#request(payload, payload.type === 'encoded' ? [payload.bytes.buffer] : [payload.rgba.buffer]);
    });
    return abortable(job, signal);
  }

  /**
   * A mutual batch (spec §11): the images in even groups of at most `group`, each group
   * one request, its images read only when its turn comes (pixel sources are copied when
   * called, as `detect` does). An image that cannot be read or scored takes its place in
   * the result as a `KanoclipError`, and its group goes on without it; a group left with
   * fewer than 3 images is scored alone (`mutual.scoredAs === 'alone'`).
   */
  async #detectMutual(images: ImageInput[], options: MutualDetectOptions): Promise<(GroupResult | KanoclipError)[]> {
    const { signal, onProgress } = options;
    const settings = options.mutual === true ? {} : options.mutual;
    const weight = settings.weight ?? 1;
    const group = settings.group ?? DEFAULT_GROUP;
    if (!(weight >= 0 && weight <= 1)) throw err('INVALID_ARGUMENT', `the mutual weight ${weight} is not in [0, 1]`);
    if (!(Number.isInteger(group) && group >= MIN_GROUP && group <= MAX_GROUP)) {
      throw err('INVALID_ARGUMENT', `the mutual group size ${group} is not a whole number in ${MIN_GROUP}..=${MAX_GROUP}`);
    }
    if (this.#disposed) throw disposed();
    if (signal?.aborted) throw aborted();
    const deferred = (i: ImageInput) => typeof i === 'string' || (typeof Blob !== 'undefined' && i instanceof Blob);
    // Pixel sources now, as `detect` copies them; files and URLs when their group's turn comes.
    const snapshots = await Promise.all(
      images.map(async (i) => (deferred(i) ? null : toPayload(i).catch((e: unknown) => toKanoclipError(e)))),
    );
    const out: (GroupResult | KanoclipError)[] = [];
    let start = 0;
    for (const [g, n] of groupSizes(images.length, group).entries()) {
      const first = start;
      start += n;
      const job = this.#enqueue(async () => {
        if (signal?.aborted) throw aborted();
        const results: (GroupResult | KanoclipError)[] = new Array(n);
        const items: ReferenceItem[] = [];
        const slots: number[] = [];
        for (let i = 0; i < n; i++) {
          let p: Payload | KanoclipError | null = snapshots[first + i];
          snapshots[first + i] = null;
          if (p === null) p = await toPayload(images[first + i]).catch((e: unknown) => toKanoclipError(e));
          if (p instanceof KanoclipError) results[i] = p;
          else {
            items.push(p.type === 'encoded' ? p.bytes : { rgba: p.rgba, width: p.width, height: p.height });
            slots.push(i);
          }
        }
        const unread = n - items.length;
        const progress = (p: Progress) =>
          onProgress?.({ phase: 'images', loaded: first + unread + p.loaded, total: images.length, cached: false });
        progress({ phase: 'images', loaded: 0, total: n, cached: false });
        if (items.length > 0) {
          const transfer = items.map((it) => (it instanceof Uint8Array ? it.buffer : it.rgba.buffer));
          const entries = await this.#request({ type: 'group', items, weight, group }, transfer, progress);
          entries.forEach((e, k) => {
            results[slots[k]] = 'ok' in e ? { ...e.ok, group: g + 1 } : err(e.error.code, e.error.message);
          });
        }
        return results;
      });
      out.push(...(await abortable(job, signal)));
    }
    return out;
  }

  /**
   * Inspect a playing video (a camera) continuously: always the latest frame, never a
   * queue. While an inspection runs, new frames are skipped (counted in `dropped`); the
   * next inspection takes the frame on screen when it starts. The loop stops on
   * `stop()`, on `signal` and on `dispose()`. `onResult` gets each result with the
   * loop's figures.
   * @example
   * const live = detector.watch(video, (result, { fps }) => render(result, fps), { signal });
   * // later
   * live.stop();
   */
  watch(
    video: HTMLVideoElement,
    onResult: (result: DetectionResult, stats: WatchStats) => void,
    { fps = Infinity, signal, onError }: WatchOptions = {},
  ): { stop: () => void; readonly stats: WatchStats } {
    if (this.#disposed) throw disposed();
    if (typeof HTMLVideoElement === 'undefined' || !(video instanceof HTMLVideoElement)) {
      throw err('INVALID_ARGUMENT', 'watch() takes a video element');
    }
    if (!(fps > 0)) throw err('INVALID_ARGUMENT', `fps ${fps} is not a positive number`);
    const stats: WatchStats = { inspected: 0, dropped: 0, fps: 0, running: true };
    const gap = 1000 / fps;
    const recent: number[] = [];
    const abort = new AbortController();
    let busy = false;
    let last = -Infinity;
    type FrameVideo = HTMLVideoElement & { requestVideoFrameCallback?: (cb: () => void) => number };
    const v = video as FrameVideo;
    const next = () => {
      if (!stats.running) return;
      if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(frame);
      else requestAnimationFrame(frame);
    };
    const frame = () => {
      if (!stats.running) return;
      next();
      const now = performance.now();
      if (busy) {
        stats.dropped++;
        return;
      }
      if (now - last < gap || video.readyState < 2) return;
      busy = true;
      last = now;
      this.detect(video, { signal: abort.signal }).then(
        (result) => {
          recent.push(performance.now());
          if (recent.length > 10) recent.shift();
          stats.inspected++;
          stats.fps = recent.length > 1 ? ((recent.length - 1) * 1000) / (recent[recent.length - 1] - recent[0]) : 0;
          if (stats.running) onResult(result, { ...stats });
        },
        (e: unknown) => {
          const k = toKanoclipError(e);
          if (k.code === 'DISPOSED') stop();
          else if (stats.running && k.code !== 'ABORTED') onError?.(k);
        },
      ).finally(() => {
        busy = false;
      });
    };
    const stop = () => {
      if (!stats.running) return;
      stats.running = false;
      abort.abort();
      signal?.removeEventListener('abort', stop);
      this.#watchers.delete(stop);
    };
    if (signal?.aborted) stats.running = false;
    else {
      signal?.addEventListener('abort', stop, { once: true });
      this.#watchers.add(stop);
      next();
    }
    return { stop, get stats() { return { ...stats }; } };
  }

  /**
   * Run one detect on a blank image, so that the first real one does not pay for shader
   * compilation and memory pools.
   *
   * @example
   * const detector = await createDetector({ weights: 'model/manifest.json' });
   * await detector.warmup();
   */
  async warmup(): Promise<void> {
    const size = 224;
    await this.detect(new ImageData(new Uint8ClampedArray(size * size * 4).fill(128), size, size));
  }

  /**
   * Delete every cached bundle (Cache Storage `kanoclip-weights-v1`); the next load
   * downloads again. This detector keeps working.
   * @example
   * await Detector.clearCache(); // for instance from a "free disk space" button
   */
  static async clearCache(): Promise<boolean> {
    return typeof caches === 'undefined' ? false : caches.delete(CACHE_NAME_LOCAL);
  }

  /**
   * The map as a TURBO-coloured overlay with the given opacity (0–1), at the image's size.
   * @example
   * const overlay = await detector.heatmap(await detector.detect(img), 0.5);
   * canvas.getContext('2d').drawImage(img, 0, 0);
   * canvas.getContext('2d').drawImage(overlay, 0, 0);
   */
  async heatmap(result: DetectionResult, opacity = 0.5): Promise<ImageBitmap> {
    if (!(opacity >= 0 && opacity <= 1)) throw err('INVALID_ARGUMENT', 'opacity must be between 0 and 1');
    const { width, height, map } = result;
    if (map.length !== width * height) throw err('INVALID_ARGUMENT', 'the result has no map of its size');
    return overlayBitmap(map, width, height, opacity);
  }

  /**
   * Set the decision threshold used from now on.
   * @example
   * await detector.setThreshold(0.6);
   */
  async setThreshold(t: number): Promise<void> {
    if (typeof t !== 'number' || !Number.isFinite(t)) throw err('INVALID_ARGUMENT', `threshold ${t} is not a finite number`);
    await this.#enqueue(() => this.#request({ type: 'threshold', value: t }, []));
    this.#override = t;
    this.#threshold = t;
  }

  /**
   * Set the threshold from images known to be normal: max(mean + 3·std, max + 1e-4) of their
   * scores (population std). Returns the threshold with the statistics it came from, and
   * the scores. An image that cannot be
   * read (`BAD_IMAGE`, `IMAGE_TOO_LARGE`) is named in `skipped`, by its index in
   * `normalImages`, and left out; none readable rejects with `BAD_IMAGE`.
   * @example
   * const { threshold, skipped } = await detector.calibrate([good1, good2, good3]);
   */
  async calibrate(
    normalImages: ImageInput[],
  ): Promise<CalibrationStats & { scores: number[]; skipped: { index: number; error: string }[] }> {
    if (!Array.isArray(normalImages) || normalImages.length === 0) {
      throw err('INVALID_ARGUMENT', 'calibration needs at least one normal image');
    }
    const scores: number[] = [];
    const skipped: { index: number; error: string }[] = [];
    for (const [index, img] of normalImages.entries()) {
      try {
        scores.push((await this.detect(img)).score);
      } catch (e) {
        const k = toKanoclipError(e);
        if (k.code !== 'BAD_IMAGE' && k.code !== 'IMAGE_TOO_LARGE') throw k;
        skipped.push({ index, error: k.message });
      }
    }
    if (scores.length === 0) throw err('BAD_IMAGE', `none of the ${normalImages.length} calibration images could be read`);
    const stats = await this.#enqueue(() => this.#request({ type: 'calibrate', scores }, []));
    await this.setThreshold(stats.threshold);
    return { ...stats, scores, skipped };
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
   * @example
   * const info = await detector.setReference([good1, good2, good3, good4], { weight: 0.5 });
   */
  async setReference(
    images: ImageInput[],
    options: { weight?: number; names?: string[]; onProgress?: (p: Progress) => void } = {},
  ): Promise<ReferenceInfo> {
    if (!Array.isArray(images) || images.length === 0) {
      throw err('INVALID_ARGUMENT', 'setReference needs at least one known-good image');
    }
    const weight = options.weight ?? 0.5;
    if (!(weight >= 0 && weight <= 1)) throw err('INVALID_ARGUMENT', `the few-shot weight ${weight} is not in [0, 1]`);
    const names = options.names ?? images.map((img, i) => (img instanceof File ? img.name : `reference ${i + 1}`));
    if (names.length !== images.length) throw err('INVALID_ARGUMENT', 'one name per reference image');
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
    ));
    info.skipped = [...unreadable, ...info.skipped];
    options.onProgress?.({ phase: 'reference', loaded: total, total, cached: false });
    await this.#keepMemory(weight);
    this.#reference = info;
    return info;
  }

  /**
   * The reference memory in force (count, names, bytes, λ), or null in zero-shot mode.
   * @example
   * status.textContent = detector.reference ? `${detector.reference.count} known-good images` : 'zero-shot';
   */
  get reference(): ReferenceInfo | null {
    return this.#reference;
  }

  /**
   * Back to zero-shot detection.
   * @example
   * await detector.clearReference();
   */
  async clearReference(): Promise<void> {
    await this.#enqueue(() => this.#request({ type: 'clearReference' }, []));
    this.#memory = null;
    this.#reference = null;
  }

  /**
   * λ of the memory in force, in [0, 1]: the few-shot map's weight in the fused map.
   * @example
   * await detector.setFewShotWeight(0.7);
   */
  async setFewShotWeight(weight: number): Promise<void> {
    if (!(weight >= 0 && weight <= 1)) throw err('INVALID_ARGUMENT', `the few-shot weight ${weight} is not in [0, 1]`);
    await this.#enqueue(() => this.#request({ type: 'fewShotWeight', value: weight }, []));
    if (this.#memory) this.#memory.weight = weight;
    if (this.#reference) this.#reference = { ...this.#reference, weight };
  }

  /**
   * The memory in force as bytes (a `kanoclip reference build` memory file), for an app
   * to keep, for instance in IndexedDB, and give back to `importReference`.
   * @example
   * const bytes = await detector.exportReference(); // keep it, e.g. in IndexedDB
   * await detector.importReference(bytes);
   */
  async exportReference(): Promise<Uint8Array> {
    if (!this.#memory) throw err('INVALID_ARGUMENT', 'there is no reference memory to export');
    return this.#memory.bytes.slice();
  }

  /**
   * Use memory bytes from `exportReference` or `kanoclip reference build`.
   * @example
   * const bytes = new Uint8Array(await (await fetch('/memory.bin')).arrayBuffer());
   * await detector.importReference(bytes, { weight: 0.5 });
   */
  async importReference(bytes: Uint8Array, options: { weight?: number } = {}): Promise<ReferenceInfo> {
    const weight = options.weight ?? 0.5;
    if (!(bytes instanceof Uint8Array)) throw err('INVALID_ARGUMENT', 'importReference takes a Uint8Array');
    const copy = bytes.slice();
    const info = (await this.#enqueue(() =>
      this.#request({ type: 'importReference', bytes: copy, weight }, [copy.buffer]),
    ));
    await this.#keepMemory(weight);
    this.#reference = info;
    return info;
  }

  /** Keep the engine's memory bytes on the page, so a restarted engine gets it back. */
  async #keepMemory(weight: number): Promise<void> {
    const bytes = await this.#enqueue(() => this.#request({ type: 'exportReference' }, []));
    this.#memory = { bytes, weight };
  }

  /**
   * Stop the worker and free the model. Pending and later calls reject.
   * @example
   * detector.dispose();
   */
  dispose(): void {
    if (this.#disposed) return;
    for (const stop of [...this.#watchers]) stop();
    this.#disposed = true;
    this.#transport?.terminate();
    for (const [, p] of this.#pending) p.reject(disposed());
    this.#pending.clear();
  }

  /**
   * Memory and GPU-buffer figures of the engine (wasm memory size, live WebGPU buffers).
   * @example
   * const { wasmBytes, gpuBuffersLive } = await detector.stats();
   */
  async stats(): Promise<Stats> {
    return this.#enqueue(() => this.#request({ type: 'stats' }, []));
  }

  /**
   * For the package's own tests: make the wasm module panic (the next call restarts it), on
   * the engine's thread or, with `'pool'`, on one of the threaded module's pool threads.
   * Not part of the API: reached through `Symbol.for('kanoclip.debugPanic')`.
   */
  async [DEBUG_PANIC](where?: 'pool'): Promise<void> {
    await this.#enqueue(() => this.#request({ type: 'panic', where }, []));
  }
}

/**
 * @example
 * import { createDetector } from 'kanoclip-wasm';
 * const detector = await createDetector({ weights: '/model/manifest.json' });
 * const result = await detector.detect(file);
 */
export function createDetector(options: DetectorOptions): Promise<Detector> {
  return Detector.create(options);
}
