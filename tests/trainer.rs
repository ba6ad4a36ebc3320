//! One training step: CLIP stays frozen (no gradients), the head moves, the loss falls when
//! a batch is fitted, and the same seed gives the same steps on the CPU.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use common::fixture;
use kanoclip::clip::embed::image_batch;
use kanoclip::clip::{Clip, Tokenizer};
use kanoclip::detect::DetectorConfig;
use kanoclip::head::HeadConfig;
use kanoclip::head::knowledge::KnowledgeBase;
use kanoclip::train::synth::{Defect, Texture, add_defect, texture};
use kanoclip::train::trainer::{TrainConfig, Trainer};

fn new_trainer(device: &Device) -> kanoclip::Result<Trainer> {
    let clip = Clip::from_files(
        fixture("tiny_quickgelu_config.json"),
        fixture("tiny_quickgelu.safetensors"),
        device,
    )?;
    let kb = KnowledgeBase::from_file(fixture("knowledge_small.json"))?;
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

/// Two normal and two defective 32×32 images with their masks.
fn batch(device: &Device) -> (Tensor<4>, Tensor<3>, Vec<bool>) {
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
    let x = image_batch(&images, 32, device).unwrap();
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
    let (x, m, y) = batch(&device);
    let (total, _) = t.loss(x.clone(), m.clone(), &y);
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

    let first = t.step(x.clone(), m.clone(), &y).unwrap();
    let mut last = first;
    for _ in 0..15 {
        last = t.step(x.clone(), m.clone(), &y).unwrap();
    }
    assert!(
        first.total.is_finite() && last.total < first.total * 0.9,
        "fitting one batch lowers the loss: {first:?} → {last:?}"
    );
    let out =
        kanoclip::clip::embed::to_vec(t.head().bicmci[0].image_from_text.out.weight.val().inner())
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
        let (x, m, y) = batch(&device);
        (0..3)
            .map(|_| t.step(x.clone(), m.clone(), &y).unwrap().total)
            .collect::<Vec<f32>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_device_without_autodiff_is_refused() {
    let e = new_trainer(&Device::flex()).err().expect("must fail");
    assert!(e.to_string().contains("autodiff"), "{e}");
}
