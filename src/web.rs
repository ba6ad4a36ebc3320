//! The browser glue, and the only platform-specific module: wasm-bindgen exports over the
//! backend-agnostic detector. The npm package `kanoclip-wasm` (`pkg/`) wraps it in a Web
//! Worker with a TypeScript API.
//!
//! - The device starts asynchronously: WebGPU through burn-wgpu when asked for (or with
//!   `auto`), else, or when WebGPU is absent or fails to start, Burn's flex CPU backend.
//!   [`WebDetector::backend`] says which one runs.
//! - Results are read back asynchronously (`into_data_async`), as WebGPU requires.
//! - Every input is checked before it reaches Burn (sizes, dimensions, numbers) and every
//!   failure becomes a JS exception with its message. A panic traps the module (wasm
//!   panics abort); the package's worker then starts a fresh instance, so the page keeps
//!   working (`debug_panic` exists to test exactly that).
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use image::{DynamicImage, RgbaImage};
use js_sys::{Float32Array, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::clip::preprocess::{MAX_PIXELS, decode_image};
use crate::detect::bundle::Manifest;
use crate::detect::{Detection, Detector, calibration_rule};
use crate::device::{BackendKind, device};
use crate::error::Error;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A detector loaded from a web bundle.
#[wasm_bindgen]
pub struct WebDetector {
    inner: Rc<Detector>,
    threshold: f64,
    backend: String,
    notice: Option<String>,
}

fn set(o: &Object, k: &str, v: impl Into<JsValue>) -> Result<(), JsError> {
    Reflect::set(o, &JsValue::from_str(k), &v.into())
        .map(|_| ())
        .map_err(|_| JsError::new("cannot build the result object"))
}

fn to_js(d: &Detection, threshold: f64, backend: &str, total_ms: f64) -> Result<JsValue, JsError> {
    let o = Object::new();
    set(&o, "score", d.score)?;
    set(&o, "isAnomalous", f64::from(d.score) >= threshold)?;
    set(&o, "threshold", threshold)?;
    set(&o, "globalProbability", d.global_probability)?;
    set(&o, "map", Float32Array::from(d.map.values.as_slice()))?;
    set(&o, "width", d.map.width)?;
    set(&o, "height", d.map.height)?;
    set(&o, "backend", backend)?;
    let t = Object::new();
    set(&t, "preprocessMs", d.timings.preprocess_ms)?;
    set(&t, "forwardMs", d.timings.backbone_ms + d.timings.head_ms)?;
    set(&t, "postprocessMs", d.timings.postprocess_ms)?;
    set(&t, "totalMs", total_ms)?;
    set(&o, "timings", t)?;
    Ok(o.into())
}

#[wasm_bindgen]
impl WebDetector {
    /// Load a bundle: the manifest's JSON text and its reassembled, verified files (`head`
    /// empty for a training-free bundle). `backend` is `webgpu`, `cpu` or `auto`.
    pub async fn create(
        manifest: String,
        vision: Vec<u8>,
        head: Vec<u8>,
        backend: String,
    ) -> Result<WebDetector, JsError> {
        let m = Manifest::from_json_str(&manifest).map_err(js_err)?;
        let (dev, name) = match backend.as_str() {
            "cpu" => (device(BackendKind::Cpu).await.map_err(js_err)?, "cpu"),
            "webgpu" => (
                device(BackendKind::Wgpu)
                    .await
                    .map_err(|e| JsError::new(&format!("WebGPU is not available here: {e}")))?,
                "webgpu",
            ),
            "auto" => match device(BackendKind::Wgpu).await {
                Ok(d) => (d, "webgpu"),
                Err(_) => (device(BackendKind::Cpu).await.map_err(js_err)?, "cpu"),
            },
            other => {
                return Err(JsError::new(&format!(
                    "backend must be webgpu, cpu or auto, not {other:?}"
                )));
            }
        };
        let head = (!head.is_empty()).then_some(head.as_slice());
        let detector = m.detector(&vision, head, &dev).map_err(js_err)?;
        Ok(WebDetector {
            inner: Rc::new(detector),
            threshold: m.threshold,
            backend: name.into(),
            notice: m.notice.clone(),
        })
    }

    /// `webgpu` or `cpu`.
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    #[wasm_bindgen(js_name = setThreshold)]
    pub fn set_threshold(&mut self, threshold: f64) -> Result<(), JsError> {
        if !threshold.is_finite() {
            return Err(JsError::new(&format!(
                "threshold {threshold} is not a finite number"
            )));
        }
        self.threshold = threshold;
        Ok(())
    }

    /// Detect on an encoded image file (PNG, JPEG, BMP, TIFF, WebP), decoded here with the
    /// same checks as natively (size limits read from the header first).
    #[wasm_bindgen(js_name = detectEncoded)]
    pub fn detect_encoded(&self, bytes: Vec<u8>) -> Promise {
        match decode_image(&bytes) {
            Ok(img) => self.run(img),
            Err(e) => Promise::reject(&JsError::new(&e.to_string()).into()),
        }
    }

    /// Detect on RGBA pixels (`width × height × 4` bytes, as `ImageData` holds them).
    #[wasm_bindgen(js_name = detectRgba)]
    pub fn detect_rgba(&self, rgba: Vec<u8>, width: u32, height: u32) -> Promise {
        let pixels = u64::from(width) * u64::from(height);
        let problem = if width == 0 || height == 0 {
            Some(format!("the image is {width}×{height} pixels"))
        } else if pixels > MAX_PIXELS {
            Some(format!(
                "{width}×{height} is over the {MAX_PIXELS}-pixel limit"
            ))
        } else if rgba.len() as u64 != pixels * 4 {
            Some(format!("{} bytes for {width}×{height} RGBA", rgba.len()))
        } else {
            None
        };
        if let Some(p) = problem {
            return Promise::reject(&JsError::new(&p).into());
        }
        match RgbaImage::from_raw(width, height, rgba) {
            Some(img) => self.run(DynamicImage::ImageRgba8(img)),
            None => Promise::reject(&JsError::new("bad RGBA buffer").into()),
        }
    }

    fn run(&self, image: DynamicImage) -> Promise {
        let detector = self.inner.clone();
        let (threshold, backend) = (self.threshold, self.backend.clone());
        future_to_promise(async move {
            let t0 = web_time::Instant::now();
            let mut found = detector
                .detect_batch_async(std::slice::from_ref(&image))
                .await
                .map_err(|e| JsValue::from(js_err(e)))?;
            let d = found
                .pop()
                .ok_or_else(|| JsValue::from(JsError::new("no result")))?;
            let total = t0.elapsed().as_secs_f64() * 1e3;
            to_js(&d, threshold, &backend, total).map_err(JsValue::from)
        })
    }
}

/// The calibration rule (`max(mean + 3·std, max + 1e-4)` over normal images' scores).
#[wasm_bindgen(js_name = calibrationThreshold)]
pub fn calibration_threshold(scores: Vec<f64>) -> Result<f64, JsError> {
    calibration_rule(&scores)
        .map(|c| c.threshold)
        .map_err(js_err)
}

/// Panics on purpose: the package's tests check that a panic does not leave it unusable.
#[wasm_bindgen(js_name = debugPanic)]
pub fn debug_panic() {
    panic!("deliberate panic (kanoclip test hook)");
}
