// The public options and input types of the package.

import type { BackendChoice, Progress } from './protocol.js';

/**
 * What `detect` takes: an image, canvas, bitmap, pixels, video frame, file or URL.
 *
 * @example
 * const r = await detector.detect(document.querySelector('video')); // a camera's current frame
 */
export type ImageInput =
  | HTMLImageElement
  | HTMLCanvasElement
  | OffscreenCanvas
  | ImageBitmap
  | ImageData
  | HTMLVideoElement
  | VideoFrame
  | Blob
  | File
  | string;

/**
 * Options of `createDetector`.
 *
 * @example
 * const detector = await createDetector({
 *   weights: '/model/manifest.json',
 *   backend: 'auto',
 *   onProgress: (p) => console.log(p.phase, p.loaded, p.total),
 * });
 */
export interface DetectorOptions {
  /** URL of the bundle's `manifest.json` (from `kanoclip convert --to web`). */
  weights: string | URL;
  /**
   * `auto` (default) uses WebGPU on a hardware adapter, else the CPU (a software adapter
   * such as SwiftShader is declined: it is far slower); `webgpu` insists on WebGPU.
   */
  backend?: BackendChoice;
  onProgress?: (p: Progress) => void;
  /** Run inference in a Web Worker (default) or on the calling thread. */
  worker?: boolean;
  /**
   * Count live WebGPU buffers from the start, for `stats()` (a debugging aid: it wraps
   * `GPUDevice.prototype.createBuffer` inside the worker). Off by default; `stats()`
   * starts counting when first called.
   */
  stats?: boolean;
  /** Cancels the download and start-up: `createDetector` then rejects with `ABORTED`. */
  signal?: AbortSignal;
  /**
   * Where the app serves the package's `dist/worker.js` (the subpath export
   * `kanoclip-wasm/worker`), for bundlers that do not emit it themselves (esbuild).
   * Vite and webpack need nothing. A cross-origin URL is started through a `blob:` module.
   */
  workerUrl?: string | URL;
  /**
   * Where the app serves `wasm/kanoclip_bg.wasm` (the subpath export `kanoclip-wasm/wasm`),
   * like onnxruntime-web's `wasmPaths`; by default, next to the worker's files.
   */
  wasmUrl?: string | URL;
  /**
   * Where the app serves `wasm-threads/kanoclip_bg.wasm` (the subpath export
   * `kanoclip-wasm/wasm-threads`), the threaded CPU module; by default, next to the
   * worker's files. If it cannot be fetched, the single-threaded module runs instead.
   */
  wasmThreadsUrl?: string | URL;
  /**
   * The most CPU threads to run on (default: every core, `navigator.hardwareConcurrency`).
   * More than one needs a cross-origin isolated page: served with
   * `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy:
   * require-corp` (or `credentialless`). Elsewhere, and with `worker: false`, inference
   * runs on one thread. `detector.threads` says how many it got.
   */
  threads?: number;
}

/**
 * Options of one `detect` call.
 * @example
 * const result = await detector.detect(file, { signal: AbortSignal.timeout(10_000) });
 */
export interface DetectOptions {
  /** Cancels the call while it waits its turn or runs: it rejects with `ABORTED`. */
  signal?: AbortSignal;
}

/**
 * Mutual scoring of a batch (spec §11): each image scored against the others, no text
 * or references needed. The images should show one product.
 * @example
 * const results = await detector.detect(files, { mutual: { group: 16, weight: 1 } });
 */
export interface MutualOptions {
  /** The most images scored together, 3 to 256 (default 32); larger batches are split evenly. */
  group?: number;
  /** λ in [0, 1]: map = (1 − λ) · zero-shot (or few-shot) + λ · mutual (default 1). */
  weight?: number;
}

/**
 * Options of a mutual batch: `detect(images, { mutual: true })`.
 * @example
 * const results = await detector.detect(files, {
 *   mutual: true,
 *   onProgress: (p) => (bar.value = p.loaded / p.total),
 * });
 */
export interface MutualDetectOptions extends DetectOptions {
  /** `true` for the defaults, or the settings. */
  mutual: true | MutualOptions;
  /** Called as each image is read and added to its group (phase `images`). */
  onProgress?: (p: Progress) => void;
}

/**
 * Options of `watch`.
 * @example
 * const abort = new AbortController();
 * detector.watch(video, (r, s) => draw(r, s.fps), { fps: 10, signal: abort.signal });
 */
export interface WatchOptions {
  /** The most frames per second to inspect (default: as many as the detector keeps up with). */
  fps?: number;
  /** Stops the loop (an inspection under way is dropped). */
  signal?: AbortSignal;
  /** Called with a failed frame's error; the loop goes on (it stops on `DISPOSED`). */
  onError?: (e: Error) => void;
}

/**
 * A running `watch` loop's figures.
 * @example
 * label.textContent = `${stats.fps.toFixed(1)} fps, ${stats.dropped} frames dropped`;
 */
export interface WatchStats {
  /** Frames inspected. */
  inspected: number;
  /** New frames that arrived while an inspection ran, and were skipped. */
  dropped: number;
  /** Inspections per second over the last few. */
  fps: number;
  /** Whether the loop is running. */
  running: boolean;
}
