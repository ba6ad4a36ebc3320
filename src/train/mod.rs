//! Native training (feature `train`): the losses, the trainer, its fit loop with
//! checkpoints, and the frozen-feature cache.

pub mod cache;
pub mod checkpoint;
pub mod fit;
pub mod loss;
pub mod trainer;
