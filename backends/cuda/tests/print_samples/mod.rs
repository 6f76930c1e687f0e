//! Hand-built kernels that between them use every construct of the kernel IR: the printer's
//! snapshots and the NVRTC compile tests share them.

// Each test binary that includes this module uses only some of the samples.
#![allow(dead_code)]

use vl3c_cuda::kir::{Access, BinOp, Expr, Kernel, KernelBuilder, Shfl, Ty, UnOp};

pub fn all() -> Vec<Kernel> {
    vec![
        block_sum(),
        softmax_bf16(),
        mma_tile(),
        every_op(),
        awkward_names(),
        scale_bf16x8(),
    ]
}

/// Adds up a warp's values with butterfly shuffles; every lane ends with the total.
fn warp_sum(b: &mut KernelBuilder, name: &str, value: Expr) -> Expr {
    let mut total = value;
    for mask in [16, 8, 4, 2, 1] {
        let other = b.shfl_xor(&format!("{name}_x{mask}"), total.clone(), mask);
        total = b.let_(name, total + other);
    }
    total
}

/// `out[row] = Σ x[row, :]`: a strided loop, a shuffle reduction per warp, the warps' partial sums
/// through static shared memory and a barrier, and a last shuffle-down reduction in warp 0.
pub fn block_sum() -> Kernel {
    let mut b = KernelBuilder::new("block_sum", [256, 1, 1]);
    let x = b.buffer("x", Ty::F32, Access::Read);
    let out = b.buffer("out", Ty::F32, Access::Write);
    let n = b.scalar("n", Ty::I64);
    let rows = b.scalar("rows", Ty::I64);
    b.grid(rows.cast(Ty::U32), Expr::u32(1), Expr::u32(1));
    let partials = b.shared("partials", Ty::F32, 8);
    let tid = b.thread_idx(0);
    let row = b.let_("row", b.block_idx(0).cast(Ty::I64));
    let acc = b.var("acc", Expr::f32(0.0));
    b.for_(
        "i",
        tid.clone().cast(Ty::I64),
        n.clone(),
        Expr::i64(256),
        |b, i| {
            b.assign(
                acc,
                Expr::Var(acc) + Expr::load(x, row.clone() * n.clone() + i),
            );
        },
    );
    let warp_total = warp_sum(&mut b, "warp_total", Expr::Var(acc));
    let warp = b.let_("warp", tid.clone() / Expr::u32(32));
    b.if_(b.lane().eq(Expr::u32(0)), |b| {
        b.store(partials, warp.clone(), warp_total.clone())
    });
    b.barrier();
    b.if_(warp.eq(Expr::u32(0)), |b| {
        let lane = b.lane();
        let mine = b.let_(
            "mine",
            Expr::select(
                lane.clone().lt(Expr::u32(8)),
                Expr::load(partials, lane.clone().min(Expr::u32(7))),
                Expr::f32(0.0),
            ),
        );
        let mut total = mine;
        for delta in [4, 2, 1] {
            let below = b.shfl(&format!("down{delta}"), total.clone(), Shfl::Down(delta));
            total = b.let_("total", total + below);
        }
        b.if_(lane.eq(Expr::u32(0)), |b| {
            b.store(out, row.clone(), total.clone())
        });
    });
    b.finish()
}

