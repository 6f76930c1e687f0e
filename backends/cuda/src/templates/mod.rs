//! Kernel templates: Rust builders that emit kernel IR, one module per fused-op family. A
//! template instance fixes what the checkpoint fixes (dtype, hidden size, head_dim, group size,
//! eps, RoPE θ) and leaves lengths (rows, tokens, patches, KV length) as scalar parameters.
//!
//! Every instance states its meaning as a one-op IR graph (`reference`): `vl3c test-kernels`
//! runs that graph on the reference executor and the kernels on a backend (the emulator, or a
//! GPU) on the same random inputs, and compares. Binding is by name, for the harness and the
//! engine alike:
//! - a buffer parameter named like a graph input reads that input; a buffer named like a graph
//!   output (`out`, and e.g. `sum` for a norm that also writes its residual sum) receives it;
//!   any other buffer is scratch, sized by [`Template::scratch`];
//! - a scalar parameter named like a graph symbol gets that symbol's value.

mod block_reduce;
pub mod cache;
mod chain;
mod elem;
mod elementwise;
mod index;
mod layout;
mod prim_cases;
mod reduce;
mod scan;

pub mod activation;
pub mod attention;
pub mod embed;
pub mod gemv;
pub mod norm;
pub mod prune;
pub mod rope;
pub mod softmax;
pub mod vision;

pub use cache::CacheAppend;
pub use chain::ElementwiseChain;
pub use elem::FloatTy;
pub use index::MaskedRows;
pub use reduce::Reduce;

use crate::kir::{Kernel, Ty};
use std::collections::BTreeMap;
use std::sync::Arc;
use vl3c_ir::{Dim, Graph};

/// Symbol values of one case, by name (`rows`, `n`, `kv_len`, …).
pub type Sizes = BTreeMap<String, i64>;

/// A buffer the kernels of one instance pass between them (split-KV partials, prefix sums). Its
/// length is a formula over the instance's symbols, so an engine's plan can carry it and a
/// loader size it without the template's code.
#[derive(Clone, Debug, PartialEq)]
pub struct Scratch {
    pub name: String,
    pub elem: Ty,
    pub len: Dim,
}

impl Scratch {
    /// The length at `sizes` (at least one element: a zero-length launch still binds the buffer).
    pub fn len_at(&self, sizes: &Sizes) -> Result<usize, String> {
        let env: std::collections::HashMap<String, i64> =
            sizes.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let n = self
            .len
            .eval(&env)
            .map_err(|e| format!("scratch `{}` = {}: {e}", self.name, self.len))?;
        usize::try_from(n.max(1)).map_err(|_| format!("scratch `{}` = {n} elements", self.name))
    }
}

pub trait Template: Send + Sync {
    /// The op family, as `-o` selects it: `rms_norm`, `attention_decode`.
    fn op(&self) -> &'static str;
    /// The instance, as test-kernels prints it and `-p` matches it, in the style of
    /// test-backend-ops' `vars()`: `rms_norm(dtype=bf16,hidden=1536)`.
    fn name(&self) -> String;
    /// The kernels, launched in this order.
    fn kernels(&self) -> Vec<Kernel>;
    /// What this instance computes, as a small IR graph (usually one op) whose outputs are named
    /// like the kernels' output buffers.
    fn reference(&self) -> Graph;
    /// Scratch buffers, their lengths over the instance's symbols.
    fn scratch(&self) -> Vec<Scratch> {
        Vec::new()
    }
    /// Values for an integer or bool graph input (segment ids, token ids, masks); `None` for
    /// float inputs, which get uniform values in [-1, 1].
    fn int_input(&self, _name: &str, _sizes: &Sizes) -> Option<Vec<i64>> {
        None
    }
    /// The largest normalized mean squared error against the reference that passes.
    fn nmse_limit(&self) -> f64;
}

/// One template instance at one set of sizes: a test-kernels case.
#[derive(Clone)]
pub struct Case {
    pub template: Arc<dyn Template>,
    pub sizes: Sizes,
}

impl Case {
    pub fn new(template: impl Template + 'static, sizes: &[(&str, i64)]) -> Case {
        Case {
            template: Arc::new(template),
            sizes: sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    /// `rms_norm(dtype=bf16,hidden=1536) rows=7`
    pub fn label(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} {}", self.template.name(), sizes.join(","))
    }
}

/// The NMSE limits of test-backend-ops, by what the kernel computes.
pub const NMSE_F32: f64 = 1e-7;
pub const NMSE_BF16: f64 = 5e-4;

/// Every case `vl3c test-kernels` runs: each template at the real per-layer sizes of the 2B and
/// 7B configs with short sequences, and at odd ones (length 1, 7, 129).
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    out.extend(gemv::cases());
    out.extend(norm::cases());
    out.extend(activation::cases());
    out.extend(softmax::cases());
    out.extend(rope::cases());
    out.extend(prune::cases());
    out.extend(vision::cases());
    out.extend(embed::cases());
    out.extend(prim_cases::cases());
    out.extend(attention::cases());
    out
}
