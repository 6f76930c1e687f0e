//! The emulator executes kernels as CUDA would: lockstep divergence, shared memory with barriers,
//! warp shuffles, the mma fragment maps, and bf16 rounding.

use vl3c_cuda::emu::{
    a_fragment, b_fragment, c_fragment, f32_to_bf16_bits, Arg, DeviceBuffer, Emulator,
};
use vl3c_cuda::kir::{Access, Expr, KernelBuilder, Lit, Shfl, Special, Ty};

/// `out[i] = a[i] + b[i]` over `n` elements, 64 threads per block, `ceil(n/64)` blocks.
fn add_kernel() -> vl3c_cuda::kir::Kernel {
    let mut kb = KernelBuilder::new("add", [64, 1, 1]);
    let a = kb.buffer("a", Ty::F32, Access::Read);
    let b = kb.buffer("b", Ty::F32, Access::Read);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let n = kb.scalar("n", Ty::I64);
    kb.grid(
        (n.clone() + Expr::i64(63)) / Expr::i64(64),
        Expr::i64(1),
        Expr::i64(1),
    );
    let i = kb.let_(
        "i",
        kb.block_idx(0).cast(Ty::I64) * Expr::i64(64) + kb.thread_idx(0).cast(Ty::I64),
    );
    kb.if_(i.clone().lt(n), |kb| {
        let v = kb.load(a, i.clone()) + kb.load(b, i.clone());
        kb.store(out, i.clone(), v);
    });
    kb.finish()
}

#[test]
fn elementwise_add_over_a_ragged_grid() {
    let n = 130;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    let mut emu = Emulator::new();
    let ia = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &a));
    let ib = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &b));
    let io = emu.alloc(DeviceBuffer::new(Ty::F32, n));
    let stats = emu
        .launch(
            &add_kernel(),
            &[
                Arg::Buffer(ia),
                Arg::Buffer(ib),
                Arg::Buffer(io),
                Arg::Scalar(Lit::I64(n as i64)),
            ],
        )
        .unwrap();
    assert_eq!(stats.blocks, 3);
    assert_eq!(stats.threads, 192);
    // 192 threads run `let` and `if`; 130 run the store.
    assert_eq!(stats.statements, 192 * 2 + 130);
    let got = emu.buffer(io).to_f32();
    assert!(got.iter().enumerate().all(|(i, &v)| v == 1.5 * i as f32));
}

#[test]
fn if_else_runs_both_sides_under_complementary_masks() {
    let mut kb = KernelBuilder::new("parity", [32, 1, 1]);
    let out = kb.buffer("out", Ty::I32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let acc = kb.var("acc", Expr::i32(0));
    kb.if_else(
        (t.clone() % Expr::i32(2)).eq(Expr::i32(0)),
        |kb| kb.assign(acc, t.clone() * Expr::i32(10)),
        |kb| kb.assign(acc, -t.clone()),
    );
    kb.store(out, t.clone(), Expr::Var(acc));
    let k = kb.finish();
    let mut emu = Emulator::new();
    let io = emu.alloc(DeviceBuffer::new(Ty::I32, 32));
    emu.launch(&k, &[Arg::Buffer(io)]).unwrap();
    let want: Vec<i64> = (0..32)
        .map(|t| if t % 2 == 0 { 10 * t } else { -t })
        .collect();
    assert_eq!(emu.buffer(io).to_i64(), want);
}

#[test]
fn loops_run_each_thread_its_own_trip_count() {
    // Thread t sums 0..t: trip counts 0 to 31 in one warp.
    let mut kb = KernelBuilder::new("triangle", [32, 1, 1]);
    let out = kb.buffer("out", Ty::I32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let acc = kb.var("acc", Expr::i32(0));
    kb.for_("j", Expr::i32(0), t.clone(), Expr::i32(1), |kb, j| {
        kb.assign(acc, Expr::Var(acc) + j)
    });
    kb.store(out, t, Expr::Var(acc));
    let k = kb.finish();
    let mut emu = Emulator::new();
    let io = emu.alloc(DeviceBuffer::new(Ty::I32, 32));
    emu.launch(&k, &[Arg::Buffer(io)]).unwrap();
    let want: Vec<i64> = (0..32).map(|t| t * (t - 1) / 2).collect();
    assert_eq!(emu.buffer(io).to_i64(), want);
}

#[test]
fn select_evaluates_only_the_chosen_side() {
    // `i < n ? x[i] : 0` must not load past the end for the threads beyond n.
    let mut kb = KernelBuilder::new("guarded", [32, 1, 1]);
    let x = kb.buffer("x", Ty::F32, Access::Read);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I64));
    let v = Expr::select(
        t.clone().lt(Expr::i64(5)),
        kb.load(x, t.clone()),
        Expr::f32(-1.0),
    );
    kb.store(out, t, v);
    let k = kb.finish();
    let mut emu = Emulator::new();
    let ix = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &[1.0, 2.0, 3.0, 4.0, 5.0]));
    let io = emu.alloc(DeviceBuffer::new(Ty::F32, 32));
    emu.launch(&k, &[Arg::Buffer(ix), Arg::Buffer(io)]).unwrap();
    let got = emu.buffer(io).to_f32();
    assert_eq!(&got[..6], &[1.0, 2.0, 3.0, 4.0, 5.0, -1.0]);
}