/// Row softmax of bf16: 4-wide vector loads and stores, the row kept as bf16 and then as f32 in two
/// dynamic shared arrays, the warps' maxima and sums in a static one, -∞ as a literal, a lane-0
/// broadcast, casts both ways.
pub fn softmax_bf16() -> Kernel {
    const THREADS: u32 = 128;
    const WARPS: i64 = THREADS as i64 / 32;
    let mut b = KernelBuilder::new("softmax_bf16", [THREADS, 1, 1]);
    let x = b.buffer("x", Ty::Bf16, Access::Read);
    let out = b.buffer("out", Ty::Bf16, Access::Write);
    let cols = b.scalar("cols", Ty::I64);
    let rows = b.scalar("rows", Ty::I64);
    b.grid(rows.cast(Ty::U32), Expr::u32(1), Expr::u32(1));
    let warp_max = b.shared("warp_max", Ty::F32, WARPS as usize);
    let raw = b.shared_dynamic("raw", Ty::Bf16, cols.clone());
    let cache = b.shared_dynamic("cache", Ty::F32, cols.clone());
    let tid = b.let_("tid", b.thread_idx(0).cast(Ty::I64));
    let base = b.let_("base", b.block_idx(0).cast(Ty::I64) * cols.clone());
    let max = b.var("max", Expr::f32(f32::NEG_INFINITY));
    b.for_(
        "i",
        tid.clone() * Expr::i64(4),
        cols.clone(),
        Expr::i64(4 * THREADS as i64),
        |b, i| {
            let v = b.load_vec("v", x, base.clone() + i.clone(), 4);
            let f: Vec<Expr> = v
                .iter()
                .enumerate()
                .map(|(j, v)| b.let_(&format!("f{j}"), v.clone().cast(Ty::F32)))
                .collect();
            for f in f {
                b.assign(max, Expr::Var(max).max(f));
            }
            b.store_vec(raw, i, v);
        },
    );
    for mask in [16, 8, 4, 2, 1] {
        let other = b.shfl_xor("other", Expr::Var(max), mask);
        b.assign(max, Expr::Var(max).max(other));
    }
    let lane = b.lane();
    b.if_(lane.clone().eq(Expr::u32(0)), |b| {
        b.store(warp_max, tid.clone() / Expr::i64(32), Expr::Var(max))
    });
    b.barrier();
    let row_max = b.var("row_max", Expr::load(warp_max, Expr::i64(0)));
    b.for_("w", Expr::i64(1), Expr::i64(WARPS), Expr::i64(1), |b, w| {
        b.assign(row_max, Expr::Var(row_max).max(Expr::load(warp_max, w)));
    });
    let sum = b.var("sum", Expr::f32(0.0));
    b.for_(
        "i",
        tid.clone(),
        cols.clone(),
        Expr::i64(THREADS as i64),
        |b, i| {
            let e = b.let_(
                "e",
                (Expr::load(raw, i.clone()).cast(Ty::F32) - Expr::Var(row_max)).exp(),
            );
            b.store(cache, i, e.clone());
            b.assign(sum, Expr::Var(sum) + e);
        },
    );
    let warp_total = warp_sum(&mut b, "warp_total", Expr::Var(sum));
    b.barrier();
    b.if_(lane.clone().eq(Expr::u32(0)), |b| {
        b.store(warp_max, tid.clone() / Expr::i64(32), warp_total.clone())
    });
    b.barrier();
    let total = b.var("total", Expr::f32(0.0));
    b.for_("w", Expr::i64(0), Expr::i64(WARPS), Expr::i64(1), |b, w| {
        b.assign(total, Expr::Var(total) + Expr::load(warp_max, w));
    });
    // Lane 0's sum goes to the whole warp, as a kernel that computed it on one lane would.
    let inverse = b.shfl(
        "inverse",
        Expr::f32(1.0) / Expr::Var(total),
        Shfl::Idx(Expr::i32(0)),
    );
    b.for_(
        "i",
        tid * Expr::i64(4),
        cols,
        Expr::i64(4 * THREADS as i64),
        |b, i| {
            let e = b.load_vec("e", cache, i.clone(), 4);
            let y: Vec<Expr> = e
                .into_iter()
                .map(|e| (e * inverse.clone()).cast(Ty::Bf16))
                .collect();
            b.store_vec(out, base.clone() + i, y);
        },
    );
    b.finish()
}

