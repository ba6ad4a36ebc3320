//! Training and evaluation data (native only): data-set layouts and the synthetic-defect
//! generator. The trainer and `kanoclip train` are still to come.

pub mod dataset;
pub mod evaluate;
pub mod fit;
pub mod loss;
pub mod synth;
pub mod trainer;
