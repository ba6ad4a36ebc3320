//! The training losses of spec §6, as tensor functions so that gradients flow through them
//! on an autodiff device. The local losses follow AnomalyCLIP's `FocalLoss` (γ = 2,
//! smoothing 1e-5, no class weights) and `BinaryDiceLoss` (smoothing 1), which the spec
//! takes over.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Focal loss on state probabilities `probs [B, 2, H, W]` (softmax over dim 1) against a
/// binary mask `[B, H, W]` (1 = anomalous): `mean(−(1 − p_t)^γ · ln p_t)`, where `p_t` is the
/// probability of the true state with the one-hot target clamped to `[1e-5, 1 − 1e-5]`,
/// plus 1e-5.
pub fn focal(probs: Tensor<4>, mask: Tensor<3>, gamma: f64) -> Tensor<1> {
    const SMOOTH: f64 = 1e-5;
    let abnormal = mask.clamp(SMOOTH, 1.0 - SMOOTH);
    let normal = abnormal.clone().neg().add_scalar(1.0);
    let p_n = probs.clone().narrow(1, 0, 1).squeeze_dim::<3>(1);
    let p_a = probs.narrow(1, 1, 1).squeeze_dim::<3>(1);
    let pt = (p_n * normal + p_a * abnormal).add_scalar(SMOOTH);
    let weight = pt.clone().neg().add_scalar(1.0).powf_scalar(gamma);
    (weight * pt.log()).neg().mean()
}

/// Dice loss of a probability map `[B, H, W]` against a target `[B, H, W]`:
/// `1 − mean_b (2·Σ x·y + 1) / (Σ x + Σ y + 1)`.
pub fn dice(pred: Tensor<3>, target: Tensor<3>) -> Tensor<1> {
    let [b, h, w] = pred.dims();
    let x = pred.reshape([b, h * w]);
    let y = target.reshape([b, h * w]);
    let inter = (x.clone() * y.clone()).sum_dim(1);
    let score =
        (inter.mul_scalar(2.0).add_scalar(1.0)) / (x.sum_dim(1) + y.sum_dim(1)).add_scalar(1.0);
    score.mean().neg().add_scalar(1.0)
}

/// Cross-entropy of global logits `[B, 2]` against labels (0 normal, 1 anomalous).
pub fn cross_entropy(logits: Tensor<2>, labels: &[bool]) -> Tensor<1> {
    let device = logits.device();
    let [b, _] = logits.dims();
    let onehot: Vec<f32> = labels
        .iter()
        .flat_map(|&l| if l { [0.0, 1.0] } else { [1.0, 0.0] })
        .collect();
    let onehot = Tensor::<2>::from_data(burn::tensor::TensorData::new(onehot, [b, 2]), &device);
    (log_softmax(logits, 1) * onehot).sum_dim(1).neg().mean()
}

/// `1 − cos(a, b)` row by row, `[N]`.
pub fn cosine_distance(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let na = a.powi_scalar(2).sum_dim(1).sqrt();
    let nb = b.powi_scalar(2).sum_dim(1).sqrt();
    let [n, _] = dot.dims();
    (dot / (na * nb).clamp_min(1e-12))
        .neg()
        .add_scalar(1.0)
        .reshape([n])
}

/// KnPL's knowledge-distillation loss (spec §3):
/// `(1 − cos(t_n, K_n)) + (1 − cos(t_a, K_a)) + λ_s · mean_i (1 − cos(t_{y_i}, k_i))`.
/// `text` is `[2, D]` (`t_n`, `t_a`), `general` is `[2, D]` (`K_n`, `K_a`); `specific` holds
/// the per-image targets `[N, D]` and their labels, when the batch has any.
pub fn knowledge_distillation(
    text: Tensor<2>,
    general: Tensor<2>,
    specific: Option<(Tensor<2>, &[bool])>,
    lambda_s: f64,
) -> Tensor<1> {
    let mut loss = cosine_distance(text.clone(), general).sum();
    if let Some((targets, labels)) = specific {
        let device = text.device();
        let idx: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        let n = idx.len();
        let idx = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(idx, [n]), &device);
        let chosen = text.select(0, idx);
        loss = loss + cosine_distance(chosen, targets).mean().mul_scalar(lambda_s);
    }
    loss
}

/// `L_local = Σ_l [Focal(S_l↑, M) + Dice(S_l↑[a], M) + Dice(S_l↑[n], 1 − M)]` over the
/// levels' up-sampled probabilities `[B, 2, H, W]`.
pub fn local(levels: &[Tensor<4>], mask: Tensor<3>) -> Option<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for probs in levels {
        let p_n = probs.clone().narrow(1, 0, 1).squeeze_dim::<3>(1);
        let p_a = probs.clone().narrow(1, 1, 1).squeeze_dim::<3>(1);
        let inverse = mask.clone().neg().add_scalar(1.0);
        let l =
            focal(probs.clone(), mask.clone(), 2.0) + dice(p_a, mask.clone()) + dice(p_n, inverse);
        total = Some(match total {
            Some(t) => t + l,
            None => l,
        });
    }
    total
}