/// One block of 256 threads sums 256 values through shared memory with a tree of barriers.
pub fn block_sum_kernel() -> vl3c_cuda::kir::Kernel {
    let mut kb = KernelBuilder::new("block_sum", [256, 1, 1]);
    let x = kb.buffer("x", Ty::F32, Access::Read);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let sh = kb.shared("partial", Ty::F32, 256);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(sh, t.clone(), kb.load(x, t.clone()));
    kb.barrier();
    for stride in [128, 64, 32, 16, 8, 4, 2, 1] {
        kb.if_(t.clone().lt(Expr::i32(stride)), |kb| {
            let s = kb.load(sh, t.clone()) + kb.load(sh, t.clone() + Expr::i32(stride));
            kb.store(sh, t.clone(), s);
        });
        kb.barrier();
    }
    kb.if_(t.clone().eq(Expr::i32(0)), |kb| {
        kb.store(out, Expr::i32(0), kb.load(sh, Expr::i32(0)))
    });
    kb.finish()
}

#[test]
fn shared_memory_tree_reduction() {
    let x: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let mut emu = Emulator::new();
    let ix = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &x));
    let io = emu.alloc(DeviceBuffer::new(Ty::F32, 1));
    emu.launch(&block_sum_kernel(), &[Arg::Buffer(ix), Arg::Buffer(io)])
        .unwrap();
    assert_eq!(emu.buffer(io).to_f32(), vec![255.0 * 256.0 / 2.0]);
}

#[test]
fn shfl_xor_butterfly_gives_every_lane_the_warp_sum() {
    let mut kb = KernelBuilder::new("warp_sum", [64, 1, 1]);
    let x = kb.buffer("x", Ty::F32, Access::Read);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let acc = kb.var("acc", kb.load(x, t.clone()));
    for mask in [16, 8, 4, 2, 1] {
        let other = kb.shfl_xor("other", Expr::Var(acc), mask);
        kb.assign(acc, Expr::Var(acc) + other);
    }
    kb.store(out, t, Expr::Var(acc));
    let k = kb.finish();
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let mut emu = Emulator::new();
    let ix = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &x));
    let io = emu.alloc(DeviceBuffer::new(Ty::F32, 64));
    emu.launch(&k, &[Arg::Buffer(ix), Arg::Buffer(io)]).unwrap();
    let got = emu.buffer(io).to_f32();
    let (w0, w1) = ((0..32).sum::<i32>() as f32, (32..64).sum::<i32>() as f32);
    assert!(
        got[..32].iter().all(|&v| v == w0) && got[32..].iter().all(|&v| v == w1),
        "{got:?}"
    );
}

