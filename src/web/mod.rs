//! The browser glue, and the only platform-specific module: wasm-bindgen exports over the
//! backend-agnostic detector. The npm package `kanoclip-wasm` (`pkg/`) wraps it in a Web
//! Worker with a TypeScript API.
//!
//! - The device starts asynchronously: WebGPU through burn-wgpu when asked for (or with
//!   `auto`), else, or when WebGPU is absent or fails to start, Burn's flex CPU backend.
//!   [`WebDetector::backend`] says which one runs.
//! - Results are read back asynchronously (`into_data_async`), as WebGPU requires.
//! - Every input is checked before it reaches Burn (sizes, dimensions, numbers) and every
//!   failure is thrown (or rejected) as one object, `{ kind, message }`
//!   ([`types::JsError`]), built in one place ([`js_err`]) from [`crate::Error::kind`]. A panic traps the module (wasm
//!   panics abort); the package's worker then starts a fresh instance, so the page keeps
//!   working (`debug_panic` exists to test exactly that).
//! - Two modules are built from this file (scripts/build-web): the single-threaded one
//!   (feature `webgpu`, with the CPU fallback) and the threaded CPU one (feature
//!   `threads`: wasm atomics, rayon's pool on Web Workers, see `pool`), which the package
//!   loads for the CPU path on a cross-origin isolated page.
pub mod types;

#[cfg(all(target_arch = "wasm32", any(feature = "webgpu", feature = "threads")))]
pub use glue::*;

/// The wasm-bindgen exports (wasm32 with `webgpu`, or `threads` for the threaded CPU module).
#[cfg(all(target_arch = "wasm32", any(feature = "webgpu", feature = "threads")))]
mod glue {

    use std::rc::Rc;

    use image::DynamicImage;
    use js_sys::{Float32Array, Promise, Reflect};
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::future_to_promise;

    use crate::clip::preprocess::{decode_image, rgba_image};
    use crate::detect::bundle::Manifest;
    use crate::detect::memory::{FewShot, ReferenceImage, ReferenceMemory};
    use crate::detect::{
        Detection, Detector, GroupScorer, MemoryOptions, Mutual, calibration_rule,
    };
    use crate::device::{BackendKind, device};
    use crate::error::Error;
    use crate::tensor_io::sha256_hex;

    use super::types::{
        JsCalibration, JsDetection, JsError, JsGroupInfo, ReferenceInfo, SkippedImage,
    };

    #[wasm_bindgen(start)]
    /// Runs when the module is instantiated: panics go to the console with their message.
    pub fn start() {
        console_error_panic_hook::set_once();
    }

