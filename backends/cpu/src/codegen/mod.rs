//! Native code for the fused non-matmul ops, generated with Cranelift and shipped as an object
//! file: the engine compiles its kernels once, stores the `.o`, and at load time only maps and
//! relocates it ([`LoadedKernels::load`]); nothing is recompiled.
//!
//! A [`KernelSpec`] is one kernel instance, independent of any graph. Widths, `eps` and the
//! attention scale are baked in as constants (specialization is the point: the vector loop bound
//! is known and the `width % 4` tail is straight-line code); row and element counts are runtime
//! arguments (they are symbolic dims in the IR). Inner loops use Cranelift's 128-bit SIMD
//! (`F32X4` loads, arithmetic, stores; horizontal max/sum at row end), followed by a scalar
//! tail. `exp`/`tanh`/`erf` are inline CLIF ([`math`]), so the object calls nothing outside
//! itself. Arithmetic follows `ir/reference/src/fused.rs`: same operation order, f32 rounding,
//! sums accumulated in f64, `rsqrt` in f64.
//!
//! # ABI
//!
//! Every kernel is `unsafe extern "C"` (the host's C calling convention), returns nothing, and
//! is exported as `vl3c_k{index}_{kind}{abi}` where `index` is its position in the slice given to
//! [`compile_kernels`] and `abi` the constants compiled into it (`__w{width}`, `__e{eps bits}`,
//! `__d{d}`, `__s{scale bits}`; see [`KernelSpec::abi`]), so a loader checks a plan's kernel list
//! against the code it calls: a norm compiled for rows of 1024 never runs on rows of 896. Data is contiguous row-major f32; pointers need no alignment; counts are
//! `i64` and a count ≤ 0 does nothing. `out` may equal the first input (in place) for every kind.
//!
//! | kind (`KernelSpec`) | signature | computes |
//! |---|---|---|
//! | `layer_norm` (`LayerNorm { width, eps }`) | `fn(out, x, w, b, rows)` | per row of `width`: `(x − mean)·rsqrt(var + eps)·w + b` |
//! | `rms_norm` (`RmsNorm { width, eps }`) | `fn(out, x, w, rows)` | per row: `x·rsqrt(mean(x²) + eps)·w` |
//! | `softmax` (`Softmax { width }`) | `fn(out, x, rows)` | per row: `exp(x − max)/Σ`; −inf entries give 0, a row without a finite entry gives NaN |
//! | `rope` (`Rope { d }`) | `fn(out, x, cos, sin, rows, table_rows)` | per row r of `d`: `x·cos + rotate_half(x)·sin` with table row `r % table_rows`; `table_rows < 1` does nothing |
//! | `gelu_tanh` / `gelu_erf` (`Gelu { tanh }`) | `fn(out, x, n)` | per element |
//! | `silu` (`Silu`) | `fn(out, x, n)` | `x/(1 + e^{−x})` |
//! | `swiglu` (`SwiGlu`) | `fn(out, gate, up, n)` | `silu(gate)·up` |
//! | `add` (`Add`) | `fn(out, a, b, n)` | `a + b` (residual add) |
//! | `add_bias` (`AddBias { width }`) | `fn(out, x, bias, rows)` | `x[r][j] + bias[j]` |
//! | `attention_softmax` (`AttentionSoftmax { scale, mask }`) | `fn(s, seg_q: *const i64, seg_k: *const i64, rows, cols, offset)` | in place on the `rows × cols` scores of one head: `s·scale` where allowed, else −inf, then softmax per row |
//!
//! `attention_softmax` masks: `Full` ignores `seg_*` and `offset`; `Causal` lets row i see
//! columns `j ≤ offset + i` (offset = keys − queries for a whole head; add the first row's index
//! when a call covers a slice of rows), `seg_*` ignored; `Segments` lets row i see column j iff
//! `seg_q[i] == seg_k[j]` (`seg_q` is offset along with `s` for a slice of rows; `seg_k` has
//! `cols` entries), `offset` ignored. Null pointers are fine where an argument is ignored.
//!
//! # Accuracy
//!
//! Adds, bias adds, RoPE and the norms are within 1–2 ulp of the reference (the norms only differ
//! in the order of f64 additions); exp-based kernels carry [`math`]'s error (see there and the
//! measured numbers in `backends/cpu/tests/codegen.rs`).

mod builder;
mod elementwise;
mod loader;
mod math;
mod norm;
mod softmax;

pub use loader::{
    AddBiasFn, AttentionSoftmaxFn, BinaryFn, LayerNormFn, LoadedKernels, RmsNormFn, RopeFn,
    SoftmaxFn, UnaryFn,
};
pub use vl3c_ir::AttentionMask as MaskKind;

use cranelift_codegen::ir::{types, AbiParam, Function, Signature, UserFuncName};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use elementwise::{Binary, Unary};

