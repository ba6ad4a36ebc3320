//! What a detection returns.

use serde::Serialize;

/// A per-pixel anomaly map in `[0, 1]` (the tap maps' mean), row-major.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnomalyMap {
    /// Width in pixels (the original image's).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height` values, row-major.
    pub values: Vec<f32>,
}

impl AnomalyMap {
    /// The largest value (0 for an empty map; NaN if any value is NaN, which
    /// `f32::max` alone would skip).
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, |m, v| {
            if m.is_nan() || v.is_nan() {
                f32::NAN
            } else {
                m.max(v)
            }
        })
    }
}

/// Wall time of each stage, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Timings {
    /// Decoding excluded: resize, crop and normalisation.
    pub preprocess_ms: f64,
    /// The CLIP forward pass with its taps.
    pub backbone_ms: f64,
    /// Scoring: the head (or plain CLIP) and the maps on the device.
    pub head_ms: f64,
    /// Read-back, smoothing and the map back at the original size.
    pub postprocess_ms: f64,
}

/// The result for one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detection {
    /// Fused image score (spec §7).
    pub score: f32,
    /// `score ≥ threshold`.
    pub is_anomalous: bool,
    /// The threshold it was judged by.
    pub threshold: f64,
    /// The global abnormal probability `p`.
    pub global_probability: f32,
    /// At the original image size.
    pub map: AnomalyMap,
    /// Per image (a batch's time divided by its size).
    pub timings: Timings,
}

/// What calibration measured and chose.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Calibration {
    /// The threshold set.
    pub threshold: f64,
    /// How many normal images were scored.
    pub images: usize,
    /// Their scores' mean.
    pub mean: f64,
    /// Their scores' standard deviation.
    pub std: f64,
    /// Their highest score.
    pub max: f64,
}
