//! Which burn backend runs the model.
//!
//! The CPU backend is burn's ndarray backend (projections through this
//! crate's quantized kernels). With the `cuda` feature, `burn-cuda` 0.21
//! runs everything on the GPU with f32 weights. cudarc loads the driver at
//! run time, and on a machine without one burn panics in a device thread;
//! [`probe_cuda`] runs a tiny computation on a separate thread, catches that
//! panic and answers with the reason instead.

use std::any::Any;

use serde::{Deserialize, Serialize};

/// The CPU backend type.
pub type Cpu = burn::backend::NdArray<f32>;

/// The GPU backend type.
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<f32, i32>;

/// Where the model runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn-ndarray plus this crate's quantized CPU kernels.
    Cpu,
    /// burn-cuda on the GPU with this index (needs the `cuda` feature).
    Cuda(usize),
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(i)) => Ok(Self::Cuda(i)),
                _ => Err(format!("unknown backend {s:?} (cpu, cuda, cuda:N)")),
            },
        }
    }
}

/// Text of a caught panic.
pub(crate) fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// The burn device for a GPU index.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_device(index: usize) -> burn::backend::cuda::CudaDevice {
    burn::backend::cuda::CudaDevice::new(index)
}

/// Checks that GPU `index` can run a computation; the reason when not.
#[cfg(feature = "cuda")]
pub fn probe_cuda(index: usize) -> Result<(), String> {
    use burn::tensor::{Tensor, TensorData};
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("mesh-inference-cuda-probe".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(|| {
                let dev = cuda_device(index);
                let t = Tensor::<Gpu, 1>::from_data(TensorData::new(vec![1f32, 2.0], [2]), &dev);
                let v = (t.clone() + t)
                    .into_data()
                    .to_vec::<f32>()
                    .map_err(|e| format!("{e:?}"))?;
                if v == [2.0, 4.0] {
                    Ok(())
                } else {
                    Err(format!("cuda:{index} computed {v:?} for [2, 4]"))
                }
            });
            let _ = tx.send(r.unwrap_or_else(|p| Err(panic_message(&p))));
        });
    if let Err(e) = spawned {
        return Err(format!("spawning the probe thread: {e}"));
    }
    match rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(r) => r,
        // The probe thread died without answering (a panic in a thread of
        // the device runtime) or hangs.
        Err(_) => Err(format!(
            "cuda:{index} did not answer (no usable CUDA driver or GPU?)"
        )),
    }
}

/// Without the `cuda` feature no GPU can be used.
#[cfg(not(feature = "cuda"))]
pub fn probe_cuda(index: usize) -> Result<std::convert::Infallible, String> {
    Err(format!(
        "cuda:{index}: mesh-inference was built without the `cuda` feature"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_names() {
        assert_eq!("cpu".parse::<BackendKind>(), Ok(BackendKind::Cpu));
        assert_eq!("cuda".parse::<BackendKind>(), Ok(BackendKind::Cuda(0)));
        assert_eq!("cuda:2".parse::<BackendKind>(), Ok(BackendKind::Cuda(2)));
        assert!("tpu".parse::<BackendKind>().is_err());
    }

    #[test]
    fn cuda_without_gpu_is_an_error_not_a_panic() {
        // Without the feature this is always an error; with it, on a machine
        // without a GPU, the probe must also answer rather than panic.
        if std::env::var_os("MESH_EXPECT_GPU").is_none() {
            assert!(probe_cuda(0).is_err());
        }
    }
}
