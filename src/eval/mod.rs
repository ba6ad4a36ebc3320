//! Evaluation (spec §8): the metrics, written once, for `kanoclip eval` and the tests; and
//! natively (feature `train`) running a detector over a data set's test split, zero-shot
//! or few-shot.

#[cfg(feature = "train")]
pub mod evaluate;
#[cfg(feature = "train")]
pub mod few_shot;
pub mod metrics;
pub mod pro;
