//! `kanoclip` subcommands. Every failure prints one line and exits non-zero.

mod convert;
mod detect;
mod embed;
mod eval;
mod inputs;
mod knowledge;
mod merge;
mod model;
mod mutual;
mod reference;
mod report;
mod synth;
mod train;

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
    /// Train the head (prompts, Bi-CMCI, adapter) on an auxiliary data set.
    Train(train::TrainArgs),
    /// Fill a knowledge base from an OpenAI-compatible chat endpoint.
    Knowledge(knowledge::KnowledgeArgs),
    /// Few-shot mode: build a memory of known-good images' features.
    #[command(subcommand)]
    Reference(reference::ReferenceCommand),
    /// Write the browser bundle (manifest and checksummed chunks) for the wasm build.
    Convert(convert::ConvertArgs),
    /// Reports: `merge` joins the reports of `detect --shard i/n` runs.
    #[command(subcommand)]
    Report(merge::ReportCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A safety net: bad input is meant to come back as typed errors, but should anything
    // still panic, say so in one line rather than with a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "kanoclip: internal error: {} (please report it)",
            msg.replace('\n', "; ")
        );
    }));
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Detect(args) => detect::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Train(args) => train::run(args),
        Command::Knowledge(args) => knowledge::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Reference(command) => reference::run(command),
        Command::Report(command) => merge::run(command),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        // clap checks names, conflicts and defaults only in debug builds; the tests run in
        // release, so check here.
        super::Cli::command().debug_assert();
    }
}