#[test]
fn shfl_down_past_the_warp_keeps_the_own_value_and_idx_broadcasts() {
    let mut kb = KernelBuilder::new("shfl_modes", [32, 1, 1]);
    let down = kb.buffer("down", Ty::I32, Access::Write);
    let idx = kb.buffer("idx", Ty::I32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let d = kb.shfl("d", t.clone(), Shfl::Down(4));
    kb.store(down, t.clone(), d);
    let i = kb.shfl("i", t.clone() * Expr::i32(3), Shfl::Idx(Expr::i32(7)));
    kb.store(idx, t, i);
    let k = kb.finish();
    let mut emu = Emulator::new();
    let id = emu.alloc(DeviceBuffer::new(Ty::I32, 32));
    let ii = emu.alloc(DeviceBuffer::new(Ty::I32, 32));
    emu.launch(&k, &[Arg::Buffer(id), Arg::Buffer(ii)]).unwrap();
    let want: Vec<i64> = (0..32)
        .map(|t| if t + 4 < 32 { t + 4 } else { t })
        .collect();
    assert_eq!(emu.buffer(id).to_i64(), want);
    assert_eq!(emu.buffer(ii).to_i64(), vec![21; 32]);
}

#[test]
fn fragment_maps_cover_each_matrix_once() {
    let mut a = [[0u8; 16]; 16];
    let mut b = [[0u8; 8]; 16];
    let mut c = [[0u8; 8]; 16];
    for lane in 0..32 {
        (0..8).for_each(|e| {
            let (r, k) = a_fragment(lane, e);
            a[r][k] += 1;
        });
        (0..4).for_each(|e| {
            let (k, n) = b_fragment(lane, e);
            b[k][n] += 1;
            let (r, n) = c_fragment(lane, e);
            c[r][n] += 1;
        });
    }
    assert!(a
        .iter()
        .flatten()
        .chain(b.iter().flatten())
        .chain(c.iter().flatten())
        .all(|&x| x == 1));
    // Spot checks against the PTX ISA figures: lane 5 is group 1, thread-in-group 1.
    assert_eq!(a_fragment(5, 0), (1, 2));
    assert_eq!(a_fragment(5, 3), (9, 3));
    assert_eq!(a_fragment(5, 5), (1, 11));
    assert_eq!(b_fragment(5, 3), (11, 1));
    assert_eq!(c_fragment(5, 2), (9, 2));
}

#[test]
fn fragment_maps_agree_with_tinygrad() {
    // tinygrad `ops_python.py`, CUDA m16n8k16: `a_elem(x, k, row) =
    // x[k%2 + (row//8)*2 + (k//8)*4][(k//2)%4 + (row%8)*4]`, `b_elem(x, col, k) =
    // x[k%2 + (k//8)*2][(k//2)%4 + col*4]`, `c_map(lane, e) = (e%2 + (lane%4)*2, lane//4 + (e//2)*8)`
    // as (col, row).
    for row in 0..16 {
        for k in 0..16 {
            let (e, lane) = (
                k % 2 + (row / 8) * 2 + (k / 8) * 4,
                (k / 2) % 4 + (row % 8) * 4,
            );
            assert_eq!(a_fragment(lane, e), (row, k));
        }
    }
    for col in 0..8 {
        for k in 0..16 {
            let (e, lane) = (k % 2 + (k / 8) * 2, (k / 2) % 4 + col * 4);
            assert_eq!(b_fragment(lane, e), (k, col));
        }
    }
    for lane in 0..32 {
        for e in 0..4 {
            assert_eq!(
                c_fragment(lane, e),
                (lane / 4 + (e / 2) * 8, e % 2 + (lane % 4) * 2)
            );
        }
    }
}

#[test]
fn mma_matches_a_plain_matmul() {
    // A (16×16 row-major) and B (16×8, stored column-major: b[n*16 + k]) in bf16, C in f32;
    // each lane loads its fragments through the maps the PTX ISA gives.
    let mut kb = KernelBuilder::new("mma16816", [32, 1, 1]);
    let ga = kb.buffer("a", Ty::Bf16, Access::Read);
    let gb = kb.buffer("b", Ty::Bf16, Access::Read);
    let gc = kb.buffer("c", Ty::F32, Access::Read);
    let gd = kb.buffer("d", Ty::F32, Access::Write);
    let lane = kb.let_("lane", kb.lane().cast(Ty::I32));
    let group = kb.let_("group", lane.clone() >> Expr::i32(2));
    let tig = kb.let_("tig", lane.clone() % Expr::i32(4));
    let at = |row: Expr, col: Expr| row * Expr::i32(16) + col;
    let a: [Expr; 4] = [0, 1, 2, 3].map(|r| {
        let row = group.clone() + Expr::i32(8 * (r & 1));
        let col = tig.clone() * Expr::i32(2) + Expr::i32(8 * (r >> 1));
        Expr::pack_bf16x2(
            Expr::load(ga, at(row.clone(), col.clone())),
            Expr::load(ga, at(row, col + Expr::i32(1))),
        )
    });
    let b: [Expr; 2] = [0, 1].map(|r| {
        let k = tig.clone() * Expr::i32(2) + Expr::i32(8 * r);
        let n = group.clone();
        Expr::pack_bf16x2(
            Expr::load(gb, n.clone() * Expr::i32(16) + k.clone()),
            Expr::load(gb, n * Expr::i32(16) + k + Expr::i32(1)),
        )
    });
    let cidx = |e: i32| {
        (group.clone() + Expr::i32(8 * (e / 2))) * Expr::i32(8)
            + tig.clone() * Expr::i32(2)
            + Expr::i32(e % 2)
    };
    let c: [Expr; 4] = [0, 1, 2, 3].map(|e| Expr::load(gc, cidx(e)));
    let d = kb.mma("d", a, b, c);
    for (e, de) in d.into_iter().enumerate() {
        kb.store(gd, cidx(e as i32), de);
    }
    let k = kb.finish();

    let av: Vec<f32> = (0..256)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
        .collect();
    let bv: Vec<f32> = (0..128)
        .map(|i| ((i * 5 % 17) as f32 - 8.0) / 4.0)
        .collect();
    let cv: Vec<f32> = (0..128).map(|i| i as f32 * 0.25).collect();
    let mut emu = Emulator::new();
    let ia = emu.alloc(DeviceBuffer::from_f32(Ty::Bf16, &av));
    let ib = emu.alloc(DeviceBuffer::from_f32(Ty::Bf16, &bv));
    let ic = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &cv));
    let id = emu.alloc(DeviceBuffer::new(Ty::F32, 128));
    emu.launch(
        &k,
        &[
            Arg::Buffer(ia),
            Arg::Buffer(ib),
            Arg::Buffer(ic),
            Arg::Buffer(id),
        ],
    )
    .unwrap();
    let got = emu.buffer(id).to_f32();
    for m in 0..16 {
        for n in 0..8 {
            // Every value is a small multiple of a power of two: the sum is exact.
            let want = cv[m * 8 + n]
                + (0..16)
                    .map(|k| av[m * 16 + k] * bv[n * 16 + k])
                    .sum::<f32>();
            assert_eq!(got[m * 8 + n], want, "d[{m}][{n}]");
        }
    }
}

