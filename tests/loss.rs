//! The losses of spec §6 against values computed by hand.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use kanoclip::tensor_io::to_vec;
use kanoclip::train::loss::{
    cosine_distance, cross_entropy, dice, focal, knowledge_distillation, local,
};

fn t3(v: &[f32], s: [usize; 3], d: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(v.to_vec(), s), d)
}

fn scalar(t: Tensor<1>) -> f64 {
    f64::from(to_vec(t).unwrap()[0])
}

#[test]
fn losses_equal_hand_computed_values() {
    for (kind, d) in common::backends() {
        // Two pixels: p_a = 0.8 on an anomalous pixel, p_a = 0.3 on a normal one.
        let probs: Tensor<4> = Tensor::from_data(
            TensorData::new(vec![0.2f32, 0.7, 0.8, 0.3], [1, 2, 1, 2]),
            &d,
        );
        let mask = t3(&[1.0, 0.0], [1, 1, 2], &d);
        // p_t = 0.2·1e-5 + 0.8·(1 − 1e-5) + 1e-5 and 0.7·(1 − 1e-5) + 0.3·1e-5 + 1e-5.
        let pt = [
            0.2 * 1e-5 + 0.8 * (1.0 - 1e-5) + 1e-5,
            0.7 * (1.0 - 1e-5) + 0.3 * 1e-5 + 1e-5,
        ];
        let want: f64 = pt
            .iter()
            .map(|p: &f64| -(1.0 - p).powi(2) * p.ln())
            .sum::<f64>()
            / 2.0;
        let got = scalar(focal(probs.clone(), mask.clone(), 2.0));
        assert!((got - want).abs() < 1e-6, "{kind} focal {got} vs {want}");

        // Dice of [0.8, 0.3] against [1, 0]: 1 − (2·0.8 + 1) / (1.1 + 1 + 1).
        let got = scalar(dice(t3(&[0.8, 0.3], [1, 1, 2], &d), mask.clone()));
        assert!((got - (1.0 - 2.6 / 3.1)).abs() < 1e-6, "{kind} dice {got}");

        // CE of logits [0, ln 3] (p = 1/4, 3/4): −ln(3/4) for label 1, −ln(1/4) for label 0.
        let logits: Tensor<2> = Tensor::from_data(
            TensorData::new(vec![0.0f32, 3f32.ln(), 0.0, 3f32.ln()], [2, 2]),
            &d,
        );
        let got = scalar(cross_entropy(logits, &[true, false]));
        let want = (-(0.75f64.ln()) - 0.25f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{kind} ce {got} vs {want}");

        // Cosine distance: orthogonal = 1, same direction = 0, opposite = 2.
        let a: Tensor<2> = Tensor::from_data(
            TensorData::new(vec![1.0f32, 0.0, 2.0, 2.0, 1.0, 1.0], [3, 2]),
            &d,
        );
        let b: Tensor<2> = Tensor::from_data(
            TensorData::new(vec![0.0f32, 3.0, 1.0, 1.0, -2.0, -2.0], [3, 2]),
            &d,
        );
        let got = to_vec(cosine_distance(a, b)).unwrap();
        assert!(
            got.iter()
                .zip([1.0, 0.0, 2.0])
                .all(|(g, w)| (g - w).abs() < 1e-6),
            "{kind} {got:?}"
        );

        // KD: t = [e1; e2], K = [e1; e1] → 0 + 1; specific: image labelled abnormal with
        // target −e2 → λ·2.
        let text: Tensor<2> =
            Tensor::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]), &d);
        let general: Tensor<2> =
            Tensor::from_data(TensorData::new(vec![1.0f32, 0.0, 1.0, 0.0], [2, 2]), &d);
        let spec: Tensor<2> = Tensor::from_data(TensorData::new(vec![0.0f32, -1.0], [1, 2]), &d);
        let got = scalar(knowledge_distillation(
            text.clone(),
            general.clone(),
            Some((spec, &[true])),
            0.5,
        ));
        assert!((got - 2.0).abs() < 1e-6, "{kind} kd {got}");
        assert!((scalar(knowledge_distillation(text, general, None, 1.0)) - 1.0).abs() < 1e-6);

        // L_local for one level = focal + dice(a, M) + dice(n, 1 − M).
        let l = scalar(local(std::slice::from_ref(&probs), mask.clone()).unwrap());
        let parts = scalar(focal(probs.clone(), mask.clone(), 2.0))
            + scalar(dice(t3(&[0.8, 0.3], [1, 1, 2], &d), mask.clone()))
            + scalar(dice(
                t3(&[0.2, 0.7], [1, 1, 2], &d),
                t3(&[0.0, 1.0], [1, 1, 2], &d),
            ));
        assert!((l - parts).abs() < 1e-6, "{kind} local {l} vs {parts}");
        assert!(local(&[], mask).is_none());
    }
}