/// One kernel instance. Sizes here are compile-time constants of the generated code.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelSpec {
    LayerNorm {
        width: usize,
        eps: f64,
    },
    RmsNorm {
        width: usize,
        eps: f64,
    },
    Softmax {
        width: usize,
    },
    Rope {
        d: usize,
    },
    Gelu {
        tanh: bool,
    },
    Silu,
    SwiGlu,
    Add,
    AddBias {
        width: usize,
    },
    /// Scale, mask and softmax of one head's score rows, between its two GEMMs.
    AttentionSoftmax {
        scale: f64,
        mask: MaskKind,
    },
}

/// Errors from generating or loading kernels.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("kernel {index} ({spec:?}): {reason}")]
    InvalidSpec {
        index: usize,
        spec: KernelSpec,
        reason: String,
    },
    #[error("host ISA: {0}")]
    Isa(String),
    #[error("cranelift: {0}")]
    Cranelift(String),
    #[error("malformed kernel object: {0}")]
    Object(String),
    #[error("kernel {index}: {reason}")]
    Kernel { index: usize, reason: String },
    #[error("mapping kernel code: {0}")]
    Map(#[from] std::io::Error),
}

/// An object file holding compiled kernels (ELF relocatable on Linux).
#[derive(Clone, Debug)]
pub struct ObjectCode {
    /// The `.o` bytes, ready to be written to disk and given to [`LoadedKernels::load`].
    pub bytes: Vec<u8>,
    /// The exported symbol of each kernel, by index.
    pub symbols: Vec<String>,
}

impl KernelSpec {
    /// The kind's name, as used in the exported symbol.
    pub fn kind(&self) -> &'static str {
        match self {
            KernelSpec::LayerNorm { .. } => "layer_norm",
            KernelSpec::RmsNorm { .. } => "rms_norm",
            KernelSpec::Softmax { .. } => "softmax",
            KernelSpec::Rope { .. } => "rope",
            KernelSpec::Gelu { tanh: true } => "gelu_tanh",
            KernelSpec::Gelu { tanh: false } => "gelu_erf",
            KernelSpec::Silu => "silu",
            KernelSpec::SwiGlu => "swiglu",
            KernelSpec::Add => "add",
            KernelSpec::AddBias { .. } => "add_bias",
            KernelSpec::AttentionSoftmax { .. } => "attention_softmax",
        }
    }

    /// The constants compiled into the kernel, as its symbol carries them after the kind
    /// (empty for kinds without any): what the code assumes beyond its signature.
    pub fn abi(&self) -> String {
        match *self {
            KernelSpec::LayerNorm { width, eps } | KernelSpec::RmsNorm { width, eps } => {
                format!("__w{width}__e{:016x}", eps.to_bits())
            }
            KernelSpec::Softmax { width } | KernelSpec::AddBias { width } => format!("__w{width}"),
            KernelSpec::Rope { d } => format!("__d{d}"),
            KernelSpec::AttentionSoftmax { scale, .. } => format!("__s{:016x}", scale.to_bits()),
            KernelSpec::Gelu { .. } | KernelSpec::Silu | KernelSpec::SwiGlu | KernelSpec::Add => {
                String::new()
            }
        }
    }

    /// `(pointer arguments, i64 arguments)` of the kernel's ABI, in that order.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            KernelSpec::LayerNorm { .. } => (4, 1),
            KernelSpec::RmsNorm { .. }
            | KernelSpec::SwiGlu
            | KernelSpec::Add
            | KernelSpec::AddBias { .. } => (3, 1),
            KernelSpec::Softmax { .. } | KernelSpec::Gelu { .. } | KernelSpec::Silu => (2, 1),
            KernelSpec::Rope { .. } => (4, 2),
            KernelSpec::AttentionSoftmax { .. } => (3, 3),
        }
    }

    fn validate(&self, index: usize) -> Result<(), CodegenError> {
        let bad = |reason: &str| {
            Err(CodegenError::InvalidSpec {
                index,
                spec: *self,
                reason: reason.into(),
            })
        };
        // Widths become i64 immediates and element offsets; keep them far from overflow.
        const MAX_WIDTH: usize = 1 << 24;
        match *self {
            KernelSpec::LayerNorm { width, eps } | KernelSpec::RmsNorm { width, eps } => {
                if width == 0 || width > MAX_WIDTH {
                    return bad("width must be in 1..=2^24");
                }
                if !eps.is_finite() || eps < 0.0 {
                    return bad("eps must be finite and >= 0");
                }
            }
            KernelSpec::Softmax { width } | KernelSpec::AddBias { width } => {
                if width == 0 || width > MAX_WIDTH {
                    return bad("width must be in 1..=2^24");
                }
            }
            KernelSpec::Rope { d } => {
                if d == 0 || d % 2 != 0 || d > MAX_WIDTH {
                    return bad("d must be even, in 2..=2^24");
                }
            }
            KernelSpec::AttentionSoftmax { scale, .. } => {
                if !scale.is_finite() {
                    return bad("scale must be finite");
                }
            }
            KernelSpec::Gelu { .. } | KernelSpec::Silu | KernelSpec::SwiGlu | KernelSpec::Add => {}
        }
        Ok(())
    }
}

