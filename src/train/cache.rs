//! The on-disk cache of frozen CLIP features. CLIP never trains, so an image's features
//! (the global feature and every tap) are the same in every epoch and every run with the
//! same backbone and settings: training computes them once and reads them back after.
//!
//! - Key: SHA-256 of the backbone id (sizes and weight fingerprint), the input size,
//!   `vv_from`, the taps, and the SHA-256 of the image file's bytes. Anything else is a
//!   different entry, so a stale entry is never read.
//! - Entry: one safetensors file `<key>.safetensors` (f32, so cached and uncached training
//!   are bit-identical), written atomically. An unreadable or mis-shaped entry is a miss
//!   and is rewritten.
//! - Size: `(1 + taps · (1 + grid²)) · embed_dim · 4` bytes an image: 1.6 MB for ViT-B/16
//!   at 224 (2.8 GB for MVTec AD's 1725 test images), 16.8 MB for ViT-L/14 at 518.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::atomic;
use crate::detect::DetectorConfig;
use crate::error::{Error, Result};
use crate::head::BackboneId;

/// One image's features: `global` `[D]`, and per tap `[tokens · D]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// The global feature `[D]`.
    pub global: Vec<f32>,
    /// Each tap's tokens `[tokens × D]`, row-major.
    pub taps: Vec<Vec<f32>>,
}

/// The on-disk cache of frozen CLIP features.
pub struct FeatureCache {
    dir: PathBuf,
    prefix: Vec<u8>,
    /// `(tokens, D)` of every tap, to check entries.
    tap_shape: (usize, usize),
    taps: usize,
}

impl FeatureCache {
    /// A cache in `dir` for this backbone and these detector settings.
    pub fn new(
        dir: impl AsRef<Path>,
        backbone: &BackboneId,
        detector: &DetectorConfig,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let settings = serde_json::json!({
            "backbone": backbone,
            "input_size": detector.input_size,
            "vv_from": detector.vv_from,
            "taps": detector.taps,
        });
        let grid = detector.input_size / backbone.patch_size;
        Ok(FeatureCache {
            dir,
            prefix: Sha256::digest(settings.to_string().as_bytes()).to_vec(),
            tap_shape: (1 + grid * grid, backbone.embed_dim),
            taps: detector.taps.len(),
        })
    }

    /// The entry key of an image file's bytes.
    pub fn key(&self, image_file: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(&self.prefix);
        h.update(Sha256::digest(image_file));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.safetensors"))
    }

    /// The cached features, or `None` (absent, unreadable, of the wrong shape or not finite).
    pub fn get(&self, key: &str) -> Option<Features> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let st = SafeTensors::deserialize(&bytes).ok()?;
        let read = |name: &str, len: usize| -> Option<Vec<f32>> {
            let t = st.tensor(name).ok()?;
            if t.dtype() != Dtype::F32 || t.data().len() != len * 4 {
                return None;
            }
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            // A corrupt entry (NaN, ±inf) is a miss: the features are computed again.
            values.iter().all(|v| v.is_finite()).then_some(values)
        };
        let (tokens, d) = self.tap_shape;
        let global = read("global", d)?;
        let taps = (0..self.taps)
            .map(|i| read(&format!("tap.{i}"), tokens * d))
            .collect::<Option<Vec<_>>>()?;
        Some(Features { global, taps })
    }

    /// Store an entry (atomically).
    pub fn put(&self, key: &str, f: &Features) -> Result<()> {
        let (tokens, d) = self.tap_shape;
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut named = vec![("global".to_string(), vec![d], le(&f.global))];
        for (i, t) in f.taps.iter().enumerate() {
            named.push((format!("tap.{i}"), vec![tokens, d], le(t)));
        }
        let views = named
            .iter()
            .map(|(n, shape, b)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Invalid(format!("feature cache: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let data = safetensors::serialize(views, None)
            .map_err(|e| Error::Invalid(format!("feature cache: {e}")))?;
        atomic::write(&self.path(key), &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A corrupt entry — cut short, of another shape, or holding NaN or infinity — is a
    /// miss (the features are computed again), never features that poison training.
    #[test]
    fn corrupt_entries_are_misses() {
        let cfg = crate::clip::ClipConfig::from_file(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tiny_quickgelu_config.json"),
        )
        .unwrap();
        let detector = DetectorConfig::for_clip(&cfg);
        let backbone = BackboneId {
            embed_dim: cfg.embed_dim,
            vision_width: cfg.vision.tower.width,
            vision_layers: cfg.vision.tower.layers,
            patch_size: cfg.vision.patch_size,
            text_width: cfg.text.tower.width,
            text_layers: cfg.text.tower.layers,
            fingerprint: "test".into(),
        };
        let (d, grid) = (cfg.embed_dim, detector.input_size / cfg.vision.patch_size);
        let dir = std::env::temp_dir().join(format!("kanoclip-cache-{}", std::process::id()));
        let cache = FeatureCache::new(&dir, &backbone, &detector).unwrap();
        let tokens = 1 + grid * grid;
        let good = Features {
            global: vec![0.5; d],
            taps: vec![vec![0.25; tokens * d]; detector.taps.len()],
        };
        let key = cache.key(b"image bytes");
        cache.put(&key, &good).unwrap();
        assert_eq!(cache.get(&key).unwrap().taps, good.taps);
        for bad in [f32::NAN, f32::INFINITY] {
            let mut f = good.clone();
            f.taps[1][3] = bad;
            cache.put(&key, &f).unwrap();
            assert!(cache.get(&key).is_none(), "{bad} was returned");
        }
        let bytes = std::fs::read(cache.path(&key)).unwrap();
        std::fs::write(cache.path(&key), &bytes[..bytes.len() / 2]).unwrap();
        assert!(cache.get(&key).is_none());
        std::fs::remove_dir_all(dir).ok();
    }
}