#[test]
fn bf16_rounding_of_ties_nan_and_infinity() {
    let cases: [(u32, u16); 8] = [
        (0x3f80_8000, 0x3f80), // tie, even below
        (0x3f81_8000, 0x3f82), // tie, even above
        (0x3f80_8001, 0x3f81), // just above the tie
        (0x3f80_7fff, 0x3f80), // just below the tie
        (0x7f7f_ffff, 0x7f80), // f32::MAX rounds to infinity
        (0xff80_0000, 0xff80), // -inf stays -inf
        (0x7fc0_0000, 0x7fff), // NaN is the canonical NaN
        (0xff80_0001, 0x7fff), // a signalling NaN too
    ];
    for (x, want) in cases {
        assert_eq!(f32_to_bf16_bits(f32::from_bits(x)), want, "{x:#x}");
    }
    // The same through a kernel's Cast.
    let mut kb = KernelBuilder::new("to_bf16", [8, 1, 1]);
    let x = kb.buffer("x", Ty::F32, Access::Read);
    let out = kb.buffer("out", Ty::Bf16, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(out, t.clone(), kb.load(x, t).cast(Ty::Bf16));
    let k = kb.finish();
    let mut emu = Emulator::new();
    let xs: Vec<f32> = cases.iter().map(|&(x, _)| f32::from_bits(x)).collect();
    let ix = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &xs));
    let io = emu.alloc(DeviceBuffer::new(Ty::Bf16, 8));
    emu.launch(&k, &[Arg::Buffer(ix), Arg::Buffer(io)]).unwrap();
    let bits: Vec<u16> = emu
        .buffer(io)
        .bytes()
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(bits, cases.map(|(_, w)| w).to_vec());
}

#[test]
fn two_dimensional_blocks_group_warps_by_linear_thread_id() {
    // 16×4 threads: warp 0 is rows y = 0 and 1 (x fastest), so a shfl_xor by 16 swaps rows.
    let mut kb = KernelBuilder::new("tile2d", [16, 4, 1]);
    let out = kb.buffer("out", Ty::I32, Access::Write);
    let x = kb.let_("x", kb.thread_idx(0).cast(Ty::I32));
    let y = kb.let_("y", kb.thread_idx(1).cast(Ty::I32));
    let linear = kb.let_("linear", y.clone() * Expr::i32(16) + x.clone());
    let partner = kb.shfl_xor("partner", linear.clone(), 16);
    kb.store(out, linear, partner);
    let k = kb.finish();
    let mut emu = Emulator::new();
    let io = emu.alloc(DeviceBuffer::new(Ty::I32, 64));
    emu.launch(&k, &[Arg::Buffer(io)]).unwrap();
    assert_eq!(
        emu.buffer(io).to_i64(),
        (0..64).map(|t| t ^ 16).collect::<Vec<i64>>()
    );
}

