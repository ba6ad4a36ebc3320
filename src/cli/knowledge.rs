//! `kanoclip knowledge`: fill a knowledge base from an OpenAI-compatible chat endpoint.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::dataset::{Dataset, Format};
use crate::knowledge::fill::{Request, fill};
use crate::knowledge::llm::{ChatClient, ChatOptions};
use crate::{Error, Result};

#[derive(Args)]
pub struct KnowledgeArgs {
    /// Base URL of the endpoint (e.g. http://127.0.0.1:8080/v1) or its /chat/completions URL.
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    model: String,
    /// Also describe every training image (test split) with a vision model.
    #[arg(long, requires = "data")]
    vision: bool,
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Mvtec)]
    format: Format,
    /// The knowledge file to write; an existing one is resumed.
    #[arg(long)]
    out: PathBuf,
    /// The domain named in the questions and the file.
    #[arg(long, default_value = "industrial")]
    domain: String,
    /// Ask for the general texts again even if the file has them.
    #[arg(long)]
    force_general: bool,
    /// Environment variable holding the API key, if the endpoint needs one.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// Seconds for one request, answer included.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Attempts after the first for time-outs, 429/5xx and unusable answers.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Most requests a second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// First back-off wait in milliseconds (doubles on each retry).
    #[arg(long, default_value_t = 1000)]
    backoff_ms: u64,
}

pub fn run(args: KnowledgeArgs) -> Result<()> {
    let data = match &args.data {
        Some(d) => Some(Dataset::load(d, args.format)?),
        None => None,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let client = ChatClient::new(ChatOptions {
        endpoint: args.endpoint.clone(),
        model: args.model.clone(),
        api_key: std::env::var(&args.api_key_env)
            .ok()
            .filter(|k| !k.is_empty()),
        timeout: args.timeout,
        retries: args.retries,
        rate: args.rate,
        backoff: Duration::from_millis(args.backoff_ms),
    })?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {elapsed} elapsed, ETA {eta}")
            .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let req = Request {
        client: &client,
        domain: &args.domain,
        vision: args.vision,
        force_general: args.force_general,
    };
    let filled = fill(&req, data.as_ref(), &args.out, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let filled = filled?;
    eprintln!(
        "kanoclip: {} (general texts {}, {} images described, {} already there)",
        args.out.display(),
        if filled.general { "written" } else { "kept" },
        filled.images_asked,
        filled.images_kept
    );
    Ok(())
}
