// Messages between the page-side Detector and the inference worker.

import type { ErrorCode } from './errors.js';
/**
 * Where to run: WebGPU, the CPU, or `auto` (WebGPU when the browser offers a hardware
 * adapter; a software one, such as Chromium's SwiftShader, is slower than the CPU and is
 * declined: `detector.backendReason` says why).
 * @example
 * const detector = await createDetector({ weights: url, backend: 'auto' });
 */
export type BackendChoice = 'webgpu' | 'cpu' | 'auto';

/**
 * Where one detect's time went, in milliseconds.
 *
 * @example
 * const { timings } = await detector.detect(file);
 * console.log(`model ${timings.forwardMs.toFixed(0)} ms of ${timings.totalMs.toFixed(0)}`);
 */
export interface Timings {
  preprocessMs: number;
  forwardMs: number;
  postprocessMs: number;
  totalMs: number;
}

/**
 * One image's result.
 *
 * @example
 * const { score, isAnomalous, map, width, height } = await detector.detect(file);
 */
export interface DetectionResult {
  /** Fused image score: w · global probability + (1 − w) · map maximum, w from the bundle. */
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

/**
 * How an image of a mutual batch was scored (`detect(images, { mutual: true })`).
 * @example
 * const results = await detector.detect(files, { mutual: true });
 * for (const r of results) if (!(r instanceof Error)) console.log(r.mutual.scoredAs, r.mutual.groupSize);
 */
export interface GroupInfo {
  /** `mutual`, or `alone` (the detector's own map) when its group had fewer than 3 readable images. */
  scoredAs: 'mutual' | 'alone';
  /** How many images were scored together. */
  groupSize: number;
  /** Why the image was scored alone, or null. */
  fallback: string | null;
}

/**
 * One image's result in a mutual batch: the result, how it was scored, and which group
 * of the call (from 1) it was in.
 * @example
 * const [first] = await detector.detect(files, { mutual: true });
 */
export type GroupResult = DetectionResult & { mutual: GroupInfo; group: number };

/**
 * How far a load or a reference build has got, in bytes (or images, for `reference`).
 * @example
 * const detector = await createDetector({
 *   weights: url,
 *   onProgress: (p) => p.total && (bar.value = p.loaded / p.total),
 * });
 */
export interface Progress {
  /**
   * `manifest`, `weights` (downloading or reading the cache), `start` (building the model),
   * `reference` (reading known-good images, then building their memory), or `images`
   * (a mutual batch: images read and added to their group).
   */
  phase: 'manifest' | 'weights' | 'start' | 'reference' | 'images';
  loaded: number;
  total: number;
  /** Whether the weights came from Cache Storage. */
  cached: boolean;
}

/** One image for the engine: an encoded file, or RGBA pixels. */
export type Payload =
  | { type: 'encoded'; bytes: Uint8Array }
  | { type: 'rgba'; rgba: Uint8Array; width: number; height: number };

/** What the engine gets for each reference image or image of a group: the file's bytes or the pixels. */
export type ReferenceItem = Uint8Array | { rgba: Uint8Array; width: number; height: number };

/**
 * The reference memory in force (few-shot mode).
 * @example
 * const info = await detector.setReference(goodFiles);
 * console.log(`${info.count} images, ${info.skipped.length} skipped`);
 */
export interface ReferenceInfo {
  /** Reference images in the memory. */
  count: number;
  /** Their names. */
  names: string[];
  /** The memory's size in bytes. */
  bytes: number;
  /** Tokens kept per tap. */
  rows: number[];
  /** λ: the few-shot map's weight in the fused map. */
  weight: number;
  /** Images that could not be read, with why (only from `setReference`). */
  skipped: SkippedImage[];
}

/** A reference image that could not be read, and why. */
export interface SkippedImage {
  name: string;
  error: string;
}

/**
 * What calibration chose and the statistics of the normal images' scores it came from:
 * `threshold = max(meanPlus3Std, max + 1e-4)` (population standard deviation).
 * @example
 * const { threshold, mean, std, max } = await detector.calibrate(goodImages);
 */
export interface CalibrationStats {
  threshold: number;
  /** How many scores it used. */
  images: number;
  mean: number;
  std: number;
  max: number;
  /** mean + 3·std, the rule's first candidate. */
  meanPlus3Std: number;
}

/** What each request carries besides its `type` and `id`. */
interface Bodies {
  load: {
    manifestUrl: string;
    backend: BackendChoice;
    stats: boolean;
    wasmUrl?: string;
    wasmThreadsUrl?: string;
    /** The most CPU threads to use (undefined: every core). */
    threads?: number;
    /** The BroadcastChannel on which a pool thread reports a trap (worker engines only). */
    poolChannel?: string;
  };
  encoded: { bytes: Uint8Array };
  rgba: { rgba: Uint8Array; width: number; height: number };
  threshold: { value: number };
  calibrate: { scores: number[] };
  reference: { items: ReferenceItem[]; names: string[]; weight: number };
  group: { items: ReferenceItem[]; weight: number; group: number };
  referenceInfo: object;
  clearReference: object;
  exportReference: object;
  importReference: { bytes: Uint8Array; weight: number };
  fewShotWeight: { value: number };
  panic: { where?: 'pool' };
  stats: object;
}

/** What the `ok` reply to each request carries. */
export interface Values {
  load: Ready;
  encoded: DetectionResult;
  rgba: DetectionResult;
  threshold: null;
  calibrate: CalibrationStats;
  reference: ReferenceInfo;
  group: GroupEntry[];
  referenceInfo: ReferenceInfo | null;
  clearReference: null;
  exportReference: Uint8Array;
  importReference: ReferenceInfo;
  fewShotWeight: null;
  panic: null;
  stats: Stats;
}

export type Kind = keyof Bodies & keyof Values;

/** A request without its id (the sender numbers it), one type per kind. */
export type RequestBody = { [K in Kind]: { type: K } & Bodies[K] }[Kind];
export type Request = RequestBody & { id: number };

/** The `ok` reply to a request of kind `K`. */
export type OkOf<K extends Kind> = { id: number; type: 'ok'; kind: K; value: Values[K] };
export type Ok = { [K in Kind]: OkOf<K> }[Kind];

/** Whether `ok` answers a request of kind `kind` (narrows its value's type). */
export function answers<K extends Kind>(ok: Ok, kind: K): ok is Ok & OkOf<K> {
  return ok.kind === kind;
}

/** One image of a `group` request: its result, or why it could not be scored. */
export type GroupEntry =
  | { ok: DetectionResult & { mutual: GroupInfo } }
  | { error: { code: ErrorCode; message: string } };

/**
 * Engine statistics (for tests and diagnostics).
 * @example
 * const { wasmBytes, gpuBuffersLive } = await detector.stats();
 */
export interface Stats {
  /** Size of the wasm linear memory. */
  wasmBytes: number | null;
  /** WebGPU buffers alive now, and made in all. */
  gpuBuffersLive: number;
  gpuBuffersCreated: number;
  /** WebGPU compute dispatches since counting began, in all and by pipeline label (the kernel). */
  gpuDispatches: number;
  gpuDispatchKinds: Record<string, number>;
}

export type Reply =
  | { id: number; type: 'progress'; progress: Progress }
  | Ok
  | { id: number; type: 'error'; message: string; code: ErrorCode; fatal: boolean };

export interface Ready {
  backend: 'webgpu' | 'cpu';
  /**
   * The CPU threads inference runs on: the threaded module's pool size on a cross-origin
   * isolated page, else 1 (the single-threaded module, or WebGPU).
   */
  threads: number;
  /** Why this backend: asked for, or what `auto` found (a software WebGPU adapter is declined). */
  backendReason: string;
  threshold: number;
  notice: string | null;
  name: string;
  mode: 'trained' | 'training-free';
  bundleBytes: number;
  cached: boolean;
}

/** What the engine sends each pool thread (pool.ts) to start it. */
export interface PoolInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  channel: string;
}

/** A pool thread that trapped or could not start, to the engine and the page. */
export interface PoolCrash {
  type: 'pool-crash';
  message: string;
}
