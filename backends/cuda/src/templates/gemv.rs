//! Decode GEMV: `out[rows, N] = x[rows, K] · W (+ bias) (+ residual)` for the few-token steps
//! (`rows` is 1 in decode), where cuBLASLt's tile setup costs more than the bytes it moves.
//!
//! The weight lives on the device as `w_nk`, `[N, K]` row-major (nn.Linear's layout), so one
//! output feature is one contiguous run of K: each warp streams whole rows of W with 16-byte
//! loads per lane, accumulates in f32 and finishes with a butterfly of warp shuffles. A warp
//! owns `outputs_per_warp` features so every x chunk it loads serves that many weight rows.
//!
//! When N is small the grid would leave SMs idle (the 2B's k/v projections: N = 256), so a
//! split-K instance has each block reduce one K slice into an f32 scratch `partials[split, row,
//! n]`, and a second kernel sums the slices and applies the epilogue.
//!
//! The weight's element type may differ from the activations': a bf16 checkpoint computing in
//! f32 keeps its weights in bf16 (exact: they came from bf16), so decode streams half the bytes,
//! while x, the epilogue and `out` stay f32. Each product `w·x` is then exact in f32 and the sum
//! accumulates in f32, as the reference does, so the two differ only by summation order.
//!
//! The reference graph reads the same `w_nk` input (cast to f32 when it is bf16 under f32
//! activations) and transposes it to the `[K, N]` operand `fused_matmul` takes, so both sides
//! see the same random weight.

use super::{Case, Scratch, Template, NMSE_BF16, NMSE_F32};
use crate::kir::{Access, Buf, Expr, Kernel, KernelBuilder, Ty};
use vl3c_ir::{DType, Dim, Graph, Op, TensorType};

const WARP: i64 = 32;
const WARPS_PER_BLOCK: i64 = 8;
/// Bytes one lane loads from a weight row per step: a 128-bit load.
const LANE_CHUNK_BYTES: i64 = 16;
/// The GPU the schedule is sized for (H200: 132 SMs).
const SM_COUNT: i64 = 132;
const REDUCE_THREADS: i64 = 256;

/// One GEMV instance: what the checkpoint fixes (dtypes, K, N, epilogue) and the schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemv {
    /// x, bias, residual and `out`.
    pub dtype: Ty,
    /// `w_nk`: `dtype`, or bf16 under f32 activations.
    pub weight: Ty,
    pub k: i64,
    pub n: i64,
    pub bias: bool,
    pub residual: bool,
    pub outputs_per_warp: i64,
    /// K slices reduced by separate blocks; 1 is the single-kernel GEMV.
    pub split_k: i64,
}

impl Gemv {
    /// The schedule this module picks for a shape: two features per warp, and split-K when
    /// the grid alone would not give every SM a block.
    pub fn new(dtype: Ty, k: i64, n: i64, bias: bool, residual: bool) -> Gemv {
        Gemv::with_weight(dtype, dtype, k, n, bias, residual)
    }

    /// [`Gemv::new`] with weights of element type `weight` (bf16 under f32 activations).
    pub fn with_weight(dtype: Ty, weight: Ty, k: i64, n: i64, bias: bool, residual: bool) -> Gemv {
        let outputs_per_warp = 2;
        let blocks = ceil_div(n, WARPS_PER_BLOCK * outputs_per_warp);
        // The weight rows are what a lane streams: its 16-byte chunks set the step.
        let chunk = lane_chunk(weight);
        let steps = k / (WARP * chunk);
        let split_k = if blocks >= SM_COUNT || steps <= 1 {
            1
        } else {
            // The fewest whole-step slices that fill the SMs, else the most there are.
            // A slice must hold whole lane chunks, which whole steps do only when K has no tail.
            let whole = |d: &i64| steps % d == 0 && k % (chunk * d) == 0;
            (1..=steps.min(16))
                .filter(whole)
                .find(|d| blocks * d >= SM_COUNT)
                .unwrap_or_else(|| {
                    (1..=steps.min(16))
                        .filter(whole)
                        .max()
                        .expect("1 divides every step count")
                })
        };
        Gemv {
            dtype,
            weight,
            k,
            n,
            bias,
            residual,
            outputs_per_warp,
            split_k,
        }
        .checked()
    }

    /// Whether a GEMV over `k` inputs of `dtype` exists: every lane loads whole 16-byte chunks.
    pub fn supports(dtype: Ty, k: i64) -> bool {
        Gemv::supports_weight(dtype, dtype, k)
    }

