//! One training step: CLIP stays frozen (no gradients), the head moves, the loss falls when
//! a batch is fitted, and the same seed gives the same steps on the CPU.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use common::fixture;
use kanoclip::clip::preprocess::image_batch;
use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::data::synth::{Defect, Texture, add_defect, texture};
use kanoclip::detect::DetectorConfig;
use kanoclip::head::HeadConfig;
use kanoclip::head::knowledge::KnowledgeBase;
use kanoclip::train::trainer::{Batch, TrainConfig, Trainer};

fn new_trainer(device: &Device) -> kanoclip::Result<Trainer> {
    new_trainer_with(
        device,
        KnowledgeBase::from_file(fixture("knowledge_small.json"))?,
    )
}

fn new_trainer_with(device: &Device, kb: KnowledgeBase) -> kanoclip::Result<Trainer> {
    let clip = Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        device,
    )?;
    let mut det = DetectorConfig::for_clip(&clip.config);
    det.input_size = 32;
    let head = HeadConfig {
        levels: det.taps.len(),
        ..HeadConfig::default()
    };
    Trainer::new(
        clip,
        &kb,
        &Tokenizer::new()?,
        head,
        det,
        TrainConfig::default(),
    )
}

fn trainer(device: &Device) -> Trainer {
    new_trainer(device).unwrap()
}

/// The batch of [`images`], with its features from `t`'s frozen backbone.
fn batch(t: &Trainer, device: &Device) -> Batch {
    let (x, masks, labels) = images(device);
    Batch {
        vision: t.features(x),
        masks,
        specific: vec![None; labels.len()],
        labels,
    }
}

/// Two normal and two defective 32×32 images with their masks.
fn images(device: &Device) -> (Tensor<4>, Tensor<3>, Vec<bool>) {
    let mut images = Vec::new();
    let mut masks = Vec::new();
    let mut labels = Vec::new();
    for (i, defect) in [None, Some(Defect::Hole), None, Some(Defect::Stain)]
        .into_iter()
        .enumerate()
    {
        let mut img = texture(Texture::Stripes, 32, i as u64);
        let mask = match defect {
            Some(d) => add_defect(&mut img, d, 3 + i as u64)
                .pixels()
                .map(|p| f32::from(p[0] > 0))
                .collect(),
            None => vec![0.0; 32 * 32],
        };
        images.push(image::DynamicImage::ImageRgb8(img));
        masks.extend(mask);
        labels.push(defect.is_some());
    }
    let x = image_batch(&images, 32, device).unwrap().0;
    (
        x,
        Tensor::from_data(TensorData::new(masks, [4, 32, 32]), device),
        labels,
    )
}

#[test]
fn clip_is_frozen_and_the_head_learns() {
    let device = Device::flex().autodiff();
    let mut t = trainer(&device);
    let (total, _) = t.loss(batch(&t, &device));
    let grads = total.backward();
    assert!(
        t.clip.vision.proj.val().grad(&grads).is_none(),
        "no gradient for CLIP's vision tower"
    );
    assert!(
        t.clip.text.text_projection.val().grad(&grads).is_none(),
        "no gradient for CLIP's text tower"
    );
    assert!(
        t.head().prompts.normal_ctx.val().grad(&grads).is_some(),
        "prompts get gradients through the frozen text tower"
    );
    assert!(
        t.head().bicmci[0]
            .image_from_text
            .out
            .weight
            .val()
            .grad(&grads)
            .is_some()
    );
    assert!(t.head().adapter.c3.weight.val().grad(&grads).is_some());

    let first = t.step(batch(&t, &device)).unwrap();
    let mut last = first;
    for _ in 0..15 {
        last = t.step(batch(&t, &device)).unwrap();
    }
    assert!(
        first.total.is_finite() && last.total < first.total * 0.9,
        "fitting one batch lowers the loss: {first:?} → {last:?}"
    );
    let out =
        kanoclip::tensor_io::to_vec(t.head().bicmci[0].image_from_text.out.weight.val().inner())
            .unwrap();
    assert!(
        out.iter().any(|v| *v != 0.0),
        "Bi-CMCI's zero-initialised output has moved"
    );
}