/// `lanes[linear] = LaneId` in blocks of `block` threads.
fn lane_ids(block: [u32; 3]) -> Result<Vec<i64>, vl3c_cuda::emu::EmuError> {
    let mut kb = KernelBuilder::new("lanes", block);
    let lanes = kb.buffer("lanes", Ty::I32, Access::Write);
    let x = kb.thread_idx(0).cast(Ty::I32);
    let y = kb.thread_idx(1).cast(Ty::I32);
    let linear = kb.let_("linear", y * Expr::i32(block[0] as i32) + x);
    kb.store(lanes, linear, kb.lane().cast(Ty::I32));
    let k = kb.finish();
    let mut emu = Emulator::new();
    let n = (block[0] * block[1]) as usize;
    let il = emu.alloc(DeviceBuffer::new(Ty::I32, n));
    emu.launch(&k, &[Arg::Buffer(il)])?;
    Ok(emu.buffer(il).to_i64())
}

#[test]
fn lane_id_is_the_linear_thread_id_mod_32() {
    assert_eq!(
        lane_ids([64, 2, 1]).unwrap(),
        (0..128).map(|t| t % 32).collect::<Vec<i64>>()
    );
    assert_eq!(
        lane_ids([48, 1, 1]).unwrap(),
        (0..48).map(|t| t % 32).collect::<Vec<i64>>()
    );
    // Where warps straddle rows, the printed `threadIdx.x & 31` would not be the lane.
    let err = lane_ids([16, 4, 1]).unwrap_err();
    assert!(
        matches!(err, vl3c_cuda::emu::EmuError::BadLaunch { .. }),
        "{err}"
    );
}

#[test]
fn three_dimensional_grids_and_dimension_specials() {
    // Each thread writes gridDim/blockDim-derived linear ids; the grid is a formula over `n`.
    let mut kb = KernelBuilder::new("grid3d", [2, 2, 1]);
    let out = kb.buffer("out", Ty::U32, Access::Write);
    let n = kb.scalar("n", Ty::U32);
    kb.grid(Expr::u32(3), n.clone(), n / Expr::u32(2));
    let s = |kb: &KernelBuilder, sp: Special| {
        let _ = kb;
        Expr::Special(sp)
    };
    let block = s(&kb, Special::BlockIdx(0))
        + s(&kb, Special::GridDim(0))
            * (s(&kb, Special::BlockIdx(1))
                + s(&kb, Special::GridDim(1)) * s(&kb, Special::BlockIdx(2)));
    let thread = s(&kb, Special::ThreadIdx(0))
        + s(&kb, Special::BlockDim(0)) * s(&kb, Special::ThreadIdx(1));
    let id = kb.let_("id", block * Expr::u32(4) + thread);
    kb.store(out, id.clone(), id);
    let k = kb.finish();
    let mut emu = Emulator::new();
    let io = emu.alloc(DeviceBuffer::new(Ty::U32, 3 * 4 * 2 * 4));
    let stats = emu
        .launch(&k, &[Arg::Buffer(io), Arg::Scalar(Lit::U32(4))])
        .unwrap();
    assert_eq!((stats.blocks, stats.threads), (24, 96));
    assert_eq!(emu.buffer(io).to_i64(), (0..96).collect::<Vec<i64>>());
}

