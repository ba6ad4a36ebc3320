//! Mutual scoring's parts against values computed by hand and by plain loops.

use burn::prelude::*;
use burn::tensor::TensorData;

use super::*;
use crate::tensor_io::to_vec;
use crate::test_util::{backends, max_abs_diff};

/// A small deterministic pseudo-random sequence in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Spec §11's score by plain loops: every patch against every patch of every other image.
fn brute_force(z: &[f32], n: usize, p: usize, w: usize) -> Vec<f32> {
    let at = |i: usize, q: usize| &z[(i * p + q) * w..(i * p + q + 1) * w];
    let k = interval_len(n);
    let mut out = Vec::new();
    for i in 0..n {
        for q in 0..p {
            let mut d: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    (0..p)
                        .map(|r| {
                            at(i, q)
                                .iter()
                                .zip(at(j, r))
                                .map(|(a, b)| f64::from(a - b).powi(2))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .fold(f64::MAX, f64::min)
                })
                .collect();
            d.sort_by(f64::total_cmp);
            out.push((d[..k].iter().sum::<f64>() / k as f64) as f32);
        }
    }
    out
}

#[test]
fn interval_and_groups() {
    // floor(0.3 · (n − 1)), at least one.
    assert_eq!(
        [2, 3, 4, 7, 8, 11, 32, 64].map(interval_len),
        [1, 1, 1, 1, 2, 3, 9, 18]
    );
    assert_eq!(group_sizes(33, 32), vec![17, 16]);
    assert_eq!(group_sizes(64, 32), vec![32, 32]);
    assert_eq!(group_sizes(65, 32), vec![22, 22, 21]);
    assert_eq!(group_sizes(5, 32), vec![5]);
    assert_eq!(group_sizes(2, 32), vec![2]);
    assert!(group_sizes(0, 32).is_empty());
    for n in 1..200 {
        let sizes = group_sizes(n, 16);
        assert_eq!(sizes.iter().sum::<usize>(), n);
        assert!(
            sizes
                .iter()
                .all(|&s| s <= 16 && (n < MIN_GROUP || s >= MIN_GROUP))
        );
    }
    assert!(Mutual::default().validate().is_ok());
    for bad in [
        Mutual {
            weight: 1.5,
            group: 8,
        },
        Mutual {
            weight: f64::NAN,
            group: 8,
        },
        Mutual {
            weight: 1.0,
            group: 2,
        },
        Mutual {
            weight: 1.0,
            group: MAX_GROUP + 1,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn neighbourhood_mean_counts_the_zero_padding() {
    for (_, device) in backends() {
        // One channel, a 3 × 3 grid holding 1..9 row-major.
        let z = Tensor::<3>::from_data(
            TensorData::new((1..=9).map(|v| v as f32).collect(), [1, 9, 1]),
            &device,
        );
        let got = to_vec(aggregate(z.clone(), 3, 3)).unwrap();
        // Corner (0, 0): (1 + 2 + 4 + 5) / 9; edge (0, 1): (1+2+3+4+5+6) / 9; centre 45 / 9.
        assert!((got[0] - 12.0 / 9.0).abs() < 1e-6, "{got:?}");
        assert!((got[1] - 21.0 / 9.0).abs() < 1e-6, "{got:?}");
        assert!((got[4] - 5.0).abs() < 1e-6, "{got:?}");
        // r = 5 on a 3 × 3 grid: every window covers the whole grid at the centre.
        assert!((to_vec(aggregate(z.clone(), 3, 5)).unwrap()[4] - 45.0 / 25.0).abs() < 1e-6);
        assert_eq!(to_vec(aggregate(z, 3, 1)).unwrap()[4], 5.0);
    }
}

#[test]
fn layer_norm_is_per_image_over_every_value() {
    for (_, device) in backends() {
        let (n, p, w) = (3, 4, 5);
        let v: Vec<f32> = values(n * p * w, 7).iter().map(|x| 3.0 * x + 2.0).collect();
        let z = to_vec(layer_norm(Tensor::from_data(
            TensorData::new(v, [n, p, w]),
            &device,
        )))
        .unwrap();
        for image in z.chunks(p * w) {
            let mean = image.iter().sum::<f32>() / (p * w) as f32;
            let var = image.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / (p * w) as f32;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }
}

#[test]
fn interval_mean_equals_plain_loops() {
    for (kind, device) in backends() {
        // n = 8 averages the two nearest images; n = 3 takes the nearest; a copied image
        // (ties at distance 0) is counted once.
        for (n, p, w, seed) in [(8, 6, 5, 1), (3, 4, 7, 2), (11, 9, 3, 3)] {
            let mut v = values(n * p * w, seed);
            if n == 11 {
                let first = v[..p * w].to_vec();
                v[p * w..2 * p * w].copy_from_slice(&first);
            }
            let got = to_vec(interval_mean(
                Tensor::from_data(TensorData::new(v.clone(), [n, p, w]), &device),
                PAIR_BYTES,
            ))
            .unwrap();
            let want = brute_force(&v, n, p, w);
            let e = max_abs_diff(&got, &want);
            assert!(e < 1e-4, "{kind} n={n}: {e}");
        }
    }
}

#[test]
fn pairs_in_slices_cover_every_pair() {
    // Slices of two images' products: each image's later images in several slices, whose
    // results must be stitched in order.
    for (_, device) in backends() {
        let (n, p, w) = (6, 7, 5);
        let v = values(n * p * w, 4);
        // Two images' products a slice: 15 pairs in 9 slices.
        let got = to_vec(interval_mean(
            Tensor::from_data(TensorData::new(v.clone(), [n, p, w]), &device),
            2 * 4 * p * p,
        ))
        .unwrap();
        let want = brute_force(&v, n, p, w);
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }
}

#[test]
fn an_odd_patch_out_scores_highest() {
    for (_, device) in backends() {
        // Five images of one "product" (the same tokens plus a little noise), one with a
        // patch that is nothing like the others: its score is the group's largest.
        let (n, grid, w) = (5, 4, 6);
        let p = grid * grid;
        let base = values(p * w, 9);
        let mut v = Vec::new();
        for i in 0..n {
            let noise = values(p * w, 100 + i as u64);
            v.extend(base.iter().zip(&noise).map(|(b, e)| b + 0.05 * e));
        }
        let odd = 2 * p * w + 5 * w;
        v[odd..odd + w].iter_mut().for_each(|x| *x += 4.0);
        let z = Tensor::<3>::from_data(TensorData::new(v, [n, p, w]), &device);
        let map = to_vec(mutual_grid(&[z], grid).unwrap()).unwrap();
        let best = (0..map.len()).max_by(|&a, &b| map[a].total_cmp(&map[b]));
        assert_eq!(best, Some(2 * p + 5), "{map:?}");
    }
}