/// The exported symbol of kernel `index`.
pub fn symbol_name(index: usize, spec: &KernelSpec) -> String {
    format!("vl3c_k{index}_{}{}", spec.kind(), spec.abi())
}

/// The host's ISA (cranelift-native feature detection), optimizing for speed, without unwind
/// tables (kernels call nothing and never unwind) so the object holds code and nothing to
/// relocate besides what the code itself needs.
fn host_isa() -> Result<OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| CodegenError::Isa(format!("{k}={v}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "unwind_info", "false")?;
    set(&mut flags, "is_pic", "true")?;
    let builder = cranelift_native::builder().map_err(|e| CodegenError::Isa(e.to_string()))?;
    builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| CodegenError::Isa(e.to_string()))
}

fn signature(spec: &KernelSpec, call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    let (ptrs, ints) = spec.arity();
    // Pointers are I64: only 64-bit targets are supported (see the loader).
    for _ in 0..ptrs + ints {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Builds the CLIF of kernel `index` (not yet optimized or compiled).
fn build_function(
    index: usize,
    spec: &KernelSpec,
    call_conv: CallConv,
    config: TargetFrontendConfig,
    fctx: &mut FunctionBuilderContext,
) -> Result<Function, CodegenError> {
    spec.validate(index)?;
    let mut func = Function::with_name_signature(
        UserFuncName::user(0, index as u32),
        signature(spec, call_conv),
    );
    let mut b = FunctionBuilder::new(&mut func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry).to_vec();
    match *spec {
        KernelSpec::LayerNorm { width, eps } => {
            norm::layer_norm(&mut b, &p, width as i64, eps as f32)
        }
        KernelSpec::RmsNorm { width, eps } => norm::rms_norm(&mut b, &p, width as i64, eps as f32),
        KernelSpec::Softmax { width } => softmax::softmax(&mut b, &p, width as i64),
        KernelSpec::Rope { d } => elementwise::rope(&mut b, &p, d as i64),
        KernelSpec::Gelu { tanh } => elementwise::unary(
            &mut b,
            &p,
            if tanh {
                Unary::GeluTanh
            } else {
                Unary::GeluErf
            },
        ),
        KernelSpec::Silu => elementwise::unary(&mut b, &p, Unary::Silu),
        KernelSpec::SwiGlu => elementwise::binary(&mut b, &p, Binary::SwiGlu),
        KernelSpec::Add => elementwise::binary(&mut b, &p, Binary::Add),
        KernelSpec::AddBias { width } => elementwise::add_bias(&mut b, &p, width as i64),
        KernelSpec::AttentionSoftmax { scale, mask } => {
            softmax::attention_softmax(&mut b, &p, scale as f32, mask)
        }
    }
    b.finalize(config);
    Ok(func)
}

/// The CLIF text of one kernel as built, before Cranelift optimizes it, for the System V calling
/// convention so the snapshots do not depend on the host.
pub fn clif_text(index: usize, spec: &KernelSpec) -> Result<String, CodegenError> {
    // Only the calling convention shows in the text; the rest of the host's config does not.
    let mut config = host_isa()?.frontend_config();
    config.default_call_conv = CallConv::SystemV;
    let func = build_function(
        index,
        spec,
        CallConv::SystemV,
        config,
        &mut FunctionBuilderContext::new(),
    )?;
    Ok(func.display().to_string())
}

/// Compiles `specs` for the host into one object file, kernel i exported as `vl3c_k{i}_{kind}{abi}`.
/// The object is checked to be self-contained (every relocation resolves inside it).
pub fn compile_kernels(specs: &[KernelSpec]) -> Result<ObjectCode, CodegenError> {
    let isa = host_isa()?;
    if isa.pointer_bytes() != 8 {
        return Err(CodegenError::Isa(
            "only 64-bit targets are supported".into(),
        ));
    }
    let call_conv = isa.default_call_conv();
    let config = isa.frontend_config();
    let builder = ObjectBuilder::new(
        isa,
        "vl3c_kernels",
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
    let mut module = ObjectModule::new(builder);
    let mut fctx = FunctionBuilderContext::new();
    let mut symbols = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let func = build_function(index, spec, call_conv, config, &mut fctx)?;
        let name = symbol_name(index, spec);
        let id = module
            .declare_function(&name, Linkage::Export, &func.signature)
            .map_err(|e| CodegenError::Cranelift(format!("{name}: {e}")))?;
        let mut ctx = Context::for_function(func);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::Cranelift(format!("{name}: {e:?}")))?;
        symbols.push(name);
    }
    let bytes = module
        .finish()
        .emit()
        .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
    loader::check_self_contained(&bytes)?;
    Ok(ObjectCode { bytes, symbols })
}
