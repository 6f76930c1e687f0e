//! The device's own limits, which `vl3c bench` sets its figures against: copy bandwidth (decode
//! streams the weights once per token) and the bf16 tensor-core GEMM rate (prefill, vision).

use super::device::{Device, DeviceError, GemmBuffers};
use crate::gemm::{
    ComputeType, DataType, Epilogue, Extent, GemmCall, MatrixLayout, Operands, Transpose,
};
use crate::kir::Ty;
use crate::templates::Sizes;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct DeviceLimits {
    /// Device-to-device copy: bytes read plus bytes written per second, in GB/s.
    pub bandwidth_gbs: f64,
    pub peak_gflops: f64,
    pub peak_kind: &'static str,
}

/// Copy of 1 GiB and an 8192³ bf16 GEMM, best of five after one untimed run each. `None` on a
/// device whose time means nothing (the emulator).
pub fn measure(dev: &mut dyn Device) -> Result<Option<DeviceLimits>, DeviceError> {
    if !dev.is_timed() {
        return Ok(None);
    }
    const COPY_FLOATS: usize = 1 << 28;
    let (src, dst) = (
        dev.alloc(Ty::F32, COPY_FLOATS)?,
        dev.alloc(Ty::F32, COPY_FLOATS)?,
    );
    let copy = best_of(dev, |d| d.copy(src, dst, COPY_FLOATS));
    dev.free(src);
    dev.free(dst);
    let copy = copy?;

    const N: i64 = 8192;
    let layout = |ty| MatrixLayout {
        ty,
        rows: Extent::Const(N),
        cols: Extent::Const(N),
        ld: Extent::Const(N),
        batch_stride: Extent::Const(0),
    };
    let call = GemmCall {
        compute: ComputeType::F32,
        transa: Transpose::T,
        transb: Transpose::N,
        m: Extent::Const(N),
        n: Extent::Const(N),
        k: Extent::Const(N),
        a: layout(DataType::Bf16),
        b: layout(DataType::Bf16),
        c: layout(DataType::Bf16),
        d: layout(DataType::Bf16),
        batch_count: Extent::Const(1),
        alpha: 1.0,
        beta: 0.0,
        epilogue: Epilogue::Default,
        operands: Operands {
            a: 1,
            b: 0,
            c: None,
            bias: None,
        },
    };
    let len = (N * N) as usize;
    let (a, b, d) = (
        dev.alloc(Ty::Bf16, len)?,
        dev.alloc(Ty::Bf16, len)?,
        dev.alloc(Ty::Bf16, len)?,
    );
    // Zeros: uninitialised memory may hold NaNs, which some GEMM paths take slower.
    let zeros = vec![0u8; len * 2];
    let gemm = dev
        .write(a, 0, &zeros)
        .and_then(|_| dev.write(b, 0, &zeros))
        .and_then(|_| {
            best_of(dev, |dev| {
                dev.gemm(
                    &call,
                    &Sizes::new(),
                    GemmBuffers {
                        a,
                        b,
                        c: None,
                        bias: None,
                        d,
                    },
                )
            })
        });
    for x in [a, b, d] {
        dev.free(x);
    }
    let gemm = gemm?;
    Ok(Some(DeviceLimits {
        bandwidth_gbs: 2.0 * (COPY_FLOATS * 4) as f64 / copy / 1e9,
        peak_gflops: 2.0 * (N as f64).powi(3) / gemm / 1e9,
        peak_kind: "bf16 cuBLASLt GEMM",
    }))
}

fn best_of(
    dev: &mut dyn Device,
    mut work: impl FnMut(&mut dyn Device) -> Result<(), DeviceError>,
) -> Result<f64, DeviceError> {
    work(dev)?;
    dev.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        work(dev)?;
        dev.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}
