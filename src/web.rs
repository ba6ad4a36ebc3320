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
use js_sys::{Float32Array, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::clip::preprocess::{MAX_PIXELS, decode_image};
use crate::detect::bundle::Manifest;
use crate::detect::{Detection, Detector, JsDetection, calibration_rule};
use crate::device::{BackendKind, device};
use crate::error::Error;

#[wasm_bindgen(start)]
/// Runs when the module is instantiated: panics go to the console with their message.
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_err(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A detector loaded from a web bundle. The detector owns the threshold.
#[wasm_bindgen]
pub struct WebDetector {
    inner: Rc<Detector>,
    backend: String,
    notice: Option<String>,
}

/// The result object: [`JsDetection`] through `serde-wasm-bindgen`, plus the map as a
/// `Float32Array` (one copy out of wasm memory, transferred to the page without another).
fn to_js(d: &Detection, backend: &str, total_ms: f64) -> Result<JsValue, JsError> {
    let o = serde_wasm_bindgen::to_value(&JsDetection::new(d, backend, total_ms))
        .map_err(|e| JsError::new(&format!("cannot build the result object: {e}")))?;
    let map = Float32Array::from(d.map.values.as_slice());
    Reflect::set(&o, &JsValue::from_str("map"), &map)
        .map_err(|_| JsError::new("cannot build the result object"))?;
    Ok(o)
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
            backend: name.into(),
            notice: m.notice.clone(),
        })
    }

    /// `webgpu` or `cpu`.
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// The decision threshold (the bundle's until set).
    pub fn threshold(&self) -> f64 {
        self.inner.threshold()
    }

    /// The bundle's notice for people (e.g. that the model is untrained), if any.
    pub fn notice(&self) -> Option<String> {
        self.notice.clone()
    }

    /// Set the decision threshold (a finite number).
    #[wasm_bindgen(js_name = setThreshold)]
    pub fn set_threshold(&self, threshold: f64) -> Result<(), JsError> {
        self.inner.set_threshold(threshold).map_err(js_err)
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
        let backend = self.backend.clone();
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
            to_js(&d, &backend, total).map_err(JsValue::from)
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