/// One m16n8k16 tile on one warp, `d = a·b`, with the PTX fragment layouts: A 16×16 row-major,
/// B 16×8 stored by column (`b[n·16 + k]`), D 16×8 row-major. Index arithmetic in `I32`.
pub fn mma_tile() -> Kernel {
    let mut b = KernelBuilder::new("mma_tile", [32, 1, 1]);
    let a = b.buffer("a", Ty::Bf16, Access::Read);
    let bt = b.buffer("b", Ty::Bf16, Access::Read);
    let d = b.buffer("d", Ty::F32, Access::Write);
    let lane = b.let_("lane", b.lane().cast(Ty::I32));
    let group = b.let_("group", lane.clone() >> Expr::i32(2));
    let pair = b.let_("pair", (lane & Expr::i32(3)) * Expr::i32(2));
    let a_at = |row: Expr, col: Expr| Expr::load(a, row * Expr::i32(16) + col);
    let a_reg = |row: Expr, col: Expr| {
        Expr::pack_bf16x2(
            a_at(row.clone(), col.clone()),
            a_at(row, col + Expr::i32(1)),
        )
    };
    let a_regs = [
        a_reg(group.clone(), pair.clone()),
        a_reg(group.clone() + Expr::i32(8), pair.clone()),
        a_reg(group.clone(), pair.clone() + Expr::i32(8)),
        a_reg(group.clone() + Expr::i32(8), pair.clone() + Expr::i32(8)),
    ];
    let b_at = |k: Expr| Expr::load(bt, group.clone() * Expr::i32(16) + k);
    let b_regs = [
        Expr::pack_bf16x2(b_at(pair.clone()), b_at(pair.clone() + Expr::i32(1))),
        Expr::pack_bf16x2(
            b_at(pair.clone() + Expr::i32(8)),
            b_at(pair.clone() + Expr::i32(9)),
        ),
    ];
    let zero = Expr::f32(0.0);
    let acc = b.mma(
        "acc",
        a_regs,
        b_regs,
        [zero.clone(), zero.clone(), zero.clone(), zero],
    );
    let top = b.let_("top", group.clone() * Expr::i32(8) + pair.clone());
    b.store_vec(d, top.clone(), vec![acc[0].clone(), acc[1].clone()]);
    b.store_vec(d, top + Expr::i32(64), vec![acc[2].clone(), acc[3].clone()]);
    b.finish()
}

