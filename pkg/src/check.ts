// Checks at the wasm boundary: the module's exports return plain JavaScript objects typed
// `any`. These read them field by field into the package's types, so a mismatch between
// the module and this code is an INTERNAL error naming the field, not a wrong value later.

import type { CalibrationStats, DetectionResult, GroupInfo, ReferenceInfo, Timings } from './protocol.js';
import { KanoclipError } from './errors.js';

function bad(what: string): KanoclipError {
  return new KanoclipError('INTERNAL', `the wasm module returned no valid ${what}`);
}

function get(o: unknown, key: string): unknown {
  return typeof o === 'object' && o !== null ? Reflect.get(o, key) : undefined;
}

function num(o: unknown, key: string): number {
  const v = get(o, key);
  if (typeof v !== 'number') throw bad(key);
  return v;
}

function str(o: unknown, key: string): string {
  const v = get(o, key);
  if (typeof v !== 'string') throw bad(key);
  return v;
}

function list<T>(o: unknown, key: string, item: (v: unknown) => T): T[] {
  const v = get(o, key);
  if (!Array.isArray(v)) throw bad(key);
  return v.map(item);
}

/** `webgpu` or `cpu`. */
export function backendOf(v: unknown): 'webgpu' | 'cpu' {
  if (v === 'webgpu' || v === 'cpu') return v;
  throw bad('backend');
}

function timingsOf(o: unknown): Timings {
  return {
    preprocessMs: num(o, 'preprocessMs'),
    forwardMs: num(o, 'forwardMs'),
    postprocessMs: num(o, 'postprocessMs'),
    totalMs: num(o, 'totalMs'),
  };
}

/** A detect's result. */
export function detectionOf(o: unknown): DetectionResult {
  const map = get(o, 'map');
  const isAnomalous = get(o, 'isAnomalous');
  if (!(map instanceof Float32Array)) throw bad('map');
  if (typeof isAnomalous !== 'boolean') throw bad('isAnomalous');
  const r: DetectionResult = {
    score: num(o, 'score'),
    isAnomalous,
    threshold: num(o, 'threshold'),
    globalProbability: num(o, 'globalProbability'),
    map,
    width: num(o, 'width'),
    height: num(o, 'height'),
    backend: backendOf(get(o, 'backend')),
    timings: timingsOf(get(o, 'timings')),
  };
  if (map.length !== r.width * r.height) throw bad('map of the result size');
  return r;
}

/** The reference memory in force, or null. */
export function referenceInfoOf(o: unknown): ReferenceInfo | null {
  if (o === null || o === undefined) return null;
  return {
    count: num(o, 'count'),
    names: list(o, 'names', (v) => {
      if (typeof v !== 'string') throw bad('names');
      return v;
    }),
    bytes: num(o, 'bytes'),
    rows: list(o, 'rows', (v) => {
      if (typeof v !== 'number') throw bad('rows');
      return v;
    }),
    weight: num(o, 'weight'),
    skipped: list(o, 'skipped', (s) => ({ name: str(s, 'name'), error: str(s, 'error') })),
  };
}

/** The reference memory just built (never null). */
export function builtReferenceOf(o: unknown): ReferenceInfo {
  const info = referenceInfoOf(o);
  if (!info) throw bad('reference memory');
  return info;
}

/** A calibration's threshold and statistics. */
export function calibrationOf(o: unknown): CalibrationStats {
  return {
    threshold: num(o, 'threshold'),
    images: num(o, 'images'),
    mean: num(o, 'mean'),
    std: num(o, 'std'),
    max: num(o, 'max'),
    meanPlus3Std: num(o, 'meanPlus3Std'),
  };
}

/** A mutual batch's result: the detection and how it was scored. */
export function groupResultOf(o: unknown): DetectionResult & { mutual: GroupInfo } {
  const info = get(o, 'mutual');
  const scoredAs = get(info, 'scoredAs');
  if (scoredAs !== 'mutual' && scoredAs !== 'alone') throw bad('mutual.scoredAs');
  const fallback = get(info, 'fallback') ?? null;
  if (fallback !== null && typeof fallback !== 'string') throw bad('mutual.fallback');
  return { ...detectionOf(o), mutual: { scoredAs, groupSize: num(info, 'groupSize'), fallback } };
}
