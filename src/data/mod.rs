//! Data sets (native, feature `train`): the layouts training and evaluation read (MVTec AD,
//! MVTec LOCO, VisA, a generic folder), and the synthetic-defect generator that writes
//! the MVTec layout with exact masks.

pub mod dataset;
pub mod synth;
