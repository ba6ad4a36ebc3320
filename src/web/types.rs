//! Every shape that crosses into JavaScript, in one place, compiled natively too so that
//! the tests can check each against its TypeScript counterpart in `pkg/src` (adding a
//! field on one side without the other fails `cargo test`).

use serde::Serialize;

use crate::detect::bundle::Manifest;
use crate::detect::{Calibration, Detection};
use crate::error::Error;

/// A detection as JavaScript receives it (the package's `DetectionResult`), except the
/// map, which crosses separately as a zero-copy `Float32Array` under the key `map`. The
/// browser glue serialises exactly this; a test checks the TypeScript interface against it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsDetection {
    /// [`crate::detect::Detection::score`].
    pub score: f32,
    /// [`crate::detect::Detection::is_anomalous`].
    pub is_anomalous: bool,
    /// [`crate::detect::Detection::threshold`].
    pub threshold: f64,
    /// [`crate::detect::Detection::global_probability`].
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

/// [`crate::detect::Timings`] as JavaScript receives them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsTimings {
    /// [`crate::detect::Timings::preprocess_ms`].
    pub preprocess_ms: f64,
    /// Backbone and head (one figure: WebGPU reads back asynchronously).
    pub forward_ms: f64,
    /// [`crate::detect::Timings::postprocess_ms`].
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

/// How an image of a group was scored, beside its result under the key `mutual` (the
/// package's `GroupInfo`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsGroupInfo {
    /// `mutual`, or `alone` (the detector's own map) when too few images could be scored.
    pub scored_as: &'static str,
    /// How many images were scored together.
    pub group_size: usize,
    /// Why the image was scored alone, if it was.
    pub fallback: Option<String>,
}

impl JsGroupInfo {
    /// The JavaScript view of `scored`, in a group of `size`.
    pub fn new(scored: &crate::detect::Scored, size: usize) -> Self {
        use crate::detect::Scored;
        match scored {
            Scored::Mutual { group } => JsGroupInfo {
                scored_as: "mutual",
                group_size: *group,
                fallback: None,
            },
            Scored::Alone { why } => JsGroupInfo {
                scored_as: "alone",
                group_size: size,
                fallback: Some(why.clone()),
            },
        }
    }
}

/// A rejection as JavaScript receives it: `{ kind, message }`, where `kind` is
/// [`Error::kind`] (one of [`ERROR_KINDS`]); the package maps the kind to a
/// `KanoclipError` code (`pkg/src/errors.ts`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsError {
    /// [`Error::kind`].
    pub kind: &'static str,
    /// The error's text.
    pub message: String,
}

impl From<&Error> for JsError {
    fn from(e: &Error) -> Self {
        JsError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Every kind [`Error::kind`] can return.
pub const ERROR_KINDS: [&str; 18] = [
    "io",
    "in-file",
    "json",
    "config",
    "weights-format",
    "weights-mismatch",
    "knowledge",
    "head",
    "integrity",
    "incompatible",
    "dataset",
    "image",
    "truncated-image",
    "image-too-large",
    "invalid",
    "non-finite",
    "backend-unavailable",
    "backend",
];

/// A reference image that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedImage {
    /// The name the page gave it.
    pub name: String,
    /// Why it was left out.
    pub error: String,
}

/// What the page learns about the reference memory in force (the package's
/// `ReferenceInfo`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceInfo {
    /// Reference images in the memory.
    pub count: usize,
    /// Their names.
    pub names: Vec<String>,
    /// Bytes on the device.
    pub bytes: u64,
    /// Tokens per tap.
    pub rows: Vec<usize>,
    /// λ.
    pub weight: f64,
    /// Images left out, with why.
    pub skipped: Vec<SkippedImage>,
}

/// What calibration measured and chose (the package's `CalibrationStats`): the threshold
/// and the statistics of the normal images' scores it came from, so that a page can
/// explain it without recomputing them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsCalibration {
    /// The threshold the rule chose.
    pub threshold: f64,
    /// How many scores.
    pub images: usize,
    /// Their mean.
    pub mean: f64,
    /// Their (population) standard deviation.
    pub std: f64,
    /// Their highest.
    pub max: f64,
    /// `mean + 3·std`, the rule's first candidate.
    #[serde(rename = "meanPlus3Std")]
    pub mean_plus_3_std: f64,
}

impl From<&Calibration> for JsCalibration {
    fn from(c: &Calibration) -> Self {
        JsCalibration {
            threshold: c.threshold,
            images: c.images,
            mean: c.mean,
            std: c.std,
            max: c.max,
            mean_plus_3_std: c.mean + 3.0 * c.std,
        }
    }
}

/// The part of a bundle's `manifest.json` the package reads itself, before the wasm
/// module checks the whole ([`Manifest`]): the package's `Manifest` interface.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsManifest<'a> {
    /// [`Manifest::format`].
    pub format: &'a str,
    /// [`Manifest::name`].
    pub name: &'a str,
    /// [`Manifest::notice`].
    pub notice: Option<&'a str>,
    /// [`Manifest::mode`].
    pub mode: &'static str,
    /// [`Manifest::threshold`].
    pub threshold: f64,
    /// [`Manifest::files`], as the package's `BundleFile` and `Chunk`.
    pub files: &'a [crate::detect::bundle::BundleFile],
}

impl<'a> From<&'a Manifest> for JsManifest<'a> {
    fn from(m: &'a Manifest) -> Self {
        JsManifest {
            format: &m.format,
            name: &m.name,
            notice: m.notice.as_deref(),
            mode: m.mode.name(),
            threshold: m.threshold,
            files: &m.files,
        }
    }
}

#[cfg(test)]
mod tests;
