//! `--mutual`, `--group` and `--mutual-weight`, shared by `detect` and `eval`.

use clap::Args;

use crate::Result;
use crate::detect::Mutual;

#[derive(Args)]
pub struct MutualArgs {
    /// Mutual scoring (spec §11): each image scored against the other images of its
    /// folder (`detect`) or category (`eval`), in even groups of at most --group; no text
    /// or references needed. A group left with fewer than 3 readable images is scored
    /// alone, and says so.
    #[arg(long)]
    mutual: bool,
    /// With --mutual: the most images scored together (3 to 256).
    #[arg(long, requires = "mutual", value_parser = clap::value_parser!(u16).range(3..=256))]
    group: Option<u16>,
    /// With --mutual: λ in [0, 1], map = (1 − λ) · zero-shot (or few-shot) + λ · mutual.
    #[arg(long, requires = "mutual")]
    mutual_weight: Option<f64>,
}

impl MutualArgs {
    /// The settings, checked (before any model loads), or `None` without --mutual.
    pub fn options(&self) -> Result<Option<Mutual>> {
        if !self.mutual {
            return Ok(None);
        }
        let defaults = Mutual::default();
        let m = Mutual {
            weight: self.mutual_weight.unwrap_or(defaults.weight),
            group: self.group.map_or(defaults.group, usize::from),
        };
        m.validate()?;
        Ok(Some(m))
    }
}
