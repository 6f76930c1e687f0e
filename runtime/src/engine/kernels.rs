//! The generated kernels of `kernels.o`, called on the executor's operands. The loader only
//! maps and relocates the object (no recompilation) and checks it holds the plan's kernels.

use crate::exec::Tensor;
use vl3c_cpu::codegen::LoadedKernels;
use vl3c_cpu::elementwise::{self, Act};
use vl3c_cpu::has_avx512_bf16;
use vl3c_cpu::plan::KernelDesc;

pub(crate) struct Kernels {
    loaded: LoadedKernels,
    descs: Vec<KernelDesc>,
}

impl Kernels {
    pub(crate) fn load(object: &[u8], descs: &[KernelDesc]) -> Result<Kernels, String> {
        let loaded = LoadedKernels::load(object).map_err(|e| e.to_string())?;
        let specs: Vec<_> = descs.iter().map(|d| d.spec()).collect();
        loaded.check_specs(&specs).map_err(|e| e.to_string())?;
        Ok(Kernels {
            loaded,
            descs: descs.to_vec(),
        })
    }

    /// Runs kernel `k` on `ops` (the node's operands); the result has the first operand's
    /// shape (every kernel here maps rows of `x` to rows of the same width).
    pub(crate) fn run(&self, k: usize, ops: &[&Tensor], threads: usize) -> Result<Tensor, String> {
        let desc = *self
            .descs
            .get(k)
            .ok_or_else(|| format!("kernel {k} is not in kernels.o"))?;
        let x = ops.first().ok_or("kernel without operands")?;
        let xs = x.as_f32();
        let n = xs.len();
        let mut out = vec![0f32; n];
        let vals: Vec<_> = ops.iter().map(|t| t.as_f32()).collect();
        let need = |i: usize, len: usize| match vals.get(i) {
            Some(v) if v.len() == len => Ok(v.as_ptr()),
            _ => Err(format!(
                "kernel {k} ({desc:?}): operand {i} does not have {len} elements"
            )),
        };
        let e = |e: vl3c_cpu::codegen::CodegenError| e.to_string();
        let rows = |width: usize| {
            if width == 0 || n % width != 0 {
                Err(format!(
                    "kernel {k} ({desc:?}): {n} elements are not rows of {width}"
                ))
            } else {
                Ok((n / width) as i64)
            }
        };
        // On AVX-512 the hot row and element ops run on the backends' vector kernels, on all
        // threads (Cranelift's x86 backend has 128-bit vectors only); the generated code
        // otherwise. Same formulas either way.
        if has_avx512_bf16() {
            let fast = match desc {
                KernelDesc::LayerNorm { width, eps } => {
                    rows(width)?;
                    let (w, b) = (
                        vals.get(1).filter(|v| v.len() == width),
                        vals.get(2).filter(|v| v.len() == width),
                    );
                    let (w, b) = w.zip(b).ok_or_else(|| {
                        format!("kernel {k} ({desc:?}): norm parameters are not [{width}]")
                    })?;
                    elementwise::layer_norm(&xs, w, b, eps as f32, &mut out, threads);
                    true
                }
                KernelDesc::RmsNorm { width, eps } => {
                    rows(width)?;
                    let w = vals.get(1).filter(|v| v.len() == width).ok_or_else(|| {
                        format!("kernel {k} ({desc:?}): norm weight is not [{width}]")
                    })?;
                    elementwise::rms_norm(&xs, w, eps as f32, &mut out, threads);
                    true
                }
                KernelDesc::GeluTanh => {
                    elementwise::activation(Act::GeluTanh, &xs, &mut out, threads);
                    true
                }
                KernelDesc::Silu => {
                    elementwise::activation(Act::Silu, &xs, &mut out, threads);
                    true
                }
                KernelDesc::SwiGlu => {
                    let up = vals.get(1).filter(|v| v.len() == n).ok_or_else(|| {
                        format!("kernel {k} ({desc:?}): operand 1 does not have {n} elements")
                    })?;
                    elementwise::swiglu(&xs, n, up, n, 1, n, &mut out, threads);
                    true
                }
                KernelDesc::GeluErf | KernelDesc::Softmax { .. } => false,
            };
            if fast {
                return Ok(Tensor::f32(x.shape.clone(), out));
            }
        }
        let (o, xp) = (out.as_mut_ptr(), xs.as_ptr());
        // SAFETY: every pointer covers the element count the kernel's ABI reads or writes for
        // the given row / element count (checked above), `out` is a fresh buffer of `n`
        // elements, and the function pointers stay valid while `self.loaded` lives.
        unsafe {
            match desc {
                KernelDesc::LayerNorm { width, .. } => {
                    let r = rows(width)?;
                    self.loaded.layer_norm(k).map_err(e)?(
                        o,
                        xp,
                        need(1, width)?,
                        need(2, width)?,
                        r,
                    )
                }
                KernelDesc::RmsNorm { width, .. } => {
                    let r = rows(width)?;
                    self.loaded.rms_norm(k).map_err(e)?(o, xp, need(1, width)?, r)
                }
                KernelDesc::Softmax { width } => {
                    let r = rows(width)?;
                    self.loaded.softmax(k).map_err(e)?(o, xp, r)
                }
                KernelDesc::GeluTanh | KernelDesc::GeluErf | KernelDesc::Silu => {
                    self.loaded.unary(k).map_err(e)?(o, xp, n as i64)
                }
                KernelDesc::SwiGlu => {
                    self.loaded.binary(k).map_err(e)?(o, xp, need(1, n)?, n as i64)
                }
            }
        }
        Ok(Tensor::f32(x.shape.clone(), out))
    }
}
