// Mutual scoring's groups, as the Rust crate forms them (`src/detect/mutual.rs`; a Rust
// test checks that these constants are its own).

/** The most images scored together by default. */
export const DEFAULT_GROUP = 32;
/** The fewest images a group may hold. */
export const MIN_GROUP = 3;
/** The most images a group may hold. */
export const MAX_GROUP = 256;

/** `n` images in groups of at most `group`, as even as possible: 33 with 32 gives 17 + 16. */
export function groupSizes(n: number, group: number): number[] {
  if (n === 0) return [];
  const groups = Math.ceil(n / group);
  return Array.from({ length: groups }, (_, i) => Math.floor(n / groups) + (i < n % groups ? 1 : 0));
}
