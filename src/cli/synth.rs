//! `kanoclip synth`: synthetic defects in MVTec AD layout.

use std::path::PathBuf;

use crate::Result;
use crate::data::synth::{SynthConfig, generate};
use clap::Args;

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder (MVTec AD layout, one category per texture).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 128)]
    size: u32,
    #[arg(long, default_value_t = 8)]
    train_good: usize,
    #[arg(long, default_value_t = 4)]
    test_good: usize,
    /// Test images per defect type.
    #[arg(long, default_value_t = 2)]
    per_defect: usize,
    #[arg(long, default_value_t = 111)]
    seed: u64,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        size: args.size,
        train_good: args.train_good,
        test_good: args.test_good,
        test_per_defect: args.per_defect,
        seed: args.seed,
        ..SynthConfig::default()
    };
    let s = generate(&args.out, &cfg)?;
    eprintln!(
        "kanoclip: wrote {} images and {} masks to {}",
        s.images,
        s.masks,
        args.out.display()
    );
    Ok(())
}
