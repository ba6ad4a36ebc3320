//! CLIP model configuration, read from an open_clip model-config JSON (bare, as in
//! open_clip's `model_configs/`, or wrapped in `{"model_cfg": …}` as on the hub) or from a
//! Hugging Face `CLIPModel` `config.json`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The MLP activation of every residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI's original CLIP weights.
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

/// One transformer tower's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TowerConfig {
    /// Residual width.
    pub width: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp_width: usize,
    /// LayerNorm epsilon.
    pub ln_eps: f64,
}

/// The vision tower: a ViT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// The checkpoint's input side (its positional embedding's grid times the patch size).
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// The transformer.
    pub tower: TowerConfig,
}

/// The text tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Tokens per text, padding included.
    pub context_length: usize,
    /// Size of the token embedding table.
    pub vocab_size: usize,
    /// The transformer.
    pub tower: TowerConfig,
}

/// A whole CLIP model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// `D`, the joint embedding size.
    pub embed_dim: usize,
    /// QuickGELU (OpenAI) or exact GELU.
    pub activation: Activation,
    /// The image tower.
    pub vision: VisionConfig,
    /// The text tower.
    pub text: TextConfig,
}

/// Sizes above this are refused as impossible rather than allocated.
pub const MAX_DIM: usize = 1 << 16;

impl ClipConfig {
    /// Parse a config from JSON text, detecting open_clip or Hugging Face layout.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("not JSON: {e}")))?;
        let Value::Object(root) = value else {
            return Err(Error::Config("expected a JSON object".into()));
        };
        let config = if root.contains_key("vision_config") {
            from_hf(&root)?
        } else if let Some(inner) = root.get("model_cfg") {
            for key in root.keys() {
                if !matches!(key.as_str(), "model_cfg" | "preprocess_cfg") {
                    return Err(Error::Config(format!(
                        "unknown field `{key}` beside model_cfg"
                    )));
                }
            }
            match inner {
                Value::Object(inner) => from_open_clip(inner)?,
                _ => return Err(Error::Config("`model_cfg` must be an object".into())),
            }
        } else {
            from_open_clip(&root)?
        };
        config.validate()?;
        Ok(config)
    }

    /// Read and parse a config file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Config("not a JSON text file".into()).in_file(path))?;
        Self::from_json_str(&text).map_err(|e| e.in_file(path))
    }

    /// Side of the patch grid at the checkpoint's own image size.
    pub fn grid(&self) -> usize {
        self.vision
            .image_size
            .checked_div(self.vision.patch_size)
            .unwrap_or(0)
    }

    /// Check that the numbers describe a model that can exist.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        for (name, tower) in [("vision", &self.vision.tower), ("text", &self.text.tower)] {
            for (field, v) in [
                ("width", tower.width),
                ("layers", tower.layers),
                ("heads", tower.heads),
                ("mlp width", tower.mlp_width),
            ] {
                if v == 0 || v > MAX_DIM {
                    return bad(format!("{name} {field} {v} is out of range 1..={MAX_DIM}"));
                }
            }
            if tower.width % tower.heads != 0 {
                return bad(format!(
                    "{name} width {} is not divisible by its {} heads",
                    tower.width, tower.heads
                ));
            }
            if !(tower.ln_eps > 0.0 && tower.ln_eps < 1.0) {
                return bad(format!(
                    "{name} layer-norm eps {} is not in (0, 1)",
                    tower.ln_eps
                ));
            }
        }
        let v = &self.vision;
        if v.patch_size == 0 || v.image_size == 0 || v.image_size > MAX_DIM {
            return bad(format!(
                "image size {} / patch size {} are out of range",
                v.image_size, v.patch_size
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!(
                "patch size {} does not divide the image size {}",
                v.patch_size, v.image_size
            ));
        }
        let t = &self.text;
        if t.context_length < 3 || t.context_length > MAX_DIM {
            return bad(format!(
                "context length {} is out of range",
                t.context_length
            ));
        }
        if t.vocab_size < 2 || t.vocab_size > 1 << 20 {
            return bad(format!("vocab size {} is out of range", t.vocab_size));
        }
        if self.embed_dim == 0 || self.embed_dim > MAX_DIM {
            return bad(format!("embed_dim {} is out of range", self.embed_dim));
        }
        let params = self.parameter_count(false);
        if params > MAX_PARAMETERS {
            return bad(format!(
                "the config describes {params} parameters ({} GB as f32), over kanoclip's \
                 limit of {MAX_PARAMETERS}",
                params * 4 / 1_000_000_000
            ));
        }
        Ok(())
    }

    /// The parameters the config describes: the image tower, and the text tower unless
    /// `vision_only`. Known before any tensor is made, so a config can be checked against
    /// the weights file and the memory budget first.
    pub fn parameter_count(&self, vision_only: bool) -> u64 {
        let u = |v: usize| v as u64;
        // ln_1, in_proj, out_proj, ln_2, c_fc, c_proj.
        let blocks = |t: &TowerConfig| {
            let (w, m) = (u(t.width), u(t.mlp_width));
            u(t.layers).saturating_mul(4 * w * w + 2 * m * w + 9 * w + m)
        };
        let (v, t, d) = (&self.vision, &self.text, u(self.embed_dim));
        let (vw, p, g) = (u(v.tower.width), u(v.patch_size), u(self.grid()));
        let vision = (vw * 3 * p * p + vw + (g * g + 1) * vw + 4 * vw + vw * d)
            .saturating_add(blocks(&v.tower));
        if vision_only {
            return vision;
        }
        let tw = u(t.tower.width);
        let text = (u(t.vocab_size) * tw + u(t.context_length) * tw + 2 * tw + tw * d + 1)
            .saturating_add(blocks(&t.tower));
        vision.saturating_add(text)
    }
}

