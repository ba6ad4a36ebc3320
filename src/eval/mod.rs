//! Evaluation (spec §8): the metrics, written once, for `kanoclip eval` and the tests.

pub mod metrics;
pub mod pro;
