// Typed errors: every rejection of the package is a `KanoclipError` with a `code`.

/**
 * What went wrong, as a stable code to branch on.
 * @example
 * const retry = (e: KanoclipError) => e.code === 'NETWORK';
 */
export type ErrorCode =
  | 'WEBGPU_UNAVAILABLE'
  | 'NETWORK'
  | 'INTEGRITY'
  | 'BAD_IMAGE'
  | 'IMAGE_TOO_LARGE'
  | 'DISPOSED'
  | 'ABORTED'
  | 'MODEL_INCOMPATIBLE'
  | 'INVALID_ARGUMENT'
  | 'INTERNAL';

/**
 * The error every call of the package rejects with.
 *
 * @example
 * try {
 *   await detector.detect(file);
 * } catch (e) {
 *   if (e instanceof KanoclipError && e.code === 'BAD_IMAGE') showNotAnImage(e.message);
 *   else throw e;
 * }
 */
export class KanoclipError extends Error {
  /** The stable code. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message.startsWith('kanoclip: ') ? message : `kanoclip: ${message}`);
    this.name = 'KanoclipError';
    this.code = code;
  }
}

/**
 * What the wasm module throws or rejects with: one object, built in one place in Rust from
 * `Error::kind` (`src/web/types.rs`, `JsError`; a Rust test checks these fields).
 */
export interface WasmError {
  kind: string;
  message: string;
}

/** The code of each Rust error kind (`ERROR_KINDS` in `src/web/types.rs`: a Rust test checks that this table has exactly those). */
const KINDS: Record<string, ErrorCode> = {
  io: 'NETWORK',
  'in-file': 'INTERNAL',
  json: 'MODEL_INCOMPATIBLE',
  config: 'MODEL_INCOMPATIBLE',
  'weights-format': 'MODEL_INCOMPATIBLE',
  'weights-mismatch': 'MODEL_INCOMPATIBLE',
  knowledge: 'MODEL_INCOMPATIBLE',
  head: 'MODEL_INCOMPATIBLE',
  integrity: 'INTEGRITY',
  incompatible: 'MODEL_INCOMPATIBLE',
  dataset: 'INVALID_ARGUMENT',
  image: 'BAD_IMAGE',
  'truncated-image': 'BAD_IMAGE',
  'image-too-large': 'IMAGE_TOO_LARGE',
  invalid: 'INVALID_ARGUMENT',
  'non-finite': 'MODEL_INCOMPATIBLE',
  'backend-unavailable': 'WEBGPU_UNAVAILABLE',
  backend: 'INTERNAL',
};

/** Whether `e` is an error object from the wasm module. */
export function isWasmError(e: unknown): e is WasmError {
  return (
    typeof e === 'object' && e !== null && typeof Reflect.get(e, 'kind') === 'string' && typeof Reflect.get(e, 'message') === 'string'
  );
}

/** Any thrown value's message. */
export function messageOf(e: unknown): string {
  return e instanceof Error || isWasmError(e) ? e.message : String(e);
}

/** Any thrown value as a `KanoclipError` (an existing one is kept). */
export function toKanoclipError(e: unknown, fallback: ErrorCode = 'INTERNAL'): KanoclipError {
  if (e instanceof KanoclipError) return e;
  if (isWasmError(e)) return new KanoclipError(KINDS[e.kind] ?? 'INTERNAL', e.message);
  return new KanoclipError(fallback, messageOf(e));
}