    /// [`Gemv::supports`] with weights of element type `weight`: the same type as x, or bf16
    /// under f32 x (whose chunk of 8 is two 16-byte loads of x).
    pub fn supports_weight(dtype: Ty, weight: Ty, k: i64) -> bool {
        let types = matches!(
            (dtype, weight),
            (Ty::F32, Ty::F32) | (Ty::Bf16, Ty::Bf16) | (Ty::F32, Ty::Bf16)
        );
        types && k > 0 && k % lane_chunk(weight) == 0
    }

    /// The same shape with a chosen schedule.
    pub fn with_schedule(mut self, outputs_per_warp: i64, split_k: i64) -> Gemv {
        self.outputs_per_warp = outputs_per_warp;
        self.split_k = split_k;
        self.checked()
    }

    fn checked(self) -> Gemv {
        let chunk = lane_chunk(self.weight);
        assert!(
            matches!((self.dtype, self.weight), (Ty::F32, Ty::F32) | (Ty::Bf16, Ty::Bf16) | (Ty::F32, Ty::Bf16)),
            "gemv is for f32 or bf16 weights under activations of the same type, or bf16 weights under f32, not {:?} under {:?}",
            self.weight,
            self.dtype
        );
        assert!(
            self.k > 0 && self.n > 0 && self.outputs_per_warp > 0 && self.split_k > 0,
            "{self:?}"
        );
        assert!(
            self.k % (chunk * self.split_k) == 0,
            "K = {} must split into {} slices of whole {chunk}-element chunks",
            self.k,
            self.split_k
        );
        self
    }

    /// Unique per instance, so one module can hold every instance's kernels.
    fn kernel_name(&self, kind: &str) -> String {
        format!(
            "{kind}_{}{}_k{}_n{}{}{}_o{}_s{}",
            dtype_name(self.dtype),
            if self.mixed() {
                format!("_w{}", dtype_name(self.weight))
            } else {
                String::new()
            },
            self.k,
            self.n,
            if self.bias { "_bias" } else { "" },
            if self.residual { "_residual" } else { "" },
            self.outputs_per_warp,
            self.split_k
        )
    }

    fn outputs_per_block(&self) -> i64 {
        WARPS_PER_BLOCK * self.outputs_per_warp
    }

    /// Whether the weight's element type differs from the activations'.
    fn mixed(&self) -> bool {
        self.weight != self.dtype
    }

