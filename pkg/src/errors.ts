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

/** The code of a Rust error kind (`Error::kind`, sent by the wasm module as `[kind] …`). */
const KINDS: Record<string, ErrorCode> = {
  'backend-unavailable': 'WEBGPU_UNAVAILABLE',
  integrity: 'INTEGRITY',
  image: 'BAD_IMAGE',
  'truncated-image': 'BAD_IMAGE',
  'image-too-large': 'IMAGE_TOO_LARGE',
  incompatible: 'MODEL_INCOMPATIBLE',
  config: 'MODEL_INCOMPATIBLE',
  'weights-format': 'MODEL_INCOMPATIBLE',
  'weights-mismatch': 'MODEL_INCOMPATIBLE',
  head: 'MODEL_INCOMPATIBLE',
  knowledge: 'MODEL_INCOMPATIBLE',
  json: 'MODEL_INCOMPATIBLE',
  invalid: 'INVALID_ARGUMENT',
  io: 'NETWORK',
  backend: 'INTERNAL',
};

/** A wasm error's message `[kind] text` as its code and text. */
export function fromWasm(message: string): { code: ErrorCode; message: string } {
  const m = /^\[([a-z-]+)\] ([\s\S]*)$/.exec(message);
  if (!m) return { code: 'INTERNAL', message };
  return { code: KINDS[m[1]] ?? 'INTERNAL', message: m[2] };
}

/** Any thrown value's message. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Any thrown value as a `KanoclipError` (an existing one is kept). */
export function toKanoclipError(e: unknown, fallback: ErrorCode = 'INTERNAL'): KanoclipError {
  if (e instanceof KanoclipError) return e;
  const text = messageOf(e);
  const wasm = fromWasm(text);
  return new KanoclipError(wasm.code === 'INTERNAL' && !text.startsWith('[') ? fallback : wasm.code, wasm.message);
}
