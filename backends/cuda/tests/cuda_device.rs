//! The GPU device. Where there is no NVIDIA driver (this machine, CI) opening it must be a plain
//! error that points to the emulator; choosing which of an engine's files to load is checked
//! everywhere. The rest needs a GPU and returns early without one, saying so: a template kernel
//! and cuBLASLt calls, each compared with what the emulator computes for the same inputs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vl3c_cuda::emu::{bf16_bits_to_f32, Arg, DeviceBuffer, Emulator};
use vl3c_cuda::gemm::{
    emulate, ComputeType, DataType, Epilogue, Extent, GemmCall, MatrixLayout, Operands, Transpose,
};
use vl3c_cuda::kir::{Access, Lit, ParamKind, Ty};
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::print::print_module;
use vl3c_cuda::run::{kernel_images, CudaDevice, DevArg, Device, DeviceError, GemmBuffers};
use vl3c_cuda::templates::{self, Sizes};

fn skip(why: &str) {
    // Straight to the file descriptor: the test harness captures `eprintln!` of passing tests.
    let line = format!("\n*** skipped: {why} ***\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vl3c-cuda-device-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn touch(dir: &Path, files: &[&str]) {
    for f in files {
        std::fs::write(dir.join(f), b"").unwrap();
    }
}

#[test]
fn without_a_driver_open_points_to_the_emulator() {
    if CudaDevice::driver_present() {
        return skip("libcuda is present: this checks machines without one");
    }
    match CudaDevice::open(0, Path::new("/nonexistent/cuda")) {
        Err(DeviceError::Unsupported(message)) => {
            assert!(message.contains("--device emu"), "{message}");
            assert!(message.contains("libcuda"), "{message}");
        }
        Err(other) => panic!("expected Unsupported, got {other}"),
        Ok(device) => panic!("opened {device:?} with no driver"),
    }
}

#[test]
fn the_devices_own_cubin_comes_first_then_ptx_newest_first() {
    let dir = scratch_dir("images");
    touch(
        &dir,
        &[
            "sm_80.cubin",
            "sm_90.cubin",
            "compute_80.ptx",
            "compute_90.ptx",
            "kernels.cu",
        ],
    );
    let names = |sm| -> Vec<String> {
        let images = kernel_images(&dir, sm).unwrap();
        images
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(90),
        ["sm_90.cubin", "compute_90.ptx", "compute_80.ptx"]
    );
    assert_eq!(names(80), ["sm_80.cubin", "compute_80.ptx"]);
    // An sm_86 or sm_89 GPU has no cubin of its own: the driver compiles the sm_80 PTX.
    assert_eq!(names(89), ["compute_80.ptx"]);
    assert_eq!(names(100), ["compute_90.ptx", "compute_80.ptx"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_runnable_image_names_the_engines_sms_and_the_recompile() {
    let dir = scratch_dir("no-image");
    touch(&dir, &["sm_90.cubin", "compute_90.ptx"]);
    let message = kernel_images(&dir, 80).unwrap_err();
    for needle in [
        "sm_90",
        "sm_90.cubin",
        "compute_90.ptx",
        "sm_80",
        "vl3c compile --target cuda --sm 80",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    let empty = scratch_dir("empty");
    let message = kernel_images(&empty, 90).unwrap_err();
    assert!(
        message.contains("no kernels") && message.contains("--sm 90"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

/// Deterministic values in [-1, 1), exact in bf16.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
            half::bf16::from_f32(v).to_f32()
        })
        .collect()
}

fn as_f32(elem: Ty, bytes: &[u8]) -> Vec<f32> {
    match elem {
        Ty::Bf16 => bytes
            .chunks(2)
            .map(|b| bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Ty::F32 => bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        other => panic!("{other:?} is not a float"),
    }
}

/// Normalized mean squared error, as test-kernels measures it.
fn nmse(want: &[f32], got: &[f32]) -> f64 {
    assert_eq!(want.len(), got.len());
    let err: f64 = want
        .iter()
        .zip(got)
        .map(|(w, g)| (*w as f64 - *g as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| (*w as f64).powi(2)).sum();
    err / norm.max(f64::MIN_POSITIVE)
}

const CASE: &str = "rms_norm(dtype=bf16,hidden=1536,residual=false) rows=7";

/// A CUDA directory holding `CASE`'s kernels compiled for every SM the project builds, as an
/// engine's; made once per test binary.
fn engine_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let nvrtc = common::nvrtc_or_skip()?;
        let case = templates::cases()
            .into_iter()
            .find(|c| c.label() == CASE)
            .expect("the case exists");
        let source = print_module(&case.template.kernels());
        let dir = scratch_dir("engine");
        for sm in Sm::ALL {
            let compiled = nvrtc
                .compile(&source, "kernels.cu", sm)
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.join(format!("{}.cubin", sm.name())), &compiled.cubin).unwrap();
            std::fs::write(
                dir.join(format!("{}.ptx", sm.virtual_name())),
                &compiled.ptx,
            )
            .unwrap();
        }
        Some(dir)
    });
    dir.as_deref()
}

/// GPU 0 on [`engine_dir`], or `None` (said loudly) where there is no GPU or no NVRTC.
fn gpu() -> Option<CudaDevice> {
    if !CudaDevice::driver_present() {
        skip("no NVIDIA driver: the GPU device tests run on a GPU machine");
        return None;
    }
    let device = CudaDevice::open(0, engine_dir()?).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{} from {}", device.describe(), device.image());
    Some(device)
}

#[test]
fn a_template_kernel_on_the_gpu_matches_the_emulator() {
    let Some(mut gpu) = gpu() else { return };
    let case = templates::cases()
        .into_iter()
        .find(|c| c.label() == CASE)
        .expect("the case exists");
    let kernels = case.template.kernels();
    let (rows, hidden) = (7usize, 1536usize);
    let k = &kernels[0];
    let mut emu = Emulator::new();
    let (mut emu_args, mut gpu_args) = (Vec::new(), Vec::new());
    let mut out = None;
    for (i, p) in k.params.iter().enumerate() {
        match (&p.kind, p.name.as_str()) {
            (ParamKind::Scalar(Ty::I64), "rows") => {
                emu_args.push(Arg::Scalar(Lit::I64(rows as i64)));
                gpu_args.push(DevArg::Scalar(Lit::I64(rows as i64)));
            }
            (ParamKind::Buffer { elem, access }, name) => {
                let len = if name == "w" { hidden } else { rows * hidden };
                let buf = match access {
                    Access::Read => DeviceBuffer::from_f32(*elem, &values(len, i as u64)),
                    _ => DeviceBuffer::new(*elem, len),
                };
                let dev = gpu.alloc(*elem, len).unwrap();
                if *access == Access::Read {
                    gpu.write(dev, 0, buf.bytes()).unwrap();
                } else {
                    out = Some((emu_args.len(), dev, *elem, len));
                }
                emu_args.push(Arg::Buffer(emu.alloc(buf)));
                gpu_args.push(DevArg::Buffer(dev));
            }
            other => panic!("unexpected parameter {other:?} of {}", k.name),
        }
    }
    emu.launch(k, &emu_args).unwrap();
    gpu.launch(k, &gpu_args).unwrap();
    gpu.synchronize().unwrap();
    let (at, dev, elem, len) = out.expect("the kernel has an output");
    let Arg::Buffer(emu_out) = emu_args[at] else {
        unreachable!()
    };
    let want = emu.buffer(emu_out).to_f32();
    let got = as_f32(elem, &gpu.read(dev, 0, len).unwrap());
    let error = nmse(&want, &got);
    assert!(
        error <= case.template.nmse_limit(),
        "NMSE {error:e} against the emulator"
    );
}

fn layout(ty: DataType, rows: i64, cols: i64, ld: i64, batch_stride: i64) -> MatrixLayout {
    let e = Extent::Const;
    MatrixLayout {
        ty,
        rows: e(rows),
        cols: e(cols),
        ld: e(ld),
        batch_stride: e(batch_stride),
    }
}

/// `call` on the GPU and in `gemm::emulate`, from the same inputs; D's NMSE between them.
fn gemm_against_emulate(gpu: &mut CudaDevice, call: &GemmCall) -> f64 {
    let sizes = Sizes::new();
    let r = call.resolve(&sizes).unwrap();
    let ty = |t: DataType| {
        if t == DataType::Bf16 {
            Ty::Bf16
        } else {
            Ty::F32
        }
    };
    let batch = r.batch_count;
    let input = |l: &vl3c_cuda::gemm::ResolvedLayout, seed| {
        DeviceBuffer::from_f32(ty(l.ty), &values(l.span(batch) as usize, seed))
    };
    let (a, b) = (input(&r.a, 1), input(&r.b, 2));
    let c = (call.beta != 0.0).then(|| input(&r.c, 3));
    let bias = match call.epilogue {
        Epilogue::Bias { ty: t } => Some(DeviceBuffer::from_f32(ty(t), &values(r.m as usize, 4))),
        Epilogue::Default => None,
    };
    let mut d = DeviceBuffer::new(ty(r.d.ty), r.d.span(batch) as usize);
    emulate(call, &sizes, &a, &b, c.as_ref(), bias.as_ref(), &mut d).unwrap();

    let gpu_d = gpu.alloc(d.elem(), d.len()).unwrap();
    let mut upload = |buf: &DeviceBuffer| {
        let dev = gpu.alloc(buf.elem(), buf.len()).unwrap();
        gpu.write(dev, 0, buf.bytes()).unwrap();
        dev
    };
    let bufs = GemmBuffers {
        a: upload(&a),
        b: upload(&b),
        c: c.as_ref().map(&mut upload),
        bias: bias.as_ref().map(&mut upload),
        d: gpu_d,
    };
    gpu.gemm(call, &sizes, bufs).unwrap();
    // Twice: the second call runs on the cached plan.
    gpu.gemm(call, &sizes, bufs).unwrap();
    let got = as_f32(d.elem(), &gpu.read(bufs.d, 0, d.len()).unwrap());
    nmse(&d.to_f32(), &got)
}

#[test]
fn cublaslt_calls_match_gemm_emulate() {
    let Some(mut gpu) = gpu() else { return };
    let operands = Operands {
        a: 0,
        b: 1,
        c: None,
        bias: None,
    };
    // A linear layer: bf16 weight [64, 96] row-major read as op(A) = Aᵀ, 24 tokens, bf16 bias.
    let (m, n, k) = (64, 24, 96);
    let linear = GemmCall {
        compute: ComputeType::F32,
        transa: Transpose::T,
        transb: Transpose::N,
        m: Extent::Const(m),
        n: Extent::Const(n),
        k: Extent::Const(k),
        a: layout(DataType::Bf16, k, m, k, 0),
        b: layout(DataType::Bf16, k, n, k, 0),
        c: layout(DataType::Bf16, m, n, m, 0),
        d: layout(DataType::Bf16, m, n, m, 0),
        batch_count: Extent::Const(1),
        alpha: 1.0,
        beta: 0.0,
        epilogue: Epilogue::Bias { ty: DataType::Bf16 },
        operands: operands.clone(),
    };
    let error = gemm_against_emulate(&mut gpu, &linear);
    assert!(error <= templates::NMSE_BF16, "bf16 linear: NMSE {error:e}");

    // Three strided f32 products with a residual (beta ≠ 0), pedantic: no TF32.
    let (m, n, k, batch) = (40, 33, 20, 3);
    let batched = GemmCall {
        compute: ComputeType::F32Pedantic,
        transa: Transpose::N,
        transb: Transpose::T,
        m: Extent::Const(m),
        n: Extent::Const(n),
        k: Extent::Const(k),
        a: layout(DataType::F32, m, k, m + 3, (m + 3) * k),
        b: layout(DataType::F32, n, k, n, n * k),
        c: layout(DataType::F32, m, n, m, m * n),
        d: layout(DataType::F32, m, n, m, m * n),
        batch_count: Extent::Const(batch),
        alpha: 0.75,
        beta: 0.5,
        epilogue: Epilogue::Default,
        operands: Operands {
            c: Some(2),
            ..operands
        },
    };
    let error = gemm_against_emulate(&mut gpu, &batched);
    assert!(
        error <= templates::NMSE_F32,
        "f32 pedantic batched: NMSE {error:e}"
    );
}

#[test]
fn an_allocation_larger_than_the_gpu_is_an_error() {
    let Some(mut gpu) = gpu() else { return };
    match gpu.alloc(Ty::F32, 1 << 45) {
        Err(DeviceError::OutOfMemory { wanted, free, .. }) => assert!(wanted > free),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // Freed memory is reused, and a freed buffer's number goes to the next allocation.
    let first = gpu.alloc(Ty::Bf16, 1000).unwrap();
    gpu.free(first);
    assert_eq!(gpu.alloc(Ty::F32, 500).unwrap(), first);
}

#[test]
fn without_its_cubin_the_gpu_jit_compiles_the_ptx() {
    if !CudaDevice::driver_present() {
        return skip("no NVIDIA driver: the GPU device tests run on a GPU machine");
    }
    let Some(engine) = engine_dir() else { return };
    let dir = scratch_dir("ptx-only");
    for sm in Sm::ALL {
        let ptx = format!("{}.ptx", sm.virtual_name());
        std::fs::copy(engine.join(&ptx), dir.join(&ptx)).unwrap();
    }
    let gpu = CudaDevice::open(0, &dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        gpu.image().starts_with("compute_") && gpu.image().ends_with("(JIT)"),
        "{}",
        gpu.image()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