    /// The dot-product kernel: with one slice it also applies the epilogue and writes `out`;
    /// with several it writes each slice's f32 sums to `partials`.
    fn dot_kernel(&self) -> Kernel {
        let split = self.split_k > 1;
        let name = if split { "gemv_splitk_partial" } else { "gemv" };
        let mut b = KernelBuilder::new(
            self.kernel_name(name),
            [(WARP * WARPS_PER_BLOCK) as u32, 1, 1],
        );
        let x = b.buffer("x", self.dtype, Access::Read);
        let w = b.buffer("w_nk", self.weight, Access::Read);
        let (bias, residual, dst) = if split {
            (None, None, b.buffer("partials", Ty::F32, Access::Write))
        } else {
            let bias = self
                .bias
                .then(|| b.buffer("bias", self.dtype, Access::Read));
            let residual = self
                .residual
                .then(|| b.buffer("residual", self.dtype, Access::Read));
            (bias, residual, b.buffer("out", self.dtype, Access::Write))
        };
        let rows = b.scalar("rows", Ty::I64);
        b.grid(
            Expr::u32(ceil_div(self.n, self.outputs_per_block()) as u32),
            rows.clone().cast(Ty::U32),
            Expr::u32(self.split_k as u32),
        );

        let (k, n) = (Expr::i64(self.k), Expr::i64(self.n));
        let lane = b.let_("lane", b.lane().cast(Ty::I64));
        let warp = b.let_("warp", b.thread_idx(0).cast(Ty::I64) / Expr::i64(WARP));
        let row = b.let_("row", b.block_idx(1).cast(Ty::I64));
        let slice = b.let_("slice", b.block_idx(2).cast(Ty::I64));
        let first = b.let_(
            "first",
            (b.block_idx(0).cast(Ty::I64) * Expr::i64(WARPS_PER_BLOCK) + warp)
                * Expr::i64(self.outputs_per_warp),
        );
        // Features past N (the last block's tail) read row N-1 and are never stored, so every
        // lane of every warp runs the shuffles.
        let features: Vec<Expr> = (0..self.outputs_per_warp)
            .map(|j| {
                b.let_(
                    &format!("feature{j}"),
                    (first.clone() + Expr::i64(j)).min(Expr::i64(self.n - 1)),
                )
            })
            .collect();
        let accs: Vec<_> = (0..self.outputs_per_warp)
            .map(|j| b.var(&format!("acc{j}"), Expr::f32(0.0)))
            .collect();

        let chunk = lane_chunk(self.weight);
        // x in 16-byte loads too: one per chunk, or two f32 loads per chunk of 8 bf16 weights.
        let x_chunk = lane_chunk(self.dtype).min(chunk);
        let slice_len = self.k / self.split_k;
        let k_begin = b.let_("k_begin", slice.clone() * Expr::i64(slice_len));
        let k_end = b.let_("k_end", k_begin.clone() + Expr::i64(slice_len));
        let x_row = b.let_("x_row", row.clone() * k.clone());
        b.for_(
            "kk",
            k_begin + lane.clone() * Expr::i64(chunk),
            k_end,
            Expr::i64(WARP * chunk),
            |b, kk| {
                let mut xs = Vec::with_capacity(chunk as usize);
                for part in 0..chunk / x_chunk {
                    let (name, at) = match part {
                        0 => ("x".to_string(), x_row.clone() + kk.clone()),
                        // The only other case: the upper half of 8 f32 under 8 bf16 weights.
                        _ => (
                            format!("x_hi{part}_"),
                            x_row.clone() + kk.clone() + Expr::i64(part * x_chunk),
                        ),
                    };
                    xs.extend(load_chunk(b, &name, x, at, x_chunk));
                }
                for (j, feature) in features.iter().enumerate() {
                    let ws = load_chunk(
                        b,
                        &format!("w{j}_"),
                        w,
                        feature.clone() * k.clone() + kk.clone(),
                        chunk,
                    );
                    let mut sum = Expr::Var(accs[j]);
                    for (wv, xv) in ws.into_iter().zip(xs.iter()) {
                        sum = Expr::fma(as_f32(wv), as_f32(xv.clone()), sum);
                    }
                    b.assign(accs[j], sum);
                }
            },
        );

        for (j, acc) in accs.iter().enumerate() {
            let mut total = Expr::Var(*acc);
            for mask in [16, 8, 4, 2, 1] {
                let partner = b.shfl_xor(&format!("partner{j}_{mask}_"), total.clone(), mask);
                total = b.let_(&format!("sum{j}_{mask}_"), total + partner);
            }
            let feature = first.clone() + Expr::i64(j as i64);
            let stores = lane
                .clone()
                .eq(Expr::i64(0))
                .and(feature.clone().lt(n.clone()));
            b.if_(stores, |b| {
                if split {
                    let at = (slice.clone() * rows.clone() + row.clone()) * n.clone() + feature;
                    b.store(dst, at, total);
                } else {
                    let value = epilogue(total, bias, residual, &row, &feature, &n);
                    b.store(
                        dst,
                        row.clone() * n.clone() + feature,
                        value.cast(self.dtype),
                    );
                }
            });
        }
        b.finish()
    }

    /// Sums the K slices of one (row, feature) per thread and applies the epilogue.
    fn reduce_kernel(&self) -> Kernel {
        let mut b = KernelBuilder::new(
            self.kernel_name("gemv_splitk_reduce"),
            [REDUCE_THREADS as u32, 1, 1],
        );
        let partials = b.buffer("partials", Ty::F32, Access::Read);
        let bias = self
            .bias
            .then(|| b.buffer("bias", self.dtype, Access::Read));
        let residual = self
            .residual
            .then(|| b.buffer("residual", self.dtype, Access::Read));
        let out = b.buffer("out", self.dtype, Access::Write);
        let rows = b.scalar("rows", Ty::I64);
        b.grid(
            Expr::u32(ceil_div(self.n, REDUCE_THREADS) as u32),
            rows.clone().cast(Ty::U32),
            Expr::u32(1),
        );
        let n = Expr::i64(self.n);
        let feature = b.let_(
            "feature",
            b.block_idx(0).cast(Ty::I64) * Expr::i64(REDUCE_THREADS)
                + b.thread_idx(0).cast(Ty::I64),
        );
        let row = b.let_("row", b.block_idx(1).cast(Ty::I64));
        b.if_(feature.clone().lt(n.clone()), |b| {
            let total = b.var("total", Expr::f32(0.0));
            b.for_(
                "slice",
                Expr::i64(0),
                Expr::i64(self.split_k),
                Expr::i64(1),
                |b, slice| {
                    let part = Expr::load(
                        partials,
                        (slice * rows.clone() + row.clone()) * n.clone() + feature.clone(),
                    );
                    b.assign(total, Expr::Var(total) + part);
                },
            );
            let value = epilogue(Expr::Var(total), bias, residual, &row, &feature, &n);
            b.store(
                out,
                row.clone() * n.clone() + feature.clone(),
                value.cast(self.dtype),
            );
        });
        b.finish()
    }
}

