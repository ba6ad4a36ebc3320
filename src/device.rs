//! Choosing the compute device at run time. The model code never names a backend: the
//! device picks it (Burn 0.22).

use burn::prelude::Device;

use crate::error::{Error, Result};

/// The backends a user can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum BackendKind {
    /// Burn's pure-Rust `flex` CPU backend.
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 natively, WebGPU in browsers.
    Wgpu,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
        })
    }
}

/// Start a device of the given kind. A wgpu device is started eagerly (and, as browsers
/// require, asynchronously), so that a machine without an adapter gives an error here
/// rather than a panic on first use. Native callers block on it (`pollster::block_on`).
pub async fn device(kind: BackendKind) -> Result<Device> {
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => wgpu_device().await,
        #[allow(unreachable_patterns)]
        other => Err(Error::Backend(format!(
            "this build has no `{other}` backend (enable its cargo feature)"
        ))),
    }
}

/// The wgpu runtime can be started once per process: keep the device and hand out clones.
// The guard is held across the start-up on purpose: it serialises the one start the
// runtime allows. Callers are single futures (pollster natively, the browser's event loop).
#[cfg(feature = "wgpu")]
#[allow(clippy::await_holding_lock)]
async fn wgpu_device() -> Result<Device> {
    static WGPU: std::sync::Mutex<Option<Device>> = std::sync::Mutex::new(None);
    let mut slot = WGPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(device) = slot.as_ref() {
        return Ok(device.clone());
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| Error::Backend(format!("no usable wgpu adapter: {e:?}")))?;
    *slot = Some(device.clone());
    Ok(device)
}