/// The largest model kanoclip loads: 2 billion parameters (8 GB as f32). ViT-L/14 has 428
/// million; a config over this is refused before anything is allocated.
pub const MAX_PARAMETERS: u64 = 2_000_000_000;

/// Reads typed fields from a JSON object and remembers which keys were used.
struct Fields<'a> {
    what: &'static str,
    map: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(what: &'static str, map: &'a Map<String, Value>) -> Self {
        Self {
            what,
            map,
            seen: Vec::new(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize(&mut self, key: &'static str, default: Option<usize>) -> Result<usize> {
        let what = self.what;
        match self.get(key) {
            None => default.ok_or_else(|| Error::Config(format!("{what}.{key} is missing"))),
            Some(v) => as_usize(v).ok_or_else(|| {
                Error::Config(format!(
                    "{what}.{key} must be a non-negative integer, got {v}"
                ))
            }),
        }
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        let what = self.what;
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| Error::Config(format!("{what}.{key} must be a number, got {v}"))),
        }
    }

    fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        let what = self.what;
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| {
                Error::Config(format!("{what}.{key} must be true or false, got {v}"))
            }),
        }
    }

    /// A field this implementation accepts only at the value that changes nothing.
    fn only(&mut self, key: &'static str, accepted: &[Value]) -> Result<()> {
        let what = self.what;
        match self.get(key) {
            Some(v) if !accepted.contains(v) => Err(Error::Config(format!(
                "{what}.{key} = {v} is not supported (supported: {})",
                accepted
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Mark keys that have no effect on inference (dropout, init scales...).
    fn ignore(&mut self, keys: &[&'static str]) {
        self.seen.extend_from_slice(keys);
    }

    /// Every key not read is an error: a typo must not silently fall back to a default.
    fn finish(self) -> Result<()> {
        let unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.seen.contains(&k.as_str()))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "unknown field(s) in {}: {}",
                self.what,
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn object<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a Map<String, Value>> {
    match v {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(Error::Config(format!("`{what}` must be an object"))),
        None => Err(Error::Config(format!("`{what}` is missing"))),
    }
}

/// open_clip's `CLIPVisionCfg` / `CLIPTextCfg` defaults are used for absent fields.
fn from_open_clip(root: &Map<String, Value>) -> Result<ClipConfig> {
    use serde_json::json;
    let mut top = Fields::new("config", root);
    let embed_dim = top.usize("embed_dim", None)?;
    let quick_gelu = top.bool("quick_gelu", false)?;
    let vision_map = object(top.get("vision_cfg"), "vision_cfg")?;
    let text_map = object(top.get("text_cfg"), "text_cfg")?;
    top.only("custom_text", &[json!(false)])?;
    top.only("init_logit_bias", &[])?;
    top.ignore(&["init_logit_scale", "cast_dtype"]);
    top.finish()?;
    Ok(ClipConfig {
        embed_dim,
        activation: if quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        },
        vision: open_clip_vision(vision_map)?,
        text: open_clip_text(text_map)?,
    })
}

/// open_clip's `vision_cfg`, with its defaults; options kanoclip does not implement are
/// refused by name.
fn open_clip_vision(map: &Map<String, Value>) -> Result<VisionConfig> {
    use serde_json::json;
    let mut v = Fields::new("vision_cfg", map);
    let image_size = match v.get("image_size") {
        None => 224,
        Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => as_usize(&a[0])
            .ok_or_else(|| Error::Config("vision_cfg.image_size must be integers".into()))?,
        Some(Value::Array(_)) => {
            return Err(Error::Config(
                "vision_cfg.image_size: only square inputs are supported".into(),
            ));
        }
        Some(x) => as_usize(x).ok_or_else(|| {
            Error::Config(format!(
                "vision_cfg.image_size must be a non-negative integer, got {x}"
            ))
        })?,
    };
    let patch_size = v.usize("patch_size", Some(16))?;
    let width = v.usize("width", Some(768))?;
    let layers = v.usize("layers", Some(12))?;
    let head_width = v.usize("head_width", Some(64))?;
    let mlp_ratio = v.f64("mlp_ratio", 4.0)?;
    v.only("ls_init_value", &[])?;
    v.only("attentional_pool", &[json!(false)])?;
    v.only("no_ln_pre", &[json!(false)])?;
    v.only("final_ln_after_pool", &[json!(false)])?;
    v.only("pool_type", &[json!("tok")])?;
    v.only("global_average_pool", &[json!(false)])?;
    v.only("pos_embed_type", &[json!("learnable")])?;
    v.only("timm_model_name", &[])?;
    v.ignore(&["patch_dropout", "output_tokens"]);
    v.finish()?;
    if head_width == 0 || width % head_width != 0 {
        return Err(Error::Config(format!(
            "vision_cfg.width {width} is not divisible by head_width {head_width}"
        )));
    }
    Ok(VisionConfig {
        image_size,
        patch_size,
        tower: TowerConfig {
            width,
            layers,
            heads: width / head_width,
            mlp_width: mlp_width(width, mlp_ratio)?,
            ln_eps: 1e-5,
        },
    })
}

/// open_clip's `text_cfg`, with its defaults.
fn open_clip_text(map: &Map<String, Value>) -> Result<TextConfig> {
    use serde_json::json;
    let mut t = Fields::new("text_cfg", map);
    let context_length = t.usize("context_length", Some(77))?;
    let vocab_size = t.usize("vocab_size", Some(49408))?;
    let width = t.usize("width", Some(512))?;
    let heads = t.usize("heads", Some(8))?;
    let layers = t.usize("layers", Some(12))?;
    let mlp_ratio = t.f64("mlp_ratio", 4.0)?;
    t.only("ls_init_value", &[])?;
    t.only("hf_model_name", &[])?;
    t.only("embed_cls", &[json!(false)])?;
    t.only("no_causal_mask", &[json!(false)])?;
    t.only("pool_type", &[json!("argmax")])?;
    t.only("proj_bias", &[json!(false)])?;
    t.only("pad_id", &[json!(0)])?;
    t.ignore(&["output_tokens", "tokenizer_kwargs"]);
    t.finish()?;
    Ok(TextConfig {
        context_length,
        vocab_size,
        tower: TowerConfig {
            width,
            layers,
            heads,
            mlp_width: mlp_width(width, mlp_ratio)?,
            ln_eps: 1e-5,
        },
    })
}

fn mlp_width(width: usize, ratio: f64) -> Result<usize> {
    if !(ratio.is_finite() && ratio > 0.0 && ratio <= 64.0) {
        return Err(Error::Config(format!(
            "mlp_ratio {ratio} is out of range (0, 64]"
        )));
    }
    // open_clip: `mlp_width = int(width * mlp_ratio)`.
    Ok((width as f64 * ratio) as usize)
}

/// Hugging Face `CLIPConfig`. transformers writes many bookkeeping fields into `config.json`,
/// so unknown fields are not errors here; the fields that shape the model are all required.
fn from_hf(root: &Map<String, Value>) -> Result<ClipConfig> {
    let mut top = Fields::new("config", root);
    let embed_dim = top.usize("projection_dim", Some(512))?;
    let vision_map = object(top.get("vision_config"), "vision_config")?;
    let text_map = object(top.get("text_config"), "text_config")?;

    let mut v = Fields::new("vision_config", vision_map);
    let (vision_tower, vision_act) = hf_tower(&mut v, 768, 3072, 12, 12)?;
    let image_size = v.usize("image_size", Some(224))?;
    let patch_size = v.usize("patch_size", Some(32))?;
    let mut t = Fields::new("text_config", text_map);
    let (text_tower, text_act) = hf_tower(&mut t, 512, 2048, 8, 12)?;
    let context_length = t.usize("max_position_embeddings", Some(77))?;
    let vocab_size = t.usize("vocab_size", Some(49408))?;
    if vision_act != text_act {
        return Err(Error::Config(format!(
            "vision and text towers use different activations ({vision_act:?} and {text_act:?})"
        )));
    }
    Ok(ClipConfig {
        embed_dim,
        activation: vision_act,
        vision: VisionConfig {
            image_size,
            patch_size,
            tower: vision_tower,
        },
        text: TextConfig {
            context_length,
            vocab_size,
            tower: text_tower,
        },
    })
}

fn hf_tower(
    f: &mut Fields,
    width: usize,
    mlp: usize,
    heads: usize,
    layers: usize,
) -> Result<(TowerConfig, Activation)> {
    let tower = TowerConfig {
        width: f.usize("hidden_size", Some(width))?,
        mlp_width: f.usize("intermediate_size", Some(mlp))?,
        heads: f.usize("num_attention_heads", Some(heads))?,
        layers: f.usize("num_hidden_layers", Some(layers))?,
        ln_eps: f.f64("layer_norm_eps", 1e-5)?,
    };
    let act = match f
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("quick_gelu")
    {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        other => {
            return Err(Error::Config(format!(
                "{}.hidden_act `{other}` is not supported",
                f.what
            )));
        }
    };
    Ok((tower, act))
}
