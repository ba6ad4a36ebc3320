//! Knowledge generation (native, feature `train`): filling a knowledge base (spec §3) from
//! an OpenAI-compatible chat model. The knowledge base itself, and its built-in files,
//! are the head's (`crate::head::knowledge`).

pub mod fill;
pub mod llm;
