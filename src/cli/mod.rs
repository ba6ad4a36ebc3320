//! `kanoclip` subcommands. Every failure prints one line and exits non-zero.

mod detect;
mod embed;
mod eval;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kanoclip",
    version,
    about = "KAnoCLIP zero-shot image anomaly detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print CLIP embeddings, token ids and CLIP-VV taps as JSON (parity checks).
    Embed(embed::EmbedArgs),
    /// Inspect images: heatmaps, overlays, report.json and report.csv.
    Detect(detect::DetectArgs),
    /// Write synthetic defect images with exact masks in MVTec AD layout.
    Synth(synth::SynthArgs),
    /// Per-category metrics on a data set's test split.
    Eval(eval::EvalArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Detect(args) => detect::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Eval(args) => eval::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', "; ");
            eprintln!("kanoclip: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
