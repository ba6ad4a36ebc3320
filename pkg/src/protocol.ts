// Messages between the page-side Detector and the inference worker.

export type BackendChoice = 'webgpu' | 'cpu' | 'auto';

export interface Progress {
  /** `manifest`, `weights` (downloading or reading the cache) or `start` (building the model). */
  phase: 'manifest' | 'weights' | 'start';
  loaded: number;
  total: number;
  /** Whether the weights came from Cache Storage. */
  cached: boolean;
}

export type Request =
  | { id: number; type: 'load'; manifestUrl: string; backend: BackendChoice }
  | { id: number; type: 'encoded'; bytes: Uint8Array }
  | { id: number; type: 'rgba'; rgba: Uint8Array; width: number; height: number }
  | { id: number; type: 'threshold'; value: number }
  | { id: number; type: 'calibrate'; scores: number[] }
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
