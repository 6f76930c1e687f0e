//! The attention kernels print to CUDA C++ that NVRTC compiles for sm_80 and sm_90 without
//! spills, a stack, or more shared memory than the architecture has; ptxas' report is pinned.
//! NVRTC must be installed (`tools/cuda/install-nvrtc.sh`); `VL3C_SKIP_NVRTC=1` skips these tests
//! where it is not.

mod common;

use vl3c_cuda::kir::Kernel;
use vl3c_cuda::kir::Ty;
use vl3c_cuda::nvrtc::Sm;
use vl3c_cuda::print::print_module;
use vl3c_cuda::templates::attention::{DecodeAttention, PrefillAttention, VisionAttention};
use vl3c_cuda::templates::Template;

/// Every kernel of the real 2B/7B shapes, both dtypes.
fn kernels() -> Vec<Kernel> {
    let mut out = Vec::new();
    for dtype in [Ty::F32, Ty::Bf16] {
        out.extend(
            VisionAttention {
                dtype,
                heads: 16,
                head_dim: 72,
            }
            .kernels(),
        );
        for (q_heads, kv_heads) in [(12, 2), (28, 4)] {
            out.extend(
                PrefillAttention {
                    dtype,
                    q_heads,
                    kv_heads,
                    head_dim: 128,
                }
                .kernels(),
            );
            out.extend(
                DecodeAttention {
                    dtype,
                    q_heads,
                    kv_heads,
                    head_dim: 128,
                }
                .kernels(),
            );
        }
    }
    out
}

fn check(sm: Sm) {
    let Some(nvrtc) = common::nvrtc_or_skip() else {
        return;
    };
    let source = print_module(&kernels());
    let compiled = nvrtc
        .compile(&source, "attention.cu", sm)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !compiled.log.contains("warning"),
        "NVRTC warned:\n{}",
        compiled.log
    );
    let mut reports = compiled.reports.clone();
    reports.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    let mut table = String::new();
    for r in &reports {
        table.push_str(&format!(
            "{:<48} regs {:>3} spills {}/{} stack {} smem {}\n",
            r.kernel, r.registers, r.spill_stores, r.spill_loads, r.stack_bytes, r.shared_bytes
        ));
    }
    for r in &reports {
        assert_eq!(
            (r.spill_stores, r.spill_loads, r.stack_bytes),
            (0, 0, 0),
            "{} spills on {sm}:\n{table}",
            r.kernel
        );
        assert!(
            r.shared_bytes <= sm.max_shared_bytes_per_block(),
            "{} uses too much shared memory",
            r.kernel
        );
    }
    // Pinned for the pinned NVRTC: a register-count change is a change to look at.
    insta::assert_snapshot!(format!("tmpl_attn_ptxas_{}", sm.name()), table);
}

#[test]
fn attention_compiles_for_sm_80() {
    check(Sm::Sm80);
}

#[test]
fn attention_compiles_for_sm_90() {
    check(Sm::Sm90);
}
