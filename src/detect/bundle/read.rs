//! Reading a bundle: its chunks reassembled and verified, and the detector it holds.

use burn::prelude::*;
use burn::tensor::TensorData;

use super::chunk::Chunk;
use super::manifest::{Manifest, Mode};
use crate::clip::vision::VisionTower;
use crate::detect::Detector;
use crate::detect::head_file::load_head;
use crate::error::{Error, Result};
use crate::tensor_io::sha256_hex;

/// The largest manifest read (a ViT-L/14 manifest is about 40 KB).
const MAX_MANIFEST: u64 = 1 << 24;

impl Manifest {
    /// One file of the bundle, reassembled from its chunks as `read` returns them; each
    /// chunk's size and SHA-256 and then the whole file's are verified before it is used.
    pub fn assemble(
        &self,
        name: &str,
        mut read: impl FnMut(&Chunk) -> Result<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.files.iter().find(|f| f.name == name) else {
            return Ok(None);
        };
        let mut whole = Vec::new();
        for c in &file.chunks {
            let bytes = read(c)?;
            if bytes.len() as u64 != c.size {
                return Err(Error::Integrity(format!(
                    "{}: {} bytes, the manifest says {}",
                    c.path,
                    bytes.len(),
                    c.size
                )));
            }
            let digest = sha256_hex(&bytes);
            if digest != c.sha256 {
                return Err(Error::Integrity(format!(
                    "{}: SHA-256 {digest} is not the manifest's {}",
                    c.path, c.sha256
                )));
            }
            whole.extend_from_slice(&bytes);
        }
        let digest = sha256_hex(&whole);
        if digest != file.sha256 {
            return Err(Error::Integrity(format!(
                "{name}: SHA-256 {digest} is not the manifest's {}",
                file.sha256
            )));
        }
        Ok(Some(whole))
    }

    /// Read a bundle from a folder natively: the manifest, then every chunk, each checked
    /// (size on disk first, then SHA-256) before it is used. Returns the manifest and the
    /// vision and head files.
    pub fn read(manifest: &std::path::Path) -> Result<(Self, Vec<u8>, Option<Vec<u8>>)> {
        let meta = std::fs::metadata(manifest).map_err(|e| Error::io(manifest, e))?;
        if meta.len() > MAX_MANIFEST {
            return Err(Error::Config(format!(
                "{}: {} bytes is too large for a manifest",
                manifest.display(),
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
        let m = Self::from_json_str(&text).map_err(|e| e.in_file(manifest))?;
        let dir = manifest.parent().unwrap_or(std::path::Path::new("."));
        let read = |c: &Chunk| {
            let path = dir.join(&c.path);
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
            if len != c.size {
                return Err(Error::Integrity(format!(
                    "{}: {len} bytes, the manifest says {}",
                    path.display(),
                    c.size
                )));
            }
            std::fs::read(&path).map_err(|e| Error::io(&path, e))
        };
        let vision = m
            .assemble("vision", read)?
            .ok_or_else(|| Error::Config("the bundle has no vision file".into()))?;
        let head = m.assemble("head", read)?;
        Ok((m, vision, head))
    }

    /// The detector of this bundle, from the reassembled files.
    pub fn detector(
        &self,
        vision: &[u8],
        head: Option<&[u8]>,
        device: &Device,
    ) -> Result<Detector> {
        let (tower, fingerprint) = VisionTower::from_safetensors(&self.clip, vision, device)?;
        if fingerprint != self.backbone.fingerprint {
            return Err(Error::WeightsMismatch(vec![format!(
                "the image tower's weights ({fingerprint}) are not the manifest's ({})",
                self.backbone.fingerprint
            )]));
        }
        let head = match (self.mode, head) {
            (Mode::Trained, Some(bytes)) => {
                let (head, meta) =
                    load_head(bytes, &self.backbone, self.clip.text.context_length, device)?;
                if meta.detector.taps != self.detector.taps {
                    return Err(Error::Incompatible(
                        "the head's taps are not the manifest's".into(),
                    ));
                }
                Some(head)
            }
            (Mode::Trained, None) => {
                return Err(Error::Head("this bundle's head file is missing".into()));
            }
            (Mode::TrainingFree, _) => None,
        };
        let d = self.clip.embed_dim;
        let text =
            Tensor::<2>::from_data(TensorData::new(self.text_features.concat(), [2, d]), device);
        let mut config = self.detector.clone();
        config.threshold = self.threshold;
        Detector::from_parts(tower, self.backbone.clone(), head, config, text)
    }
}
