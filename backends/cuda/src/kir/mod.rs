//! The kernel IR: a typed, SIMT-level IR with structured control flow. A [`Kernel`] is the body
//! one CUDA thread runs; the printer turns it into `extern "C" __global__` CUDA C++ and the
//! emulator runs it for every thread of every block. Both read exactly this data, so whatever the
//! emulator proves of a kernel holds for the text NVRTC compiled.
//!
//! Conventions both consumers rely on:
//! - Memory is addressed by element index into a buffer (a kernel parameter or a shared array),
//!   never by raw pointer arithmetic, so every access can be bounds-checked.
//! - Index arithmetic is `I64` unless a template chose `I32` on purpose; the emulator reports an
//!   `I32` add/sub/mul that overflows.
//! - `Bf16` values exist only to be loaded, stored, cast or packed: arithmetic happens in `F32`.
//!   `Cast(Bf16, f32)` rounds to nearest even, as `__float2bfloat16_rn`.
//! - A `Var` is a per-thread register; it is declared by exactly one `Let` (or is a loop
//!   variable, or the destination of a `Shfl`/`Mma`/`LoadVec`) before it is read.
//! - The grid is a formula over the kernel's scalar parameters; the block size is constant.

mod build;
mod expr;
mod launch;

pub use build::KernelBuilder;
pub use expr::{BinOp, Expr, Lit, Special, UnOp};
pub use launch::{launch_geometry, Geometry};

use serde::{Deserialize, Serialize};

/// A scalar type: what a register holds or a buffer element is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ty {
    Bool,
    I32,
    U32,
    I64,
    F32,
    Bf16,
}

impl Ty {
    /// Bytes of one element in memory (`Bool` is one byte, as C++ `bool`).
    pub fn size(self) -> usize {
        match self {
            Ty::Bool => 1,
            Ty::Bf16 => 2,
            Ty::I32 | Ty::U32 | Ty::F32 => 4,
            Ty::I64 => 8,
        }
    }

    pub fn is_int(self) -> bool {
        matches!(self, Ty::I32 | Ty::U32 | Ty::I64)
    }

    /// The CUDA C++ spelling.
    pub fn c_name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::I32 => "int",
            Ty::U32 => "unsigned int",
            Ty::I64 => "long long",
            Ty::F32 => "float",
            Ty::Bf16 => "__nv_bfloat16",
        }
    }
}

/// A register, by index into [`Kernel::vars`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VarId(pub u32);

/// A kernel parameter, by index into [`Kernel::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ParamId(pub u32);

/// Memory a kernel addresses: a pointer parameter or a shared-memory array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Buf {
    Param(ParamId),
    Shared(u32),
}

/// How a kernel uses a pointer parameter. `Write` buffers are outputs: every element must be
/// written by the launch (the emulator checks) and none may be read before it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
    /// Read and written (a KV cache being appended to, scratch reused across launches).
    ReadWrite,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ParamKind {
    /// A device pointer to elements of `elem`.
    Buffer { elem: Ty, access: Access },
    /// A scalar passed by value: a length, a position, a count.
    Scalar(Ty),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
}

/// A shared-memory array. `len` is in elements: a constant for static shared memory, or a formula
/// over scalar parameters for dynamic shared memory (`extern __shared__`, sized at launch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    pub name: String,
    pub elem: Ty,
    pub len: Expr,
}

impl Shared {
    pub fn is_static(&self) -> bool {
        matches!(self.len, Expr::Lit(_))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Var {
    pub name: String,
    pub ty: Ty,
}

/// The warp shuffles (`__shfl_*_sync(0xffffffff, …)`): every lane of the warp must take part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Shfl {
    /// Read the value of lane `lane ^ mask`.
    Xor(u32),
    /// Read the value of lane `lane + delta` (own value where that is past the warp).
    Down(u32),
    /// Read the value of lane `src` (an expression: it may differ per lane).
    Idx(Expr),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "statements are built once per compile and walked in place; boxing `Mma` would only make the templates noisier"
)]
pub enum Stmt {
    /// Declares `var` and gives it its first value.
    Let {
        var: VarId,
        init: Expr,
    },
    Assign {
        var: VarId,
        value: Expr,
    },
    Store {
        buf: Buf,
        index: Expr,
        value: Expr,
    },
    /// `vars.len()` (2 or 4, or 8 `Bf16`: one 16-byte access) consecutive elements from `index`,
    /// which must be a multiple of the width (the vector access is aligned); declares the vars.
    LoadVec {
        vars: Vec<VarId>,
        buf: Buf,
        index: Expr,
    },
    StoreVec {
        buf: Buf,
        index: Expr,
        values: Vec<Expr>,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Vec<Stmt>,
    },
    /// `for (var = start; var < end; var += step)`; `var` is declared by the loop. Bounds may
    /// differ between threads (divergent trip counts).
    For {
        var: VarId,
        start: Expr,
        end: Expr,
        step: Expr,
        body: Vec<Stmt>,
    },
    /// `__syncthreads()`: every thread of the block must reach the same barrier.
    Barrier,
    /// `dst = __shfl_*_sync(0xffffffff, value, …)`; declares `dst`.
    Shfl {
        dst: VarId,
        value: Expr,
        mode: Shfl,
    },
    /// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`: `d = a·b + c` for one warp, with
    /// the PTX fragment layouts: `a` four `U32` registers (eight bf16 of the 16×16 row-major A),
    /// `b` two (four bf16 of the 16×8 column-major B), `c` and `d` four `F32`. Declares `d`.
    Mma {
        d: [VarId; 4],
        a: [Expr; 4],
        b: [Expr; 2],
        c: [Expr; 4],
    },
}

/// One `__global__` function and how it is launched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub shared: Vec<Shared>,
    pub vars: Vec<Var>,
    /// Threads per block, constant (x, y, z).
    pub block: [u32; 3],
    /// Blocks per grid (x, y, z): formulas over scalar parameters and literals.
    pub grid: [Expr; 3],
    pub body: Vec<Stmt>,
}

impl Kernel {
    pub fn threads_per_block(&self) -> u32 {
        self.block.iter().product()
    }

    pub fn param(&self, name: &str) -> Option<ParamId> {
        self.params
            .iter()
            .position(|p| p.name == name)
            .map(|i| ParamId(i as u32))
    }

    pub fn var_ty(&self, v: VarId) -> Ty {
        self.vars[v.0 as usize].ty
    }

    /// The element type of a buffer.
    pub fn buf_elem(&self, b: Buf) -> Ty {
        match b {
            Buf::Param(p) => match &self.params[p.0 as usize].kind {
                ParamKind::Buffer { elem, .. } => *elem,
                ParamKind::Scalar(_) => panic!(
                    "param {} is a scalar, not a buffer",
                    self.params[p.0 as usize].name
                ),
            },
            Buf::Shared(s) => self.shared[s as usize].elem,
        }
    }

    pub fn buf_name(&self, b: Buf) -> &str {
        match b {
            Buf::Param(p) => &self.params[p.0 as usize].name,
            Buf::Shared(s) => &self.shared[s as usize].name,
        }
    }

    /// Static shared memory in bytes (dynamic arrays excluded).
    pub fn static_shared_bytes(&self) -> usize {
        self.shared
            .iter()
            .filter_map(|s| match s.len {
                Expr::Lit(Lit::I64(n)) => Some(n as usize * s.elem.size()),
                Expr::Lit(Lit::I32(n)) => Some(n as usize * s.elem.size()),
                _ => None,
            })
            .sum()
    }
}
