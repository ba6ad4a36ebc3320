//! Greedy coreset selection, as PatchCore (Roth et al., CVPR 2022) reduces its memory bank:
//! repeatedly take the token farthest from everything taken so far (k-centre greedy), in a
//! random projection to at most [`PROJECTION_DIM`] dimensions (Johnson–Lindenstrauss, as
//! PatchCore does, so that the cost is `target × rows × 128`).
//!
//! Hand-written on the host: it is a short loop, no crate offers it, and one pass over the
//! memory per pick would cost a device round trip per pick (a read-back per token chosen).

/// The projection's dimension.
pub const PROJECTION_DIM: usize = 128;

/// The rows of `tokens` (`rows × d`, row-major) kept by greedy k-centre selection, `target`
/// of them (fewer when the rest are exact copies), in increasing order. The projection and the first pick are drawn from `seed`.
pub fn greedy_coreset(tokens: &[f32], d: usize, target: usize, seed: u64) -> Vec<usize> {
    let n = tokens.len().checked_div(d).unwrap_or(0);
    if target >= n {
        return (0..n).collect();
    }
    if target == 0 {
        return Vec::new();
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let (p, x) = if d > PROJECTION_DIM {
        // A dense ±1/√p projection (Achlioptas): distances are kept to within a small factor.
        let p = PROJECTION_DIM;
        let scale = 1.0 / (p as f32).sqrt();
        let r: Vec<f32> = (0..d * p)
            .map(|_| if rng.bool() { scale } else { -scale })
            .collect();
        let mut x = vec![0.0f32; n * p];
        for (row, out) in tokens.chunks_exact(d).zip(x.chunks_exact_mut(p)) {
            for (v, rrow) in row.iter().zip(r.chunks_exact(p)) {
                for (o, w) in out.iter_mut().zip(rrow) {
                    *o += v * w;
                }
            }
        }
        (p, x)
    } else {
        (d, tokens.to_vec())
    };
    let mut nearest = vec![f32::INFINITY; n];
    let mut chosen = Vec::with_capacity(target);
    let mut next = rng.usize(0..n);
    for _ in 0..target {
        chosen.push(next);
        let centre = &x[next * p..(next + 1) * p];
        let mut far = (next, f32::NEG_INFINITY);
        for (i, (row, best)) in x.chunks_exact(p).zip(nearest.iter_mut()).enumerate() {
            let dist: f32 = row.iter().zip(centre).map(|(a, b)| (a - b) * (a - b)).sum();
            if dist < *best {
                *best = dist;
            }
            if *best > far.1 {
                far = (i, *best);
            }
        }
        if far.1 <= 0.0 {
            // Everything left is a copy of a token already kept.
            break;
        }
        next = far.0;
    }
    chosen.sort_unstable();
    chosen
}

/// The rows `keep` of `tokens` (`rows × d`).
pub fn gather_rows(tokens: &[f32], d: usize, keep: &[usize]) -> Vec<f32> {
    keep.iter()
        .flat_map(|&i| tokens[i * d..(i + 1) * d].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest distance from any row to its nearest kept row (the covering radius).
    fn radius(x: &[f32], d: usize, keep: &[usize]) -> f32 {
        x.chunks_exact(d)
            .map(|row| {
                keep.iter()
                    .map(|&k| {
                        row.iter()
                            .zip(&x[k * d..(k + 1) * d])
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f32>()
                    })
                    .fold(f32::INFINITY, f32::min)
            })
            .fold(0.0, f32::max)
            .sqrt()
    }

    #[test]
    fn keeps_one_token_of_each_cluster() {
        // Five tight clusters of 40 points in 3-D: five picks must hit each one once.
        let centres = [
            [0.0, 0.0, 0.0],
            [10.0, 0.0, 0.0],
            [0.0, 10.0, 0.0],
            [0.0, 0.0, 10.0],
            [7.0, 7.0, 7.0],
        ];
        let mut rng = fastrand::Rng::with_seed(1);
        let mut x = Vec::new();
        let mut label = Vec::new();
        for _ in 0..40 {
            for (c, centre) in centres.iter().enumerate() {
                x.extend(centre.iter().map(|v| v + rng.f32() * 0.1));
                label.push(c);
            }
        }
        let keep = greedy_coreset(&x, 3, 5, 7);
        let mut hit: Vec<usize> = keep.iter().map(|&i| label[i]).collect();
        hit.sort_unstable();
        assert_eq!(hit, vec![0, 1, 2, 3, 4]);
        assert!(radius(&x, 3, &keep) < 0.3);
    }

    #[test]
    fn covers_every_cluster_in_high_dimension() {
        // 20 clusters in 512-D (projected to 128 for the selection): one of 400 rows and 19
        // of 10. Twenty greedy picks cover all of them; random sets of 20, drawn mostly
        // from the big cluster, leave some far away.
        let d = 512;
        let mut rng = fastrand::Rng::with_seed(3);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..d).map(|_| rng.f32() * 2.0 - 1.0).collect())
            .collect();
        let mut x = Vec::new();
        let mut label = Vec::new();
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..if c == 0 { 400 } else { 10 } {
                x.extend(centre.iter().map(|v| v + (rng.f32() - 0.5) * 0.05));
                label.push(c);
            }
        }
        let n = label.len();
        let keep = greedy_coreset(&x, d, 20, 11);
        assert!(keep.windows(2).all(|w| w[0] < w[1]));
        let mut hit: Vec<usize> = keep.iter().map(|&i| label[i]).collect();
        hit.sort_unstable();
        assert_eq!(hit, (0..20).collect::<Vec<_>>());
        let greedy = radius(&x, d, &keep);
        for s in 0..10 {
            let mut idx: Vec<usize> = (0..n).collect();
            fastrand::Rng::with_seed(100 + s).shuffle(&mut idx);
            assert!(
                greedy < radius(&x, d, &idx[..20]),
                "random set {s} covers better"
            );
        }
        assert_eq!(greedy_coreset(&x, d, n, 1), (0..n).collect::<Vec<_>>());
        assert_eq!(gather_rows(&x, d, &[2])[..], x[2 * d..3 * d]);
    }
}