#[test]
fn faults_in_inactive_lanes_are_not_errors() {
    // `t < 2 ? 2^30 * t : 0` overflows i32 only for the lanes that do not take that side, and a
    // division by `t - 5` divides by zero only in a lane the branch excludes.
    let mut kb = KernelBuilder::new("guarded_faults", [32, 1, 1]);
    let out = kb.buffer("out", Ty::I32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let v = Expr::select(
        t.clone().lt(Expr::i32(2)),
        Expr::i32(1 << 30) * t.clone(),
        Expr::i32(0),
    );
    kb.store(out, t.clone(), v);
    kb.if_(t.clone().ne(Expr::i32(5)), |kb| {
        kb.store(out, t.clone(), Expr::i32(100) / (t.clone() - Expr::i32(5)));
    });
    let k = kb.finish();
    let mut emu = Emulator::new();
    let io = emu.alloc(DeviceBuffer::new(Ty::I32, 32));
    emu.launch(&k, &[Arg::Buffer(io)]).unwrap();
    let got = emu.buffer(io).to_i64();
    assert_eq!(got[..7], [-20, -25, -33, -50, -100, 0, 100]);
}

#[test]
fn rms_norm_in_bf16_matches_the_host() {
    // One block of 256 threads per row: strided sum of squares (fma), a shared-memory tree,
    // rsqrt, then the scaled row stored as bf16.
    let hidden = 1536i64;
    let mut kb = KernelBuilder::new("rms", [256, 1, 1]);
    let x = kb.buffer("x", Ty::Bf16, Access::Read);
    let w = kb.buffer("w", Ty::Bf16, Access::Read);
    let out = kb.buffer("out", Ty::Bf16, Access::Write);
    let rows = kb.scalar("rows", Ty::I64);
    kb.grid(rows, Expr::i64(1), Expr::i64(1));
    let sh = kb.shared("partial", Ty::F32, 256);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I64));
    let row = kb.let_("row", kb.block_idx(0).cast(Ty::I64) * Expr::i64(hidden));
    let acc = kb.var("acc", Expr::f32(0.0));
    kb.for_(
        "i",
        t.clone(),
        Expr::i64(hidden),
        Expr::i64(256),
        |kb, i| {
            let v = kb.let_("v", kb.load(x, row.clone() + i).cast(Ty::F32));
            kb.assign(acc, Expr::fma(v.clone(), v, Expr::Var(acc)));
        },
    );
    kb.store(sh, t.clone(), Expr::Var(acc));
    kb.barrier();
    for stride in [128, 64, 32, 16, 8, 4, 2, 1] {
        kb.if_(t.clone().lt(Expr::i64(stride)), |kb| {
            let s = kb.load(sh, t.clone()) + kb.load(sh, t.clone() + Expr::i64(stride));
            kb.store(sh, t.clone(), s);
        });
        kb.barrier();
    }
    let scale = kb.let_(
        "scale",
        (kb.load(sh, Expr::i64(0)) / Expr::f32(hidden as f32) + Expr::f32(1e-6)).rsqrt(),
    );
    kb.for_(
        "i",
        t.clone(),
        Expr::i64(hidden),
        Expr::i64(256),
        |kb, i| {
            let v = kb.load(x, row.clone() + i.clone()).cast(Ty::F32)
                * scale.clone()
                * kb.load(w, i.clone()).cast(Ty::F32);
            kb.store(out, row.clone() + i, v.cast(Ty::Bf16));
        },
    );
    let k = kb.finish();
    let rows = 7usize;
    let mut emu = Emulator::new();
    let xv: Vec<f32> = (0..rows * 1536)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let ix = emu.alloc(DeviceBuffer::from_f32(Ty::Bf16, &xv));
    let iw = emu.alloc(DeviceBuffer::from_f32(
        Ty::Bf16,
        &(0..1536)
            .map(|i| 1.0 + (i % 5) as f32 / 8.0)
            .collect::<Vec<f32>>(),
    ));
    let io = emu.alloc(DeviceBuffer::new(Ty::Bf16, rows * 1536));
    let args = [
        Arg::Buffer(ix),
        Arg::Buffer(iw),
        Arg::Buffer(io),
        Arg::Scalar(Lit::I64(rows as i64)),
    ];
    emu.launch(&k, &args).unwrap();
    let got = emu.buffer(io).to_f32();
    let bf = |v: f32| vl3c_cuda::emu::bf16_bits_to_f32(f32_to_bf16_bits(v));
    for r in 0..rows {
        let row: Vec<f32> = (0..1536).map(|i| bf(xv[r * 1536 + i])).collect();
        let ms = row.iter().map(|v| (v * v) as f64).sum::<f64>() / 1536.0;
        let scale = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..1536 {
            let want = row[i] as f64 * scale * bf(1.0 + (i % 5) as f32 / 8.0) as f64;
            let g = got[r * 1536 + i] as f64;
            // One bf16 rounding of the result (2^-8 relative) plus f32 noise.
            assert!(
                (g - want).abs() <= want.abs() / 128.0 + 1e-6,
                "row {r} col {i}: {g} vs {want}"
            );
        }
    }
}