impl Template for Gemv {
    fn op(&self) -> &'static str {
        "gemv"
    }

    fn name(&self) -> String {
        format!(
            "gemv(dtype={}{},k={},n={},bias={},residual={},outputs_per_warp={},split_k={})",
            dtype_name(self.dtype),
            if self.mixed() {
                format!(",weight={}", dtype_name(self.weight))
            } else {
                String::new()
            },
            self.k,
            self.n,
            self.bias as u8,
            self.residual as u8,
            self.outputs_per_warp,
            self.split_k
        )
    }

    fn kernels(&self) -> Vec<Kernel> {
        if self.split_k > 1 {
            vec![self.dot_kernel(), self.reduce_kernel()]
        } else {
            vec![self.dot_kernel()]
        }
    }

    fn reference(&self) -> Graph {
        let dtype = dtype_ir(self.dtype);
        let mut g = Graph::new(self.name());
        let rows = g.declare_symbol("rows", 1, 64);
        let (k, n) = (Dim::from(self.k), Dim::from(self.n));
        let input = |g: &mut Graph, name: &str, dtype: DType, shape: Vec<Dim>| {
            g.add_source(
                Op::Input { name: name.into() },
                TensorType::new(dtype, shape),
            )
            .expect("an input")
        };
        let x = input(&mut g, "x", dtype, vec![rows.clone(), k.clone()]);
        let mut w_nk = input(&mut g, "w_nk", dtype_ir(self.weight), vec![n.clone(), k]);
        if self.mixed() {
            // Exact: every bf16 value is an f32 one.
            w_nk = g.add(Op::Cast { to: dtype }, &[w_nk]).expect("a cast");
        }
        let w = g
            .add(Op::Transpose { perm: vec![1, 0] }, &[w_nk])
            .expect("a 2-D transpose");
        let mut operands = vec![x, w];
        if self.bias {
            operands.push(input(&mut g, "bias", dtype, vec![n.clone()]));
        }
        if self.residual {
            operands.push(input(&mut g, "residual", dtype, vec![rows, n]));
        }
        let op = if self.bias || self.residual {
            Op::FusedMatMul {
                bias: self.bias,
                residual: self.residual,
            }
        } else {
            Op::MatMul
        };
        let out = g.add(op, &operands).expect("operands of matching shapes");
        g.set_output("out", out);
        g
    }

    fn scratch(&self) -> Vec<Scratch> {
        if self.split_k == 1 {
            return Vec::new();
        }
        let len = Dim::Mul(
            Box::new(Dim::Const(self.split_k * self.n)),
            Box::new(Dim::sym("rows")),
        );
        vec![Scratch {
            name: "partials".into(),
            elem: Ty::F32,
            len,
        }]
    }

    /// f32 activations (with f32 or bf16 weights) make exact products summed in f32: the kernel
    /// and the reference differ only by summation order.
    fn nmse_limit(&self) -> f64 {
        if self.dtype == Ty::Bf16 {
            NMSE_BF16
        } else {
            NMSE_F32
        }
    }
}

fn dtype_ir(dtype: Ty) -> DType {
    match dtype {
        Ty::Bf16 => DType::BF16,
        _ => DType::F32,
    }
}

fn dtype_name(dtype: Ty) -> &'static str {
    if dtype == Ty::Bf16 {
        "bf16"
    } else {
        "f32"
    }
}

