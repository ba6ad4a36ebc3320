//! Helpers for the unit tests inside the crate (the integration tests have their own in
//! `tests/common`).

use burn::prelude::Device;

use crate::device::{BackendKind, device};

/// Both backends. wgpu runs on lavapipe in CI; set KANOCLIP_SKIP_WGPU=1 only on a machine
/// that has no Vulkan driver at all.
pub fn backends() -> Vec<(BackendKind, Device)> {
    let mut out = vec![(
        BackendKind::Cpu,
        pollster::block_on(device(BackendKind::Cpu)).expect("flex device"),
    )];
    if std::env::var_os("KANOCLIP_SKIP_WGPU").is_none() {
        let wgpu = pollster::block_on(device(BackendKind::Wgpu))
            .expect("no wgpu adapter: install mesa-vulkan-drivers, or set KANOCLIP_SKIP_WGPU=1");
        out.push((BackendKind::Wgpu, wgpu));
    }
    out
}

/// The largest element-wise difference. Lengths must agree, and a NaN or infinity on
/// either side fails the test: `f32::max` skips NaN, so a check on output that is partly
/// NaN would otherwise pass.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    if let Some(i) = (0..a.len()).find(|&i| !a[i].is_finite() || !b[i].is_finite()) {
        panic!("non-finite value at {i}: {} vs {}", a[i], b[i]);
    }
    max_err(a.iter().zip(b).map(|(x, y)| (x - y).abs()))
}

/// The largest of some errors (0 for none); a NaN fails the test.
fn max_err(errors: impl IntoIterator<Item = f32>) -> f32 {
    errors.into_iter().fold(0.0, |m, e| {
        assert!(!e.is_nan(), "a NaN error");
        m.max(e)
    })
}
