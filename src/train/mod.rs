//! Native training and evaluation (feature `train`): data-set layouts, the losses, the
//! trainer with its checkpoints and feature cache, evaluation, and the synthetic-defect
//! generator.

pub mod cache;
pub mod checkpoint;
pub mod dataset;
pub mod evaluate;
pub mod few_shot;
pub mod fit;
pub mod knowledge;
pub mod llm;
pub mod loss;
pub mod synth;
pub mod trainer;