/// Elements of a 16-byte chunk.
fn lane_chunk(dtype: Ty) -> i64 {
    LANE_CHUNK_BYTES / dtype.size() as i64
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

fn as_f32(e: Expr) -> Expr {
    e.cast(Ty::F32)
}

/// `chunk` consecutive elements (16 bytes) from an index aligned to `chunk`: one vector load.
fn load_chunk(b: &mut KernelBuilder, name: &str, buf: Buf, at: Expr, chunk: i64) -> Vec<Expr> {
    b.load_vec(name, buf, at, chunk as usize)
}

/// `sum (+ bias[feature]) (+ residual[row, feature])` in f32, the order the reference adds.
fn epilogue(
    sum: Expr,
    bias: Option<Buf>,
    residual: Option<Buf>,
    row: &Expr,
    feature: &Expr,
    n: &Expr,
) -> Expr {
    let mut value = sum;
    if let Some(bias) = bias {
        value = value + as_f32(Expr::load(bias, feature.clone()));
    }
    if let Some(residual) = residual {
        value = value
            + as_f32(Expr::load(
                residual,
                row.clone() * n.clone() + feature.clone(),
            ));
    }
    value
}

/// The per-layer GEMVs of decode (one token) in the 2B config, the 7B's q|k|v
/// and o, the fixture's lm_head, forced split-K schedules, and odd shapes (7 rows, N = 129, f32
/// checkpoints). The 7B's down (18944×3584) and gate|up (3584×37888) run the same code as the
/// 2B's with longer loops or more blocks, and would take about 15 and 30 s of emulator time.
/// First the bf16 weights under f32 activations, what a bf16 checkpoint's decode runs.
pub fn cases() -> Vec<Case> {
    let one = [("rows", 1)];
    let seven = [("rows", 7)];
    let bf16 = Ty::Bf16;
    let mixed = |k, n, bias, residual| Gemv::with_weight(Ty::F32, bf16, k, n, bias, residual);
    vec![
        // bf16 weights, f32 x and out: the 2B's q|k|v, o, gate|up, down and k alone (split-K),
        // the 7B's q|k|v and o, the fixture's lm_head, and odd shapes with forced schedules.
        Case::new(mixed(1536, 2048, true, false), &one),
        Case::new(mixed(1536, 1536, false, true), &one),
        Case::new(mixed(1536, 17920, false, false), &one),
        Case::new(mixed(8960, 1536, false, true), &one),
        Case::new(mixed(1536, 256, true, false), &one),
        Case::new(mixed(3584, 4608, true, false), &one),
        Case::new(mixed(3584, 3584, false, true), &one),
        Case::new(mixed(64, 128, false, false), &one),
        Case::new(mixed(1536, 129, true, true).with_schedule(3, 3), &seven),
        // 2B: q|k|v merged (1536 + 256 + 256) with bias, o and down with the residual, gate|up.
        Case::new(Gemv::new(bf16, 1536, 2048, true, false), &one),
        Case::new(Gemv::new(bf16, 1536, 1536, false, true), &one),
        Case::new(Gemv::new(bf16, 1536, 17920, false, false), &one),
        Case::new(Gemv::new(bf16, 8960, 1536, false, true), &one),
        // 2B k or v alone: N = 256 leaves SMs idle without split-K.
        Case::new(Gemv::new(bf16, 1536, 256, true, false), &one),
        // 7B q|k|v merged (3584 + 512 + 512), o.
        Case::new(Gemv::new(bf16, 3584, 4608, true, false), &one),
        Case::new(Gemv::new(bf16, 3584, 3584, false, true), &one),
        // The fixture's lm_head (hidden 64, vocab 128): K shorter than one warp's stride.
        Case::new(Gemv::new(bf16, 64, 128, false, false), &one),
        Case::new(Gemv::new(Ty::F32, 64, 128, false, false), &one),
        // f32 checkpoints.
        Case::new(Gemv::new(Ty::F32, 1536, 2048, true, false), &one),
        Case::new(Gemv::new(Ty::F32, 1536, 256, true, false), &one),
        // Odd shapes: several rows, N not a multiple of a block's features, forced schedules.
        Case::new(Gemv::new(bf16, 1536, 129, true, true), &seven),
        Case::new(
            Gemv::new(bf16, 1536, 129, true, true).with_schedule(3, 3),
            &seven,
        ),
        Case::new(
            Gemv::new(bf16, 1536, 520, true, true).with_schedule(1, 6),
            &one,
        ),
        Case::new(
            Gemv::new(Ty::F32, 1536, 129, true, true).with_schedule(4, 1),
            &seven,
        ),
        Case::new(
            Gemv::new(Ty::F32, 1536, 7, false, true).with_schedule(2, 4),
            &one,
        ),
    ]
}