#[test]
fn the_same_seed_gives_the_same_steps_on_cpu() {
    let run = || {
        let device = Device::flex().autodiff();
        let mut t = trainer(&device);
        (0..3)
            .map(|_| t.step(batch(&t, &device)).unwrap().total)
            .collect::<Vec<f32>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_device_without_autodiff_is_refused() {
    let e = new_trainer(&Device::flex()).err().expect("must fail");
    assert!(e.to_string().contains("autodiff"), "{e}");
}

fn head_values(t: &Trainer) -> Vec<f32> {
    let h = t.head();
    [
        h.prompts.normal_ctx.val(),
        h.prompts.abnormal_ctx.val(),
        h.bicmci[0].image_from_text.out.weight.val(),
        h.bicmci[1].text_from_image.q.weight.val(),
    ]
    .into_iter()
    .flat_map(|v| kanoclip::tensor_io::to_vec(v).unwrap())
    .chain(kanoclip::tensor_io::to_vec(h.adapter.c2.weight.val()).unwrap())
    .collect()
}

#[test]
fn data_parallel_steps_equal_the_whole_batch_step() {
    // Burn's multi-device step: shards weighted by their share, gradients summed by
    // `step_multi`. On CPU "devices" (the one flex device, three times) three steps must
    // match the single-device steps.
    let device = Device::flex().autodiff();
    let mut one = trainer(&device);
    let mut three = trainer(&device)
        .with_devices(&[device.clone(), device.clone()])
        .unwrap();
    for _ in 0..3 {
        let a = one.step(batch(&one, &device)).unwrap();
        let b = three.step(batch(&three, &device)).unwrap();
        for (x, y) in [
            (a.total, b.total),
            (a.kd, b.kd),
            (a.global, b.global),
            (a.local, b.local),
        ] {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    let d = common::max_abs_diff(&head_values(&one), &head_values(&three));
    assert!(d < 1e-5, "heads differ by {d}");
    assert!(
        trainer(&device).with_devices(&[Device::flex()]).is_err(),
        "a device without autodiff is refused"
    );
}

#[test]
fn a_nan_loss_stops_and_leaves_the_head_unchanged() {
    let device = Device::flex().autodiff();
    let mut t = trainer(&device);
    let before = head_values(&t);
    let mut b = batch(&t, &device);
    b.vision.global = b.vision.global.mul_scalar(f32::NAN);
    let e = t.step(b).expect_err("a NaN loss is an error");
    assert!(e.to_string().contains("not finite"), "{e}");
    assert_eq!(head_values(&t), before);
    // …and the trainer still works.
    assert!(t.step(batch(&t, &device)).unwrap().total.is_finite());
}

#[test]
fn specific_knowledge_joins_by_path_and_enters_the_kd_loss() {
    let device = Device::flex().autodiff();
    let mut kb = KnowledgeBase::from_file(fixture("knowledge_small.json")).unwrap();
    kb.specific.insert(
        "wood/test/hole/000.png".into(),
        "a round hole bored through pale wood".into(),
    );
    kb.specific.insert(
        "wood/test/good/001.png".into(),
        "smooth pale wood with even grain".into(),
    );
    kb.specific_provenance = Some(kb.general_provenance.clone());
    let t = new_trainer_with(&device, kb).unwrap();
    // Rows in path order.
    assert_eq!(t.specific_row("wood/test/good/001.png"), Some(0));
    assert_eq!(t.specific_row("wood/test/hole/000.png"), Some(1));
    assert_eq!(t.specific_row("wood/test/hole/001.png"), None);
    let scalar = |v: Tensor<1>| kanoclip::tensor_io::to_vec(v).unwrap()[0];
    let (_, [kd_plain, g1, l1]) = t.loss(batch(&t, &device));
    let mut b = batch(&t, &device);
    b.specific = vec![Some(1), Some(0), None, None];
    let (_, [kd, g2, l2]) = t.loss(b);
    // The specific term is a mean of cosine distances: in (0, 2], added to L_KD only.
    let extra = scalar(kd) - scalar(kd_plain);
    assert!(extra > 0.0 && extra <= 2.0, "specific term {extra}");
    assert_eq!((scalar(g1), scalar(l1)), (scalar(g2), scalar(l2)));
}

#[test]
fn a_training_step_runs_on_every_backend_and_they_agree() {
    // wgpu (lavapipe here; Vulkan, Metal or DX12 for users) trains like the CPU: the loss
    // of two steps agrees across backends.
    let mut runs = Vec::new();
    for (kind, device) in common::backends() {
        let device = device.autodiff();
        let mut t = trainer(&device);
        let a = t.step(batch(&t, &device)).unwrap();
        let b = t.step(batch(&t, &device)).unwrap();
        runs.push((kind, [a.total, b.total, b.kd, b.global, b.local]));
    }
    let (k0, base) = runs[0];
    for (k, r) in &runs[1..] {
        for (x, y) in base.iter().zip(r) {
            assert!(
                (x - y).abs() < 1e-3 * x.abs().max(1.0),
                "{k0} {base:?} vs {k} {r:?}"
            );
        }
    }
}