    /// A Rust error for JavaScript: the object `{ kind, message }` ([`JsError`]); the package
    /// turns the kind into a `KanoclipError` code. Every error leaves the module through here.
    pub fn js_err(e: Error) -> JsValue {
        serde_wasm_bindgen::to_value(&JsError::from(&e))
            .unwrap_or_else(|_| JsValue::from_str(&e.to_string()))
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
    fn to_js(d: &Detection, backend: &str, total_ms: f64) -> Result<JsValue, JsValue> {
        let o = serde_wasm_bindgen::to_value(&JsDetection::new(d, backend, total_ms))
            .map_err(|e| js_err(Error::backend("building the result object", e.to_string())))?;
        let map = Float32Array::from(d.map.values.as_slice());
        Reflect::set(&o, &JsValue::from_str("map"), &map)
            .map_err(|_| js_err(Error::Invalid("cannot set the result's map".into())))?;
        Ok(o)
    }

    /// Check a manifest's text before any chunk is fetched or cached: format, config, sizes,
    /// chunk lists and chunk paths ([`Manifest::from_json_str`]).
    #[wasm_bindgen(js_name = checkManifest)]
    pub fn check_manifest(text: &str) -> Result<(), JsValue> {
        Manifest::from_json_str(text).map(drop).map_err(js_err)
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
        ) -> Result<WebDetector, JsValue> {
            let m = Manifest::from_json_str(&manifest).map_err(js_err)?;
            let (dev, name) = match backend.as_str() {
                "cpu" => (device(BackendKind::Cpu).await.map_err(js_err)?, "cpu"),
                "webgpu" => (
                    device(BackendKind::Wgpu).await.map_err(|e| {
                        js_err(Error::BackendUnavailable(format!(
                            "WebGPU is not available here: {e}"
                        )))
                    })?,
                    "webgpu",
                ),
                "auto" => match device(BackendKind::Wgpu).await {
                    Ok(d) => (d, "webgpu"),
                    Err(_) => (device(BackendKind::Cpu).await.map_err(js_err)?, "cpu"),
                },
                other => {
                    return Err(js_err(Error::Invalid(format!(
                        "backend must be webgpu, cpu or auto, not {other:?}"
                    ))));
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
        pub fn set_threshold(&self, threshold: f64) -> Result<(), JsValue> {
            self.inner.set_threshold(threshold).map_err(js_err)
        }

        /// Detect on an encoded image file (PNG, JPEG, BMP, TIFF, WebP), decoded here with the
        /// same checks as natively (size limits read from the header first).
        #[wasm_bindgen(js_name = detectEncoded)]
        pub fn detect_encoded(&self, bytes: Vec<u8>) -> Promise {
            match decode_image(&bytes) {
                Ok(img) => self.run(img),
                Err(e) => Promise::reject(&js_err(e)),
            }
        }

        /// Detect on RGBA pixels (`width × height × 4` bytes, as `ImageData` holds them).
        #[wasm_bindgen(js_name = detectRgba)]
        pub fn detect_rgba(&self, rgba: Vec<u8>, width: u32, height: u32) -> Promise {
            match rgba_image(width, height, rgba) {
                Ok(img) => self.run(img),
                Err(e) => Promise::reject(&js_err(e)),
            }
        }

        /// Few-shot mode: build a reference memory from known-good images and use it from now
        /// on. `images` holds, per image, a `Uint8Array` (an encoded file) or an
        /// `{ rgba, width, height }` object; `names` names each. An image that cannot be read
        /// is named in `skipped` and left out; none readable is an error. `weight` is λ.
        /// Resolves to the memory's description ([`ReferenceInfo`]).
        #[wasm_bindgen(js_name = setReference)]
        pub fn set_reference(
            &self,
            images: js_sys::Array,
            names: Vec<String>,
            weight: f64,
        ) -> Promise {
            let fusion = FewShot {
                weight,
                ..FewShot::default()
            };
            if let Err(e) = fusion.validate() {
                return Promise::reject(&js_err(e));
            }
            if names.len() as u32 != images.length() {
                return Promise::reject(&js_err(Error::Invalid(
                    "one name per reference image".into(),
                )));
            }
            let (mut decoded, mut sources, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
            for (item, name) in images.iter().zip(names) {
                match reference_image(&item) {
                    Ok((image, sha256)) => {
                        decoded.push(image);
                        sources.push(ReferenceImage { name, sha256 });
                    }
                    Err(error) => skipped.push(SkippedImage { name, error }),
                }
            }
            let detector = self.inner.clone();
            future_to_promise(async move {
                if decoded.is_empty() {
                    let why = skipped
                        .iter()
                        .map(|s| format!("{}: {}", s.name, s.error))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(js_err(Error::Image(format!(
                        "no reference image could be read{}{why}",
                        if why.is_empty() { "" } else { ": " }
                    ))));
                }
                let memory = detector
                    .build_memory_async(&decoded, sources, MemoryOptions::default())
                    .await
                    .map_err(js_err)?;
                detector.set_memory(memory, fusion).map_err(js_err)?;
                reference_info(&detector, skipped)
            })
        }

        /// The memory in force ([`ReferenceInfo`]), or `null` in zero-shot mode.
        #[wasm_bindgen(js_name = referenceInfo)]
        pub fn reference_info(&self) -> Result<JsValue, JsValue> {
            reference_info(&self.inner, Vec::new())
        }

        /// Back to zero-shot detection.
        #[wasm_bindgen(js_name = clearReference)]
        pub fn clear_reference(&self) {
            self.inner.clear_memory();
        }

        /// λ of the memory in force, in [0, 1].
        #[wasm_bindgen(js_name = setFewShotWeight)]
        pub fn set_few_shot_weight(&self, weight: f64) -> Result<(), JsValue> {
            self.inner
                .set_few_shot(FewShot {
                    weight,
                    ..FewShot::default()
                })
                .map_err(js_err)
        }

        /// The memory in force as a memory file's bytes (the format `kanoclip reference build`
        /// writes), for an app to keep, e.g. in IndexedDB.
        #[wasm_bindgen(js_name = exportReference)]
        pub fn export_reference(&self) -> Result<Vec<u8>, JsValue> {
            let (memory, _) = self.inner.memory().ok_or_else(|| {
                js_err(Error::Invalid(
                    "there is no reference memory to export".into(),
                ))
            })?;
            memory.to_bytes().map_err(js_err)
        }

        /// Use a memory file's bytes (from [`Self::export_reference`] or `kanoclip reference
        /// build`) with λ `weight`. A memory for another model is refused.
        #[wasm_bindgen(js_name = importReference)]
        pub fn import_reference(&self, bytes: Vec<u8>, weight: f64) -> Result<JsValue, JsValue> {
            let fusion = FewShot {
                weight,
                ..FewShot::default()
            };
            let memory =
                ReferenceMemory::from_bytes(&bytes, &self.inner.device()).map_err(js_err)?;
            self.inner.set_memory(memory, fusion).map_err(js_err)?;
            reference_info(&self.inner, Vec::new())
        }

        /// Mutual scoring (spec §11): an empty group with λ `weight` (at most `group`
        /// images; the package splits larger sets evenly). Add images one at a time, then
        /// `finish`.
        #[wasm_bindgen(js_name = beginGroup)]
        pub fn begin_group(&self, weight: f64, group: usize) -> Result<WebGroup, JsValue> {
            let mutual = Mutual { weight, group };
            let scorer = GroupScorer::new(self.inner.clone(), &mutual, false).map_err(js_err)?;
            Ok(WebGroup {
                scorer: Some(scorer),
                limit: group,
                backend: self.backend.clone(),
            })
        }

        fn run(&self, image: DynamicImage) -> Promise {
            let detector = self.inner.clone();
            let backend = self.backend.clone();
            future_to_promise(async move {
                let t0 = web_time::Instant::now();
                let mut found = detector
                    .detect_batch_async(std::slice::from_ref(&image))
                    .await
                    .map_err(js_err)?;
                let d = found
                    .pop()
                    .ok_or_else(|| js_err(Error::Invalid("the batch gave no result".into())))?;
                let total = t0.elapsed().as_secs_f64() * 1e3;
                to_js(&d, &backend, total)
            })
        }
    }

    /// A group being filled ([`WebDetector::begin_group`]): each image's forward pass is
    /// queued as it is added, and only its tokens stay.
    #[wasm_bindgen]
    pub struct WebGroup {
        /// `None` once finished.
        scorer: Option<GroupScorer<Rc<Detector>>>,
        limit: usize,
        backend: String,
    }

    #[wasm_bindgen]
    impl WebGroup {
        /// Add an encoded image file. A file that cannot be read throws and is left out;
        /// the group goes on.
        #[wasm_bindgen(js_name = addEncoded)]
        pub fn add_encoded(&mut self, bytes: Vec<u8>) -> Result<(), JsValue> {
            let image = decode_image(&bytes).map_err(js_err)?;
            self.add(image)
        }

        /// Add RGBA pixels (`width × height × 4` bytes).
        #[wasm_bindgen(js_name = addRgba)]
        pub fn add_rgba(&mut self, rgba: Vec<u8>, width: u32, height: u32) -> Result<(), JsValue> {
            let image = rgba_image(width, height, rgba).map_err(js_err)?;
            self.add(image)
        }

        fn add(&mut self, image: DynamicImage) -> Result<(), JsValue> {
            let limit = self.limit;
            let scorer = self.scorer.as_mut().ok_or_else(finished)?;
            if scorer.len() >= limit {
                return Err(js_err(Error::Invalid(format!(
                    "the group already holds its {limit} images"
                ))));
            }
            scorer.add(std::slice::from_ref(&image)).map_err(js_err)
        }

        /// Score the images added, in order: an array of result objects, each with
        /// `mutual` ([`JsGroupInfo`]) saying how it was scored.
        pub fn finish(&mut self) -> Promise {
            let Some(scorer) = self.scorer.take() else {
                return Promise::reject(&finished());
            };
            let backend = self.backend.clone();
            future_to_promise(async move {
                let t0 = web_time::Instant::now();
                let size = scorer.len();
                let found = scorer.finish_async().await.map_err(js_err)?;
                let per_image = t0.elapsed().as_secs_f64() * 1e3 / size.max(1) as f64;
                let out = js_sys::Array::new();
                for (d, scored) in &found {
                    let o = to_js(d, &backend, per_image)?;
                    let info = serde_wasm_bindgen::to_value(&JsGroupInfo::new(scored, size))
                        .map_err(|e| {
                            js_err(Error::backend("building the group info", e.to_string()))
                        })?;
                    Reflect::set(&o, &JsValue::from_str("mutual"), &info).map_err(|_| {
                        js_err(Error::Invalid("cannot set the result's group".into()))
                    })?;
                    out.push(&o);
                }
                Ok(out.into())
            })
        }
    }

    fn finished() -> JsValue {
        js_err(Error::Invalid("the group was already scored".into()))
    }

    fn reference_info(detector: &Detector, skipped: Vec<SkippedImage>) -> Result<JsValue, JsValue> {
        let Some((memory, fusion)) = detector.memory() else {
            return Ok(JsValue::NULL);
        };
        let m = memory.meta();
        let info = ReferenceInfo {
            count: m.images.len(),
            names: m.images.iter().map(|i| i.name.clone()).collect(),
            bytes: m.bytes(),
            rows: m.rows.clone(),
            weight: fusion.weight,
            skipped,
        };
        serde_wasm_bindgen::to_value(&info).map_err(|e| {
            js_err(Error::backend(
                "describing the reference memory",
                e.to_string(),
            ))
        })
    }

    /// One reference: a `Uint8Array` file or an `{ rgba, width, height }` object, with the
    /// SHA-256 of its bytes.
    fn reference_image(item: &JsValue) -> Result<(DynamicImage, String), String> {
        if let Some(bytes) = item.dyn_ref::<js_sys::Uint8Array>() {
            let bytes = bytes.to_vec();
            let sha = sha256_hex(&bytes);
            return decode_image(&bytes)
                .map(|i| (i, sha))
                .map_err(|e| e.to_string());
        }
        let field = |k: &str| Reflect::get(item, &JsValue::from_str(k)).ok();
        let rgba = field("rgba")
            .and_then(|v| v.dyn_into::<js_sys::Uint8Array>().ok())
            .ok_or("a reference is neither an encoded file nor RGBA pixels")?
            .to_vec();
        let dim = |k: &str| {
            field(k)
                .and_then(|v| v.as_f64())
                .filter(|v| v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(v))
                .map(|v| v as u32)
                .ok_or(format!("the reference's {k} is not a whole number"))
        };
        let (width, height) = (dim("width")?, dim("height")?);
        let sha = sha256_hex(&rgba);
        rgba_image(width, height, rgba)
            .map(|i| (i, sha))
            .map_err(|e| e.to_string())
    }

    /// The calibration rule (`max(mean + 3·std, max + 1e-4)` over normal images' scores): the
    /// threshold and the statistics it came from ([`JsCalibration`]).
    #[wasm_bindgen]
    pub fn calibrate(scores: Vec<f64>) -> Result<JsValue, JsValue> {
        let c = calibration_rule(&scores).map_err(js_err)?;
        serde_wasm_bindgen::to_value(&JsCalibration::from(&c)).map_err(|e| {
            js_err(Error::backend(
                "building the calibration object",
                e.to_string(),
            ))
        })
    }

    /// Panics on purpose: the package's tests check that a panic does not leave it unusable.
    #[wasm_bindgen(js_name = debugPanic)]
    pub fn debug_panic() {
        panic!("deliberate panic (kanoclip test hook)");
    }

    #[cfg(feature = "threads")]
    pub use pool::*;

    /// rayon's pool on Web Workers, for the threaded module (feature `threads`).
    ///
    /// Hand-written rather than wasm-bindgen-rayon, whose worker script finds the module by
    /// a directory import (`../../..`) that only a bundler resolves, or by re-fetching its
    /// own source as a `blob:`, and which has no way to report a thread that traps. Here
    /// the package's own `pool.js` (beside its `worker.js`, found the same way by every
    /// bundler) starts each thread and reports a trap to the page, which then restarts the
    /// engine; this side is the channel that hands each thread its rayon `ThreadBuilder`.
    ///
    /// The engine's own thread is thread 0 of the pool (rayon's `use_current_thread`): the
    /// rayon calls of a detect start on it as on any pool thread, their jobs are pushed
    /// on its own deque and stolen by the others, and it works while it waits. (Calling
    /// into a pool from outside, each of the thousands of parallel ops in a detect crossed
    /// threads twice, and one pool thread was as slow as the single-threaded module plus
    /// 10 %.) So `threads` threads take `threads - 1` workers: the engine calls
    /// [`pool_prepare`], starts them (each instantiates the module on the shared memory,
    /// says it is ready and waits in [`pool_worker_run`] for its thread), then calls
    /// [`pool_build`], which hands the threads out and returns once all of them run.
    #[cfg(feature = "threads")]
    mod pool {
        use std::sync::{Mutex, mpsc};

        use rayon::{ThreadBuilder, ThreadPoolBuilder};
        use wasm_bindgen::prelude::*;

        /// The builders waiting for a worker, and where [`pool_build`] sends them.
        static WAITING: Mutex<Option<mpsc::Receiver<ThreadBuilder>>> = Mutex::new(None);
        static SEND: Mutex<Option<mpsc::Sender<ThreadBuilder>>> = Mutex::new(None);

        fn poisoned<T>(_: T) -> JsValue {
            JsValue::from_str("the pool's lock is poisoned")
        }

        /// Open the channel the pool's threads will be handed through.
        #[wasm_bindgen(js_name = poolPrepare)]
        pub fn pool_prepare() -> Result<(), JsValue> {
            let (tx, rx) = mpsc::channel();
            *WAITING.lock().map_err(poisoned)? = Some(rx);
            *SEND.lock().map_err(poisoned)? = Some(tx);
            Ok(())
        }

        /// Build rayon's global pool with `threads` threads: the calling thread, and one for
        /// each of the `threads - 1` workers waiting in [`pool_worker_run`]. Once per module
        /// instance.
        #[wasm_bindgen(js_name = poolBuild)]
        pub fn pool_build(threads: usize) -> Result<(), JsValue> {
            if threads == 0 {
                return Err(JsValue::from_str("the pool needs at least one thread"));
            }
            let tx = SEND
                .lock()
                .map_err(poisoned)?
                .take()
                .ok_or_else(|| JsValue::from_str("poolPrepare has not run"))?;
            ThreadPoolBuilder::new()
                .num_threads(threads)
                .use_current_thread()
                .spawn_handler(move |thread| {
                    tx.send(thread)
                        .map_err(|_| std::io::Error::other("no pool thread is waiting"))
                })
                .build_global()
                .map_err(|e| JsValue::from_str(&format!("starting the thread pool: {e}")))
        }

        /// Run one pool thread until the pool ends (it never does): a worker's whole life.
        #[wasm_bindgen(js_name = poolWorkerRun)]
        pub fn pool_worker_run() -> Result<(), JsValue> {
            let thread = {
                let waiting = WAITING.lock().map_err(poisoned)?;
                let rx = waiting
                    .as_ref()
                    .ok_or_else(|| JsValue::from_str("poolPrepare has not run"))?;
                rx.recv()
                    .map_err(|_| JsValue::from_str("the pool has no thread left to run"))?
            };
            thread.run();
            Ok(())
        }

        /// Panics on a pool thread other than the caller's on purpose: the package's tests
        /// check that the page learns of it, the call rejects and the next call starts a
        /// fresh engine. (This thread then waits for the other forever, as a detect would.)
        #[wasm_bindgen(js_name = debugPanicInPool)]
        pub fn debug_panic_in_pool() -> Result<(), JsValue> {
            if rayon::current_num_threads() < 2 {
                return Err(JsValue::from_str("the pool has no other thread"));
            }
            rayon::broadcast(|ctx| {
                if ctx.index() != 0 {
                    panic!("deliberate panic on a pool thread (kanoclip test hook)");
                }
            });
            Ok(())
        }
    }
}