/// Every operator on every type it applies to, every cast, every literal kind and every vector
/// width, so the snapshot pins how each is spelled and NVRTC proves each compiles.
pub fn every_op() -> Kernel {
    let mut b = KernelBuilder::new("every_op", [64, 2, 1]);
    let fin = b.buffer("f", Ty::F32, Access::Read);
    let iin = b.buffer("i", Ty::I32, Access::Read);
    let uin = b.buffer("u", Ty::U32, Access::Read);
    let lin = b.buffer("l", Ty::I64, Access::Read);
    let hin = b.buffer("h", Ty::Bf16, Access::Read);
    let bin = b.buffer("flags", Ty::Bool, Access::Read);
    let fout = b.buffer("f_out", Ty::F32, Access::Write);
    let iout = b.buffer("i_out", Ty::I32, Access::Write);
    let uout = b.buffer("u_out", Ty::U32, Access::ReadWrite);
    let lout = b.buffer("l_out", Ty::I64, Access::Write);
    let hout = b.buffer("h_out", Ty::Bf16, Access::Write);
    let bout = b.buffer("flags_out", Ty::Bool, Access::Write);
    let scale = b.scalar("scale", Ty::F32);
    let count = b.scalar("count", Ty::I32);
    let enabled = b.scalar("enabled", Ty::Bool);
    let threads = b.let_(
        "threads",
        b.thread_idx(1) * Expr::Special(vl3c_cuda::kir::Special::BlockDim(0)) + b.thread_idx(0),
    );
    let t = b.let_(
        "t",
        (b.block_idx(0) * Expr::Special(vl3c_cuda::kir::Special::GridDim(1)) * Expr::u32(128)
            + threads)
            .cast(Ty::I64),
    );
    let t4 = b.let_("t4", t.clone() * Expr::i64(4));

    let f = b.load_vec("f", fin, t4.clone(), 4);
    let i = b.load_vec("i", iin, t4.clone(), 2);
    let u = b.load_vec("u", uin, t4.clone(), 4);
    let l = b.load_vec("l", lin, t4.clone(), 4);
    let h = b.load_vec("h", hin, t4.clone(), 2);
    let flags = b.load_vec("flag", bin, t4.clone(), 4);

    let (f0, f1) = (f[0].clone(), f[1].clone());
    let unary: Vec<Expr> = [
        UnOp::Neg,
        UnOp::Exp,
        UnOp::Log,
        UnOp::Sqrt,
        UnOp::Rsqrt,
        UnOp::Tanh,
        UnOp::Erf,
        UnOp::Abs,
        UnOp::Sin,
        UnOp::Cos,
    ]
    .into_iter()
    .map(|op| Expr::un(op, f0.clone()))
    .collect();
    let float_ops = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Rem,
        BinOp::Min,
        BinOp::Max,
    ];
    let mut facc = b.let_("facc", Expr::fma(f0.clone(), scale.clone(), f[2].clone()));
    for op in float_ops {
        facc = b.let_("facc", Expr::bin(op, facc, f1.clone()));
    }
    for e in unary {
        facc = b.let_("facc", facc - e);
    }
    let literals = [
        0.1f32,
        -2.5,
        1e-6,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for v in literals {
        facc = b.let_("facc", facc * Expr::f32(v));
    }
    facc = b.let_(
        "facc",
        facc + h[0].clone().cast(Ty::F32) + i[0].clone().cast(Ty::F32) + l[0].clone().cast(Ty::F32),
    );
    facc = b.let_(
        "facc",
        facc + u[0].clone().cast(Ty::F32)
            + u[3].clone().cast(Ty::F32)
            + Expr::select(flags[3].clone(), f0.clone(), f1.clone())
            + flags[0].clone().cast(Ty::F32)
            + h[1].clone().cast(Ty::I32).cast(Ty::F32),
    );
    b.store_vec(
        fout,
        t4.clone(),
        vec![facc.clone(), -f0.clone(), f[3].clone(), f1.clone()],
    );

    let int_ops = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Rem,
        BinOp::Min,
        BinOp::Max,
        BinOp::BitAnd,
        BinOp::BitOr,
        BinOp::BitXor,
        BinOp::Shl,
        BinOp::Shr,
    ];
    let mut iacc = b.let_(
        "iacc",
        -(Expr::un(UnOp::Abs, i[0].clone())) + Expr::un(UnOp::Not, i[1].clone()),
    );
    let mut uacc = b.let_(
        "uacc",
        Expr::un(UnOp::Not, u[0].clone()) + Expr::un(UnOp::Neg, u[1].clone()),
    );
    let mut lacc = b.let_(
        "lacc",
        Expr::un(UnOp::Abs, l[0].clone()) + Expr::i64(i64::MIN) + Expr::i64(-3),
    );
    for op in int_ops {
        iacc = b.let_("iacc", Expr::bin(op, iacc, Expr::i32(3)));
        uacc = b.let_("uacc", Expr::bin(op, uacc, u[1].clone()));
        lacc = b.let_("lacc", Expr::bin(op, lacc, l[1].clone()));
    }
    iacc = b.let_(
        "iacc",
        iacc + Expr::i32(i32::MIN)
            + Expr::i32(-7)
            + f0.clone().cast(Ty::I32)
            + lacc.clone().cast(Ty::I32),
    );
    lacc = b.let_(
        "lacc",
        lacc + iacc.clone().cast(Ty::I64) + uacc.clone().cast(Ty::I64) + f1.clone().cast(Ty::I64),
    );

    let cmp = [
        BinOp::Lt,
        BinOp::Le,
        BinOp::Gt,
        BinOp::Ge,
        BinOp::Eq,
        BinOp::Ne,
    ];
    let mut flag = b.let_(
        "flag",
        enabled
            .and(Expr::un(UnOp::Not, flags[1].clone()))
            .or(flags[2].clone()),
    );
    for op in cmp {
        flag = b.let_(
            "flag",
            Expr::bin(BinOp::BitXor, flag, Expr::bin(op, f0.clone(), f1.clone())),
        );
        flag = b.let_(
            "flag",
            Expr::bin(
                BinOp::BitOr,
                flag,
                Expr::bin(op, iacc.clone(), i[1].clone()),
            ),
        );
        flag = b.let_(
            "flag",
            Expr::bin(
                BinOp::BitAnd,
                flag,
                Expr::bin(op, uacc.clone(), u[2].clone()).or(Expr::bin(
                    op,
                    lacc.clone(),
                    l[2].clone(),
                )),
            ),
        );
    }
    let count_loop = b.var("counted", Expr::i32(0));
    b.for_("k", Expr::i32(0), count.clone(), Expr::i32(2), |b, k| {
        b.if_else(
            k.clone().lt(Expr::i32(4)).and(flag.clone()),
            |b| b.assign(count_loop, Expr::Var(count_loop) + k.clone()),
            |b| {
                b.if_(Expr::Var(count_loop).gt(Expr::i32(100)), |b| {
                    b.assign(count_loop, Expr::Var(count_loop) - Expr::i32(1))
                })
            },
        );
    });
    b.store_vec(iout, t4.clone(), vec![Expr::Var(count_loop), iacc.clone()]);
    b.store_vec(
        uout,
        t4.clone(),
        vec![
            uacc.clone(),
            flag.clone().cast(Ty::U32),
            iacc.clone().cast(Ty::U32),
            Expr::u32(u32::MAX),
        ],
    );
    b.store_vec(
        lout,
        t4.clone(),
        vec![
            lacc.clone(),
            l[3].clone(),
            Expr::i64(i64::MAX),
            uacc.clone().cast(Ty::I64),
        ],
    );
    let flag_shuffled = b.shfl_xor("flag_shuffled", flag.clone(), 1);
    b.store_vec(
        bout,
        t4.clone(),
        vec![
            flag_shuffled,
            facc.clone().cast(Ty::Bool),
            iacc.clone().cast(Ty::Bool),
            h[0].clone().cast(Ty::Bool),
        ],
    );
    let h_picked = b.let_("h_picked", Expr::select(flag, h[0].clone(), h[1].clone()));
    b.store_vec(
        hout,
        t4.clone(),
        vec![
            h_picked,
            facc.cast(Ty::Bf16),
            iacc.cast(Ty::Bf16),
            h[1].clone(),
        ],
    );
    b.store(hout, t4 + Expr::i64(3), lacc.cast(Ty::Bf16));
    b.finish()
}

