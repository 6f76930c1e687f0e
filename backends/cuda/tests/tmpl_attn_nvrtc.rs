//! The attention kernels print to CUDA C++ that NVRTC compiles for sm_80 and sm_90 without
//! spills, a stack, or more shared memory than the architecture has. NVRTC must be installed
//! (`tools/cuda/install-nvrtc.sh`); `VL3C_SKIP_NVRTC=1` skips these tests where it is not.

use vl3c_cuda::kir::Kernel;
use vl3c_cuda::nvrtc::{Nvrtc, Sm};
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::attention::{DecodeAttention, PrefillAttention, VisionAttention};
use vl3c_cuda::templates::Template;
use vl3c_cuda::kir::Ty;

fn nvrtc() -> Option<Nvrtc> {
    match Nvrtc::load() {
        Ok(nvrtc) => Some(nvrtc),
        Err(error) if std::env::var("VL3C_SKIP_NVRTC").is_ok_and(|v| v == "1") => {
            eprintln!("\n*** skipped: NVRTC not installed ({error}) ***\n");
            None
        }
        Err(error) => panic!("{error}"),
    }
}

/// Every kernel of the real 2B/7B shapes, both dtypes.
fn kernels() -> Vec<Kernel> {
    let mut out = Vec::new();
    for dtype in [Ty::F32, Ty::Bf16] {
        out.extend(VisionAttention { dtype, heads: 16, head_dim: 72 }.kernels());
        for (q_heads, kv_heads) in [(12, 2), (28, 4)] {
            out.extend(PrefillAttention { dtype, q_heads, kv_heads, head_dim: 128 }.kernels());
            out.extend(DecodeAttention { dtype, q_heads, kv_heads, head_dim: 128 }.kernels());
        }
    }
    out
}

fn check(sm: Sm) {
    let Some(nvrtc) = nvrtc() else { return };
    let source = print_module(&kernels());
    let compiled = nvrtc.compile(&source, "attention.cu", sm).unwrap_or_else(|e| panic!("{e}"));
    assert!(!compiled.log.contains("warning"), "NVRTC warned:\n{}", compiled.log);
    let mut table = String::new();
    for r in &compiled.reports {
        table.push_str(&format!("{:<48} regs {:>3} spills {}/{} stack {} smem {}\n", r.kernel, r.registers, r.spill_stores, r.spill_loads, r.stack_bytes, r.shared_bytes));
    }
    eprintln!("{sm}:\n{table}");
    for r in &compiled.reports {
        assert_eq!((r.spill_stores, r.spill_loads, r.stack_bytes), (0, 0, 0), "{} spills on {sm}:\n{table}", r.kernel);
        assert!(r.shared_bytes <= sm.max_shared_bytes_per_block(), "{} uses too much shared memory", r.kernel);
    }
}

#[test]
fn attention_compiles_for_sm_80() {
    check(Sm::Sm80);
}

#[test]
fn attention_compiles_for_sm_90() {
    check(Sm::Sm90);
}

#[test]
#[ignore]
fn dump_log() {
    let nvrtc = nvrtc().unwrap();
    let k = DecodeAttention { dtype: Ty::Bf16, q_heads: 12, kv_heads: 2, head_dim: 128 }.kernels();
    let source = print_module(&k);
    std::fs::write("/tmp/attn_decode.cu", &source).unwrap();
    let compiled = nvrtc.compile(&source, "attention.cu", Sm::Sm80).unwrap();
    eprintln!("{}", compiled.log);
}
