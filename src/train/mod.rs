//! Training and evaluation data (native only). So far: the synthetic-defect generator.
//! The trainer, the data-set layouts and `kanoclip train`/`eval` are still to come.

pub mod synth;
