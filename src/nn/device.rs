//! The compute device of the dfdx tensor work: `cpu` (always) or `cuda` (builds with the `cuda` feature).
//!
//! dfdx picks the device by type (`Cpu`, `Cuda`), so code stays generic over `D: Device<E>` and one
//! `match` on [`ComputeDevice`] at the entry of a training loop instantiates it for the chosen device.
//! Everything that is not dfdx tensor work (plain-Rust inference, the hand-written CPU training passes,
//! the science) runs on the CPU whatever the device; CUDA is never required: a build without the feature
//! rejects `device = "cuda"` at validation, and [`ComputeDevice::parse`] says so too.

use anyhow::{bail, Result};

/// Where dfdx tensors live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComputeDevice {
    /// dfdx's `Cpu`.
    #[default]
    Cpu,
    /// dfdx's `Cuda`, GPU 0 (builds with the `cuda` feature only).
    Cuda,
}

impl ComputeDevice {
    /// From the `[pipeline] device` value (`cpu` or `cuda`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(ComputeDevice::Cpu),
            "cuda" if cfg!(feature = "cuda") => Ok(ComputeDevice::Cuda),
            "cuda" => bail!(
                "this eqflow was built without CUDA support (build with `--features cuda`, see docs/gpu.md)"
            ),
            other => bail!("unknown device `{other}` (expected `cpu` or `cuda`)"),
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            ComputeDevice::Cpu => "cpu",
            ComputeDevice::Cuda => "cuda",
        }
    }

    /// The engine fingerprint of this device (part of every cache key): `cpu`, or for CUDA the GPU's name
    /// and compute capability (`cuda:NVIDIA H200:sm_90`), since kernels and cuBLAS differ between GPUs;
    /// plain `cuda` when no GPU can be queried (validation and dry runs still work without one).
    pub fn fingerprint(self) -> String {
        match self {
            ComputeDevice::Cpu => "cpu".to_string(),
            ComputeDevice::Cuda => {
                // asked once per key: query the driver once per process
                static CUDA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                CUDA.get_or_init(|| match gpu_info() {
                    Ok(g) => format!("cuda:{}:sm_{}{}", g.name, g.capability.0, g.capability.1),
                    Err(_) => "cuda".to_string(),
                })
                .clone()
            }
        }
    }
}

/// What the driver says about GPU 0.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    /// Marketing name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
    /// Driver CUDA version, e.g. 13000 for 13.0.
    pub driver_version: i32,
    /// Device memory in bytes.
    pub memory_bytes: usize,
    /// The architecture this binary's kernels were compiled for (`sm_90`).
    pub built_for: String,
}

/// GPU 0 as the driver reports it.
#[cfg(feature = "cuda")]
pub fn gpu_info() -> Result<GpuInfo> {
    use cudarc::driver::sys;
    // cudarc 0.9 wraps neither the name nor the memory size; these are plain driver calls on the device
    // handle it opened (the primary context is retained by CudaDevice::new).
    probe_cuda()?;
    let dev = cudarc::driver::CudaDevice::new(0)
        .map_err(|e| anyhow::anyhow!("CUDA device 0: {}", driver_error(&e)))?;
    let attr = |a| {
        dev.attribute(a)
            .map_err(|e| anyhow::anyhow!("CUDA attribute: {}", driver_error(&e)))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let mut buf = [0 as std::ffi::c_char; 256];
    let mut version = 0i32;
    let mut bytes = 0usize;
    // SAFETY: the buffer outlives the calls and its length is passed; the device handle is valid while
    // `dev` lives.
    unsafe {
        for status in [
            sys::cuDeviceGetName(buf.as_mut_ptr(), buf.len() as i32, *dev.cu_device()),
            sys::cuDriverGetVersion(&mut version),
            sys::cuDeviceTotalMem_v2(&mut bytes, *dev.cu_device()),
        ] {
            if status != sys::CUresult::CUDA_SUCCESS {
                bail!("CUDA driver query failed: {status:?}");
            }
        }
    }
    // SAFETY: the driver writes a NUL-terminated string into the buffer.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(GpuInfo {
        name,
        capability: (major, minor),
        driver_version: version,
        memory_bytes: bytes,
        built_for: built_for().to_string(),
    })
}

/// Checks that the driver initialises and sees a GPU, before anything asks cudarc for a device: cudarc
/// 0.9's `CudaDevice::new` (and so dfdx's `Cuda::try_build`) `unwrap`s `cuInit`, and the panic message's
/// `Debug` panics again (see [`driver_error`]), aborting the process on a machine without a usable GPU.
#[cfg(feature = "cuda")]
pub fn probe_cuda() -> Result<()> {
    use cudarc::driver::sys;
    let mut count = 0i32;
    // SAFETY: plain driver calls; cuInit is idempotent and `count` outlives the call.
    let (init, counted) = unsafe { (sys::cuInit(0), sys::cuDeviceGetCount(&mut count)) };
    if init != sys::CUresult::CUDA_SUCCESS {
        bail!("the CUDA driver did not initialise: {init:?}");
    }
    if counted != sys::CUresult::CUDA_SUCCESS || count < 1 {
        bail!("no CUDA device ({counted:?}, {count} devices)");
    }
    Ok(())
}

/// GPU 0 as a dfdx device, after [`probe_cuda`], with an error that names the cause instead of aborting.
#[cfg(feature = "cuda")]
pub fn open_cuda(seed: u64) -> Result<dfdx::tensor::Cuda> {
    probe_cuda()?;
    dfdx::tensor::Cuda::try_build(0, seed)
        .map_err(|e| anyhow::anyhow!("cannot open CUDA device 0: {}", cuda_error(&e)))
}

/// A driver error as its code (`CUDA_ERROR_NO_DEVICE`). Never `{:?}` of cudarc 0.9's `DriverError`: its
/// `Debug` unwraps `cuGetErrorString` and panics when the driver has no string for the code (a link stub,
/// or a code newer than the driver), turning a clean "no GPU" into an abort.
#[cfg(feature = "cuda")]
pub fn driver_error(e: &cudarc::driver::DriverError) -> String {
    format!("{:?}", e.0)
}

/// A dfdx CUDA error, without going through `DriverError`'s `Debug` (see [`driver_error`]).
#[cfg(feature = "cuda")]
pub fn cuda_error(e: &dfdx::tensor::CudaError) -> String {
    match e {
        dfdx::tensor::CudaError::Driver(d) => driver_error(d),
        other => format!("{other:?}"),
    }
}

/// GPU 0 as the driver reports it (none in this build).
#[cfg(not(feature = "cuda"))]
pub fn gpu_info() -> Result<GpuInfo> {
    bail!("this eqflow was built without CUDA support (docs/gpu.md)")
}

/// The GPU architecture dfdx's kernels were compiled for (`sm_90`), or `none`.
pub fn built_for() -> &'static str {
    #[cfg(feature = "cuda")]
    {
        option_env!("EQFLOW_CUDA_COMPUTE_CAP").unwrap_or("unknown")
    }
    #[cfg(not(feature = "cuda"))]
    {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_rejects_others() {
        assert_eq!(ComputeDevice::parse("cpu").unwrap(), ComputeDevice::Cpu);
        assert_eq!(ComputeDevice::Cpu.fingerprint(), "cpu");
        let err = ComputeDevice::parse("tpu").unwrap_err().to_string();
        assert_eq!(err, "unknown device `tpu` (expected `cpu` or `cuda`)");
        if !cfg!(feature = "cuda") {
            let err = ComputeDevice::parse("cuda").unwrap_err().to_string();
            assert!(err.contains("built without CUDA"), "{err}");
        }
    }
}
