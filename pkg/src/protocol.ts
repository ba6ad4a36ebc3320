// Messages between the page-side Detector and the inference worker.

export type BackendChoice = 'webgpu' | 'cpu' | 'auto';

export interface Progress {
  /**
   * `manifest`, `weights` (downloading or reading the cache), `start` (building the model),
   * or `reference` (reading known-good images, then building their memory).
   */
  phase: 'manifest' | 'weights' | 'start' | 'reference';
  loaded: number;
  total: number;
  /** Whether the weights came from Cache Storage. */
  cached: boolean;
}

/** One image for the engine: an encoded file, or RGBA pixels. */
export type Payload =
  | { type: 'encoded'; bytes: Uint8Array }
  | { type: 'rgba'; rgba: Uint8Array; width: number; height: number };

/** What the engine sends for each reference image: the file's bytes or the pixels. */
export type ReferenceItem = Uint8Array | { rgba: Uint8Array; width: number; height: number };

/** The reference memory in force (few-shot mode). */
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
  skipped: { name: string; error: string }[];
}

export type Request =
  | { id: number; type: 'load'; manifestUrl: string; backend: BackendChoice }
  | { id: number; type: 'encoded'; bytes: Uint8Array }
  | { id: number; type: 'rgba'; rgba: Uint8Array; width: number; height: number }
  | { id: number; type: 'threshold'; value: number }
  | { id: number; type: 'calibrate'; scores: number[] }
  | { id: number; type: 'reference'; items: ReferenceItem[]; names: string[]; weight: number }
  | { id: number; type: 'referenceInfo' }
  | { id: number; type: 'clearReference' }
  | { id: number; type: 'exportReference' }
  | { id: number; type: 'importReference'; bytes: Uint8Array; weight: number }
  | { id: number; type: 'fewShotWeight'; value: number }
  | { id: number; type: 'panic' }
  | { id: number; type: 'stats' };

/** Engine statistics (for tests and diagnostics). */
export interface Stats {
  /** Size of the wasm linear memory. */
  wasmBytes: number | null;
  /** WebGPU buffers alive now, and made in all. */
  gpuBuffersLive: number;
  gpuBuffersCreated: number;
}

/** A request without its id (the sender numbers it). */
export type RequestBody = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export type Reply =
  | { id: number; type: 'progress'; progress: Progress }
  | { id: number; type: 'ok'; value: unknown }
  | { id: number; type: 'error'; message: string; fatal: boolean };

export interface Ready {
  backend: 'webgpu' | 'cpu';
  threshold: number;
  notice: string | null;
  name: string;
  mode: 'trained' | 'training-free';
  bundleBytes: number;
  cached: boolean;
}