/// Names a template could pick that C++ or the printer itself would choke on: keywords, math
/// functions, reserved and printer-internal prefixes, spaces, a leading digit, duplicates.
pub fn awkward_names() -> Kernel {
    let mut b = KernelBuilder::new("awkward_names", [32, 1, 1]);
    let int = b.buffer("int", Ty::F32, Access::Write);
    let smem = b.scalar("vl3_smem", Ty::I64);
    let reserved = b.scalar("__n", Ty::I32);
    let expf = b.scalar("expf", Ty::F32);
    let dynamic = b.shared_dynamic("int", Ty::F32, smem.clone());
    let spaced = b.let_("x y", Expr::f32(2.0).exp() + expf);
    let digit = b.let_("9lives", reserved.cast(Ty::I64));
    let lane = b.let_("int", b.lane().cast(Ty::I64));
    b.store(dynamic, lane.clone(), spaced.clone());
    b.barrier();
    b.store(
        int,
        lane.clone(),
        Expr::load(dynamic, (lane + digit) % smem) + spaced,
    );
    b.finish()
}

/// `out = x · scale` in bf16, eight elements (one 16-byte access) per thread, with a scalar tail
/// loop for lengths that are not a multiple of eight.
pub fn scale_bf16x8() -> Kernel {
    let mut b = KernelBuilder::new("scale_bf16x8", [64, 1, 1]);
    let x = b.buffer("x", Ty::Bf16, Access::Read);
    let out = b.buffer("out", Ty::Bf16, Access::Write);
    let n = b.scalar("n", Ty::I64);
    let scale = b.scalar("scale", Ty::F32);
    b.grid(
        ((n.clone() + Expr::i64(511)) / Expr::i64(512)).cast(Ty::U32),
        Expr::u32(1),
        Expr::u32(1),
    );
    let first = b.let_(
        "first",
        (b.block_idx(0) * Expr::u32(64) + b.thread_idx(0)).cast(Ty::I64) * Expr::i64(8),
    );
    b.if_else(
        (first.clone() + Expr::i64(8)).le(n.clone()),
        |b| {
            let v = b.load_vec("v", x, first.clone(), 8);
            let scaled = v
                .into_iter()
                .map(|v| (v.cast(Ty::F32) * scale.clone()).cast(Ty::Bf16))
                .collect();
            b.store_vec(out, first.clone(), scaled);
        },
        |b| {
            b.for_("i", first.clone(), n.clone(), Expr::i64(1), |b, i| {
                b.store(
                    out,
                    i.clone(),
                    (Expr::load(x, i).cast(Ty::F32) * scale.clone()).cast(Ty::Bf16),
                );
            });
        },
    );
    b.finish()
}
