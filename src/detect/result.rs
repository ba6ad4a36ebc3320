//! What a detection returns, and the one definition of what crosses into JavaScript.

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
    /// The largest value (0 for an empty map).
    pub fn max(&self) -> f32 {
        self.values.iter().copied().fold(0.0, f32::max)
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

/// A detection as JavaScript receives it (the package's `DetectionResult`), except the
/// map, which crosses separately as a zero-copy `Float32Array` under the key `map`. The
/// browser glue serialises exactly this; a test checks the TypeScript interface against it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsDetection {
    /// [`Detection::score`].
    pub score: f32,
    /// [`Detection::is_anomalous`].
    pub is_anomalous: bool,
    /// [`Detection::threshold`].
    pub threshold: f64,
    /// [`Detection::global_probability`].
    pub global_probability: f32,
    /// The map's width.
    pub width: u32,
    /// The map's height.
    pub height: u32,
    /// `webgpu` or `cpu`.
    pub backend: String,
    /// Stage times.
    pub timings: JsTimings,
}

/// [`Timings`] as JavaScript receives them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsTimings {
    /// [`Timings::preprocess_ms`].
    pub preprocess_ms: f64,
    /// Backbone and head (one figure: WebGPU reads back asynchronously).
    pub forward_ms: f64,
    /// [`Timings::postprocess_ms`].
    pub postprocess_ms: f64,
    /// The whole call, as the page waited for it.
    pub total_ms: f64,
}

impl JsDetection {
    /// The JavaScript view of `d`, run on `backend` in `total_ms`.
    pub fn new(d: &Detection, backend: &str, total_ms: f64) -> Self {
        JsDetection {
            score: d.score,
            is_anomalous: d.is_anomalous,
            threshold: d.threshold,
            global_probability: d.global_probability,
            width: d.map.width,
            height: d.map.height,
            backend: backend.into(),
            timings: JsTimings {
                preprocess_ms: d.timings.preprocess_ms,
                forward_ms: d.timings.backbone_ms + d.timings.head_ms,
                postprocess_ms: d.timings.postprocess_ms,
                total_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names of a TypeScript `interface NAME { … }` (top level only).
    fn ts_fields(source: &str, name: &str) -> Vec<String> {
        let start = source
            .find(&format!("export interface {name} {{"))
            .unwrap_or_else(|| panic!("interface {name} not found"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
        let mut out: Vec<String> = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("/**") && !l.starts_with('*') && !l.is_empty())
            .filter_map(|l| l.split(':').next())
            .map(|f| f.trim_end_matches('?').to_string())
            .collect();
        out.sort();
        out
    }

    fn json_fields(v: &serde_json::Value) -> Vec<String> {
        let mut out: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        out.sort();
        out
    }

    #[test]
    fn the_typescript_result_type_has_the_rust_fields() {
        let ts = include_str!("../../pkg/src/protocol.ts");
        let d = Detection {
            score: 0.5,
            is_anomalous: false,
            threshold: 0.6,
            global_probability: 0.4,
            map: AnomalyMap {
                width: 1,
                height: 1,
                values: vec![0.0],
            },
            timings: Timings::default(),
        };
        let js = serde_json::to_value(JsDetection::new(&d, "cpu", 1.0)).unwrap();
        let mut want = json_fields(&js);
        want.push("map".into());
        want.sort();
        assert_eq!(ts_fields(ts, "DetectionResult"), want);
        assert_eq!(ts_fields(ts, "Timings"), json_fields(&js["timings"]));
    }
}
