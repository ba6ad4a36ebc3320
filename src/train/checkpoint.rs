//! The resume checkpoint `HEAD.ckpt`: one safetensors file (written atomically) holding the
//! head file's bytes, Burn's Adam state (a Burnpack record, as `ModuleOptimizer::into_bytes`
//! writes it) and, in the metadata, where training stopped and the settings that must not
//! change on resume.
//!
//! Burn keys optimiser state by parameter id, and ids are fresh whenever a head is loaded,
//! so the ids are saved in visiting order and given back to the loaded head
//! ([`param_ids`], [`with_param_ids`]): the two heads have the same structure, so the
//! orders match.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::head::Head;

/// The `format` of a checkpoint file.
pub const FORMAT: &str = "kanoclip-checkpoint/1";

/// Where training stands and what it was started with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The epoch to continue in (0-based) and the first step of it still to run.
    pub epoch: usize,
    /// See `epoch`.
    pub step: usize,
    /// The run's seed.
    pub seed: u64,
    /// The run's batch size.
    pub batch: usize,
    /// Training images, to refuse a resume on another data set.
    pub images: usize,
}

/// The checkpoint, decoded.
pub struct Checkpoint {
    /// Where it stopped.
    pub progress: Progress,
    /// The head file's bytes.
    pub head: Vec<u8>,
    /// Adam's state (Burnpack record).
    pub optimizer: Vec<u8>,
    /// The head's parameter ids in visiting order.
    pub param_ids: Vec<u64>,
}

struct Ids(Vec<u64>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.id.val());
    }
}

struct SetIds(std::vec::IntoIter<u64>);

impl ModuleMapper for SetIds {
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if let Some(id) = self.0.next() {
            param.id = ParamId::from(id);
        }
        param
    }
}

/// The head's parameter ids in visiting order.
pub fn param_ids(head: &Head) -> Vec<u64> {
    let mut v = Ids(Vec::new());
    head.visit(&mut v);
    v.0
}

/// Give `head` the ids `ids` (as [`param_ids`] listed them).
pub fn with_param_ids(head: Head, ids: Vec<u64>) -> Result<Head> {
    if ids.len() != param_ids(&head).len() {
        return Err(Error::Head(format!(
            "the checkpoint lists {} parameters, the head has {}",
            ids.len(),
            param_ids(&head).len()
        )));
    }
    Ok(head.map(&mut SetIds(ids.into_iter())))
}

impl Checkpoint {
    /// The checkpoint file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let metadata: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("progress".to_string(), json(&self.progress)?),
            ("param_ids".to_string(), json(&self.param_ids)?),
        ]
        .into();
        let views = [("head", &self.head), ("optimizer", &self.optimizer)]
            .into_iter()
            .map(|(name, b)| {
                TensorView::new(Dtype::U8, vec![b.len()], b)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| Error::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Decode a checkpoint file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::Invalid(format!("not a kanoclip checkpoint: {m}"));
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("format is not {FORMAT}")));
        }
        let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no {k}")));
        let progress = serde_json::from_str(field("progress")?).map_err(|e| bad(e.to_string()))?;
        let param_ids =
            serde_json::from_str(field("param_ids")?).map_err(|e| bad(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let raw = |name: &str| -> Result<Vec<u8>> {
            let t = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            Ok(t.data().to_vec())
        };
        Ok(Checkpoint {
            progress,
            head: raw("head")?,
            optimizer: raw("optimizer")?,
            param_ids,
        })
    }
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(Error::from)
}
