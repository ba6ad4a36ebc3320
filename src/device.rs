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
    /// CUDA (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda,
}

impl BackendKind {
    /// Images per forward pass that run fastest on this backend, the default of `kanoclip
    /// detect` and `kanoclip eval`: 1 on the CPU, where a batch of 8 gave no gain per image
    /// (B/16, flex with kanoclip's fused kernels, 2 threads, medians of 3 interleaved
    /// `scripts/bench-compare` rounds: 3061 ms per batch of 8 against 323 ms per image) and
    /// would hold eight decoded images; 8 on GPUs, where a batch of 8 took 2.6 times one
    /// image's (wgpu on an H200: 154 ms against 60).
    pub fn default_batch(self) -> usize {
        match self {
            BackendKind::Cpu => 1,
            _ => 8,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Wgpu => "wgpu",
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => "cuda",
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
        BackendKind::Wgpu => wgpu_device(None).await,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Device::cuda(0)),
        #[allow(unreachable_patterns)]
        other => Err(Error::BackendUnavailable(format!(
            "this build has no `{other}` backend (enable its cargo feature)"
        ))),
    }
}

/// [`device`], waited for on this thread (native programs; browsers must await
/// [`device`] instead).
#[cfg(feature = "native")]
pub fn device_blocking(kind: BackendKind) -> Result<Device> {
    pollster::block_on(device(kind))
}

/// `count` devices of one kind, for data-parallel training: the first `count` discrete
/// GPUs for wgpu, CUDA devices `0..count`. On the CPU every "device" is the one flex
/// device, which runs the same sharded step (how the tests check it).
pub async fn devices(kind: BackendKind, count: usize) -> Result<Vec<Device>> {
    if count == 0 {
        return Err(Error::Invalid("at least one device is needed".into()));
    }
    if count == 1 {
        return Ok(vec![device(kind).await?]);
    }
    let mut out = Vec::with_capacity(count);
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_variables))]
    for i in 0..count {
        out.push(match kind {
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => wgpu_device(Some(i)).await?,
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Device::cuda(i),
            _ => device(kind).await?,
        });
    }
    Ok(out)
}

/// The wgpu runtime can be started once per adapter and process: keep the devices and
/// hand out clones. `None` is the default adapter, `Some(i)` the i-th discrete GPU.
// The guard is held across the start-up on purpose: it serialises the one start the
// runtime allows. Callers are single futures (pollster natively, the browser's event loop).
#[cfg(feature = "wgpu")]
#[allow(clippy::await_holding_lock)]
async fn wgpu_device(discrete: Option<usize>) -> Result<Device> {
    static WGPU: std::sync::Mutex<Vec<(Option<usize>, Device)>> = std::sync::Mutex::new(Vec::new());
    let mut started = WGPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, device)) = started.iter().find(|(k, _)| *k == discrete) {
        return Ok(device.clone());
    }
    let mut options = Device::wgpu_options();
    if let Some(i) = discrete {
        options = options.device_kind(burn::tensor::DeviceKind::DiscreteGpu(i));
    }
    let device = options
        .init_async()
        .await
        .map_err(|e| Error::BackendUnavailable(format!("no usable wgpu adapter: {e}")))?;
    started.push((discrete, device.clone()));
    Ok(device)
}
