//! Every emulator check: a small kernel that breaks it on purpose gets exactly that error, and
//! the corrected kernel passes.

use vl3c_cuda::emu::{Arg, BufferId, DeviceBuffer, EmuError, Emulator, RaceKind};
use vl3c_cuda::kir::{Access, Expr, Kernel, KernelBuilder, Lit, ParamKind, Shfl, Ty};

/// Launches `k` with `bufs` bound to its buffer parameters and `scalars` to its scalar ones, in
/// parameter order.
fn launch(k: &Kernel, bufs: Vec<DeviceBuffer>, scalars: &[Lit]) -> Result<Emulator, EmuError> {
    let mut emu = Emulator::new();
    let (mut bufs, mut scalars) = (bufs.into_iter(), scalars.iter());
    let args: Vec<Arg> = k
        .params
        .iter()
        .map(|p| match p.kind {
            ParamKind::Buffer { .. } => {
                Arg::Buffer(emu.alloc(bufs.next().expect("a buffer per buffer param")))
            }
            ParamKind::Scalar(_) => {
                Arg::Scalar(*scalars.next().expect("a scalar per scalar param"))
            }
        })
        .collect();
    emu.launch(k, &args)?;
    Ok(emu)
}

fn f32s(n: usize) -> DeviceBuffer {
    DeviceBuffer::from_f32(Ty::F32, &vec![1.0; n])
}

/// `out[t + shift] = 1` for each of 32 threads, into `len` elements.
fn store_shifted(shift: i32) -> Kernel {
    let mut kb = KernelBuilder::new("shifted", [32, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::ReadWrite);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(out, t + Expr::i32(shift), Expr::f32(1.0));
    kb.finish()
}

#[test]
fn out_of_bounds_store_names_buffer_index_length_thread_and_site() {
    let err = launch(&store_shifted(0), vec![f32s(16)], &[]).unwrap_err();
    let EmuError::OutOfBounds {
        at,
        buffer,
        index,
        len,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((buffer.as_str(), *index, *len), ("out", 16, 16));
    assert_eq!(
        (at.thread, at.block, at.site.as_str()),
        ([16, 0, 0], [0, 0, 0], "body[1] store out")
    );
    assert_eq!(
        err.to_string(),
        "kernel shifted block (0,0,0) thread (16,0,0) at body[1] store out: index 16 out of bounds of out (length 16)"
    );
    launch(&store_shifted(0), vec![f32s(32)], &[]).unwrap();
}

#[test]
fn out_of_bounds_load_inside_a_branch() {
    let mut kb = KernelBuilder::new("oob_load", [32, 1, 1]);
    let x = kb.buffer("x", Ty::F32, Access::Read);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let n = kb.scalar("n", Ty::I32);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.if_else(
        t.clone().lt(n),
        |kb| kb.store(out, t.clone(), kb.load(x, t.clone())),
        |kb| kb.store(out, t.clone(), Expr::f32(0.0)),
    );
    let k = kb.finish();
    let err = launch(
        &k,
        vec![f32s(20), DeviceBuffer::new(Ty::F32, 32)],
        &[Lit::I32(21)],
    )
    .unwrap_err();
    let EmuError::OutOfBounds { at, index: 20, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(at.site, "body[1].then[0] store out");
    launch(
        &k,
        vec![f32s(20), DeviceBuffer::new(Ty::F32, 32)],
        &[Lit::I32(20)],
    )
    .unwrap();
}

#[test]
fn negative_index_is_reported() {
    let err = launch(&store_shifted(-1), vec![f32s(32)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::NegativeIndex { index: -1, at, .. } if at.thread == [0, 0, 0]),
        "{err}"
    );
}

/// `out[t] = x[t]` where `x` is a scratch buffer the caller may leave uninitialised.
fn copy_kernel(access: Access) -> Kernel {
    let mut kb = KernelBuilder::new("copy", [32, 1, 1]);
    let x = kb.buffer("x", Ty::F32, access);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(out, t.clone(), kb.load(x, t));
    kb.finish()
}

#[test]
fn reading_never_written_global_memory_is_an_error() {
    let k = copy_kernel(Access::Read);
    let err = launch(&k, vec![DeviceBuffer::new(Ty::F32, 32), f32s(32)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::Uninitialised { index: 0, buffer, .. } if buffer == "x"),
        "{err}"
    );
    let x = DeviceBuffer::from_f32(Ty::F32, &[2.0; 32]);
    let emu = launch(&k, vec![x, DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap();
    assert_eq!(emu.buffer(BufferId(1)).to_f32(), vec![2.0; 32]);
}

#[test]
fn reading_an_output_before_this_launch_wrote_it_is_an_error() {
    // `acc[t] += 1` on a Write buffer: the old contents are not the kernel's to read.
    let mut kb = KernelBuilder::new("accumulate", [32, 1, 1]);
    let acc = kb.buffer("acc", Ty::F32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(acc, t.clone(), kb.load(acc, t.clone()) + Expr::f32(1.0));
    let k = kb.finish();
    let err = launch(&k, vec![f32s(32)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::Uninitialised { index: 0, .. }),
        "{err}"
    );
    // As ReadWrite the same kernel is an in-place update.
    let mut kb = KernelBuilder::new("accumulate", [32, 1, 1]);
    let acc = kb.buffer("acc", Ty::F32, Access::ReadWrite);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(acc, t.clone(), kb.load(acc, t.clone()) + Expr::f32(1.0));
    let emu = launch(&kb.finish(), vec![f32s(32)], &[]).unwrap();
    assert_eq!(emu.buffer(BufferId(0)).to_f32(), vec![2.0; 32]);
}

#[test]
fn shared_memory_starts_uninitialised_in_every_block() {
    // Only block 0 fills the shared array; block 1 reads what it never wrote.
    let build = |every_block: bool| {
        let mut kb = KernelBuilder::new("shared_init", [32, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let sh = kb.shared("tile", Ty::F32, 32);
        kb.grid(Expr::i32(2), Expr::i32(1), Expr::i32(1));
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        let b = kb.let_("b", kb.block_idx(0).cast(Ty::I32));
        let fill = if every_block {
            Expr::bool(true)
        } else {
            b.clone().eq(Expr::i32(0))
        };
        kb.if_(fill, |kb| kb.store(sh, t.clone(), Expr::f32(3.0)));
        kb.barrier();
        kb.store(out, b * Expr::i32(32) + t.clone(), kb.load(sh, t));
        kb.finish()
    };
    let err = launch(&build(false), vec![DeviceBuffer::new(Ty::F32, 64)], &[]).unwrap_err();
    let EmuError::Uninitialised {
        at,
        buffer,
        index: 0,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((buffer.as_str(), at.block), ("tile", [1, 0, 0]));
    launch(&build(true), vec![DeviceBuffer::new(Ty::F32, 64)], &[]).unwrap();
}

/// Each thread writes `sh[t]`, then reads its neighbour's `sh[(t+1)%32]`, with or without a
/// barrier between.
fn neighbour_kernel(barrier: bool) -> Kernel {
    let mut kb = KernelBuilder::new("neighbour", [32, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let sh = kb.shared("tile", Ty::F32, 32);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(sh, t.clone(), t.clone().cast(Ty::F32));
    if barrier {
        kb.barrier();
    }
    kb.store(
        out,
        t.clone(),
        kb.load(sh, (t + Expr::i32(1)) % Expr::i32(32)),
    );
    kb.finish()
}

#[test]
fn shared_read_of_another_threads_write_needs_a_barrier() {
    let err = launch(
        &neighbour_kernel(false),
        vec![DeviceBuffer::new(Ty::F32, 32)],
        &[],
    )
    .unwrap_err();
    let EmuError::Race {
        kind,
        buffer,
        index,
        at,
        other,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (*kind, buffer.as_str(), *index, at.thread),
        (RaceKind::WriteRead, "tile", 1, [0, 0, 0])
    );
    assert_eq!(other, "block (0,0,0) thread (1,0,0)");
    let emu = launch(
        &neighbour_kernel(true),
        vec![DeviceBuffer::new(Ty::F32, 32)],
        &[],
    )
    .unwrap();
    assert_eq!(emu.buffer(BufferId(0)).to_f32()[31], 0.0);
}

#[test]
fn shared_write_over_another_threads_read_needs_a_barrier() {
    // Read sh[t+1], then overwrite sh[t]: thread t's write races with thread t-1's read unless a
    // barrier separates them.
    let build = |barrier: bool| {
        let mut kb = KernelBuilder::new("shift_left", [32, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let sh = kb.shared("tile", Ty::F32, 33);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        kb.store(sh, t.clone(), Expr::f32(1.0));
        kb.if_(t.clone().eq(Expr::i32(0)), |kb| {
            kb.store(sh, Expr::i32(32), Expr::f32(1.0))
        });
        kb.barrier();
        let v = kb.let_("v", kb.load(sh, t.clone() + Expr::i32(1)));
        if barrier {
            kb.barrier();
        }
        kb.store(sh, t.clone(), v.clone());
        kb.store(out, t, v);
        kb.finish()
    };
    let err = launch(&build(false), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap_err();
    assert!(
        matches!(
            &err,
            EmuError::Race {
                kind: RaceKind::ReadWrite,
                index: 1,
                ..
            }
        ),
        "{err}"
    );
    launch(&build(true), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap();
}

#[test]
fn shared_write_write_race() {
    let build = |one_writer: bool| {
        let mut kb = KernelBuilder::new("flag", [32, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let sh = kb.shared("flag", Ty::F32, 1);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        let cond = if one_writer {
            t.clone().eq(Expr::i32(0))
        } else {
            Expr::bool(true)
        };
        kb.if_(cond, |kb| {
            kb.store(sh, Expr::i32(0), t.clone().cast(Ty::F32))
        });
        kb.barrier();
        kb.store(out, t, kb.load(sh, Expr::i32(0)));
        kb.finish()
    };
    let err = launch(&build(false), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::Race { kind: RaceKind::WriteWrite, index: 0, at, .. } if at.thread == [1, 0, 0]),
        "{err}"
    );
    launch(&build(true), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap();
}

/// Two blocks; each writes `out[base + t]`, with `base` 0 in both (race) or `32 * block`.
fn two_blocks_store(distinct: bool) -> Kernel {
    let mut kb = KernelBuilder::new("two_blocks", [32, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::ReadWrite);
    kb.grid(Expr::i32(2), Expr::i32(1), Expr::i32(1));
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let base = if distinct {
        kb.block_idx(0).cast(Ty::I32) * Expr::i32(32)
    } else {
        Expr::i32(0)
    };
    kb.store(out, base + t, Expr::f32(1.0));
    kb.finish()
}

#[test]
fn global_element_written_by_two_blocks_is_a_race() {
    let err = launch(&two_blocks_store(false), vec![f32s(64)], &[]).unwrap_err();
    let EmuError::Race {
        kind: RaceKind::WriteWrite,
        at,
        other,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (at.block, other.as_str()),
        ([1, 0, 0], "block (0,0,0) thread (0,0,0)")
    );
    launch(&two_blocks_store(true), vec![f32s(64)], &[]).unwrap();
    // Launches are ordered: the same kernel twice on one buffer is fine.
    let mut emu = Emulator::new();
    let b = emu.alloc(f32s(64));
    emu.launch(&two_blocks_store(true), &[Arg::Buffer(b)])
        .unwrap();
    emu.launch(&two_blocks_store(true), &[Arg::Buffer(b)])
        .unwrap();
}

/// One block writes `buf[i]` and the other reads it: block 0 writes unless `reader_first`. With
/// `same_element` false each block uses its own half of `buf`.
fn cross_block(reader_first: bool, same_element: bool) -> Kernel {
    let mut kb = KernelBuilder::new("cross_block", [32, 1, 1]);
    let buf = kb.buffer("buf", Ty::F32, Access::ReadWrite);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    kb.grid(Expr::i32(2), Expr::i32(1), Expr::i32(1));
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let b = kb.let_("b", kb.block_idx(0).cast(Ty::I32));
    let writer = if reader_first {
        Expr::i32(1)
    } else {
        Expr::i32(0)
    };
    let at = if same_element {
        t.clone()
    } else {
        t.clone() + b.clone() * Expr::i32(32)
    };
    kb.if_else(
        b.clone().eq(writer),
        |kb| {
            kb.store(buf, at.clone(), Expr::f32(5.0));
            kb.store(out, b.clone() * Expr::i32(32) + t.clone(), Expr::f32(0.0));
        },
        |kb| {
            kb.store(
                out,
                b.clone() * Expr::i32(32) + t.clone(),
                kb.load(buf, at.clone()),
            )
        },
    );
    kb.finish()
}

#[test]
fn global_write_and_read_by_different_blocks_race_in_either_order() {
    let bufs = || vec![f32s(64), DeviceBuffer::new(Ty::F32, 64)];
    let err = launch(&cross_block(false, true), bufs(), &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::Race { kind: RaceKind::WriteRead, at, .. } if at.block == [1, 0, 0]),
        "{err}"
    );
    let err = launch(&cross_block(true, true), bufs(), &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::Race { kind: RaceKind::ReadWrite, at, .. } if at.block == [1, 0, 0]),
        "{err}"
    );
    launch(&cross_block(false, false), bufs(), &[]).unwrap();
    launch(&cross_block(true, false), bufs(), &[]).unwrap();
}

#[test]
fn barrier_inside_a_divergent_branch() {
    // The branch is taken by threads t < taken.
    let build = |taken: i32| {
        let mut kb = KernelBuilder::new("bad_barrier", [64, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        kb.if_(t.clone().lt(Expr::i32(taken)), |kb| kb.barrier());
        kb.store(out, t, Expr::f32(0.0));
        kb.finish()
    };
    let err = launch(&build(16), vec![DeviceBuffer::new(Ty::F32, 64)], &[]).unwrap_err();
    let EmuError::DivergentBarrier {
        at,
        active: 16,
        threads: 64,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(at.site, "body[1].then[0] barrier");
    // A branch every thread takes may hold a barrier.
    launch(&build(64), vec![DeviceBuffer::new(Ty::F32, 64)], &[]).unwrap();
}

#[test]
fn barrier_inside_a_loop_with_divergent_trip_counts() {
    let mut kb = KernelBuilder::new("loop_barrier", [32, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let n = kb.scalar("n", Ty::I32);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    // Thread t runs n + t % 2 iterations: the odd threads reach one barrier alone.
    let end = n + t.clone() % Expr::i32(2);
    kb.for_("i", Expr::i32(0), end, Expr::i32(1), |kb, _| kb.barrier());
    kb.store(out, t, Expr::f32(0.0));
    let err = launch(
        &kb.finish(),
        vec![DeviceBuffer::new(Ty::F32, 32)],
        &[Lit::I32(3)],
    )
    .unwrap_err();
    assert!(
        matches!(&err, EmuError::DivergentBarrier { active: 16, .. }),
        "{err}"
    );
}

/// A shuffle inside `if t < active_lanes`.
fn shfl_in_branch(active_lanes: i32) -> Kernel {
    let mut kb = KernelBuilder::new("partial_shfl", [64, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.if_else(
        t.clone().lt(Expr::i32(active_lanes)),
        |kb| {
            let v = kb.shfl("v", t.clone().cast(Ty::F32), Shfl::Xor(1));
            kb.store(out, t.clone(), v);
        },
        |kb| kb.store(out, t.clone(), Expr::f32(0.0)),
    );
    kb.finish()
}

#[test]
fn warp_op_with_inactive_lanes() {
    let err = launch(
        &shfl_in_branch(40),
        vec![DeviceBuffer::new(Ty::F32, 64)],
        &[],
    )
    .unwrap_err();
    let EmuError::DivergentWarpOp {
        warp: 1,
        active: 8,
        at,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(at.site, "body[1].then[0] shfl v");
    // Whole warps in or out are fine.
    let emu = launch(
        &shfl_in_branch(32),
        vec![DeviceBuffer::new(Ty::F32, 64)],
        &[],
    )
    .unwrap();
    assert_eq!(emu.buffer(BufferId(0)).to_f32()[..4], [1.0, 0.0, 3.0, 2.0]);
}

#[test]
fn mma_with_inactive_lanes() {
    let mut kb = KernelBuilder::new("partial_mma", [32, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let one = Expr::pack_bf16x2(Expr::f32(1.0).cast(Ty::Bf16), Expr::f32(1.0).cast(Ty::Bf16));
    kb.if_(t.clone().lt(Expr::i32(31)), |kb| {
        let d = kb.mma(
            "d",
            [0, 1, 2, 3].map(|_| one.clone()),
            [one.clone(), one.clone()],
            [0, 1, 2, 3].map(|_| Expr::f32(0.0)),
        );
        kb.store(out, t.clone(), d[0].clone());
    });
    let err = launch(&kb.finish(), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap_err();
    assert!(
        matches!(
            &err,
            EmuError::DivergentWarpOp {
                warp: 0,
                active: 31,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn i32_overflow_in_index_arithmetic() {
    let build = |ty: Ty| {
        let mut kb = KernelBuilder::new("big_index", [32, 1, 1]);
        let x = kb.buffer("x", Ty::F32, Access::Read);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let row = kb.scalar("row", ty);
        let t = kb.let_("t", kb.thread_idx(0).cast(ty));
        // row * 2^20 + t: past i32 for row >= 2048, and the load clamps to stay in bounds.
        let big = kb.let_(
            "big",
            row * Expr::Lit(if ty == Ty::I32 {
                Lit::I32(1 << 20)
            } else {
                Lit::I64(1 << 20)
            }) + t.clone(),
        );
        kb.store(
            out,
            t.clone(),
            kb.load(
                x,
                big % Expr::Lit(if ty == Ty::I32 {
                    Lit::I32(32)
                } else {
                    Lit::I64(32)
                }),
            ),
        );
        kb.finish()
    };
    let err = launch(
        &build(Ty::I32),
        vec![f32s(32), DeviceBuffer::new(Ty::F32, 32)],
        &[Lit::I32(4096)],
    )
    .unwrap_err();
    let EmuError::I32Overflow {
        op: "*",
        a: 4096,
        b: 1048576,
        at,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(at.site, "body[1] let big");
    launch(
        &build(Ty::I64),
        vec![f32s(32), DeviceBuffer::new(Ty::F32, 32)],
        &[Lit::I64(4096)],
    )
    .unwrap();
}

#[test]
fn output_element_never_written() {
    let build = |stride: i32| {
        let mut kb = KernelBuilder::new("sparse", [32, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        kb.if_(t.clone().lt(Expr::i32(32 / stride)), |kb| {
            kb.store(out, t.clone() * Expr::i32(stride), Expr::f32(1.0))
        });
        kb.finish()
    };
    let err = launch(&build(2), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::OutputNotWritten { index: 1, unwritten: 16, buffer, .. } if buffer == "out"),
        "{err}"
    );
    // Written by an earlier launch does not count: an output is the launch's to write.
    let mut emu = Emulator::new();
    let b = emu.alloc(f32s(32));
    let err = emu.launch(&build(2), &[Arg::Buffer(b)]).unwrap_err();
    assert!(matches!(err, EmuError::OutputNotWritten { index: 1, .. }));
    launch(&build(1), vec![DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap();
}

#[test]
fn misaligned_vector_access() {
    let build = |offset: i32| {
        let mut kb = KernelBuilder::new("vec4", [8, 1, 1]);
        let x = kb.buffer("x", Ty::F32, Access::Read);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        let v = kb.load_vec("v", x, t.clone() * Expr::i32(4) + Expr::i32(offset), 4);
        kb.store_vec(out, t * Expr::i32(4), v);
        kb.finish()
    };
    let err = launch(
        &build(2),
        vec![f32s(40), DeviceBuffer::new(Ty::F32, 32)],
        &[],
    )
    .unwrap_err();
    let EmuError::Misaligned {
        index: 2,
        width: 4,
        buffer,
        at,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (buffer.as_str(), at.site.as_str()),
        ("x", "body[1] load_vec x")
    );
    let x: Vec<f32> = (0..40).map(|i| i as f32).collect();
    let emu = launch(
        &build(4),
        vec![
            DeviceBuffer::from_f32(Ty::F32, &x),
            DeviceBuffer::new(Ty::F32, 32),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(emu.buffer(BufferId(1)).to_f32(), x[4..36].to_vec());
}

#[test]
fn argument_mismatches_are_errors() {
    let k = copy_kernel(Access::Read);
    let mut emu = Emulator::new();
    let x = emu.alloc(f32s(32));
    let out = emu.alloc(DeviceBuffer::new(Ty::F32, 32));
    let ints = emu.alloc(DeviceBuffer::from_i64(Ty::I32, &[0; 32]));
    let bad = |r: Result<_, EmuError>| matches!(r, Err(EmuError::BadArguments { .. }));
    assert!(bad(emu.launch(&k, &[Arg::Buffer(x)])));
    assert!(bad(
        emu.launch(&k, &[Arg::Buffer(x), Arg::Scalar(Lit::I32(0))])
    ));
    assert!(bad(emu.launch(&k, &[Arg::Buffer(ints), Arg::Buffer(out)])));
    assert!(bad(
        emu.launch(&k, &[Arg::Buffer(x), Arg::Buffer(BufferId(99))])
    ));
    let mut kb = KernelBuilder::new("scalar", [32, 1, 1]);
    let o = kb.buffer("out", Ty::F32, Access::Write);
    let n = kb.scalar("n", Ty::I64);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I64));
    kb.store(o, t, n.cast(Ty::F32));
    let ks = kb.finish();
    assert!(bad(
        emu.launch(&ks, &[Arg::Buffer(out), Arg::Scalar(Lit::I32(1))])
    ));
    assert!(bad(emu.launch(&ks, &[Arg::Buffer(out), Arg::Buffer(x)])));
    emu.launch(&ks, &[Arg::Buffer(out), Arg::Scalar(Lit::I64(1))])
        .unwrap();
    emu.launch(&k, &[Arg::Buffer(x), Arg::Buffer(out)]).unwrap();
}

#[test]
fn store_into_a_read_only_parameter() {
    let mut kb = KernelBuilder::new("ro", [32, 1, 1]);
    let x = kb.buffer("x", Ty::F32, Access::Read);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(x, t, Expr::f32(0.0));
    let err = launch(&kb.finish(), vec![f32s(32)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::StoreToReadOnly { buffer, .. } if buffer == "x"),
        "{err}"
    );
}

#[test]
fn integer_division_by_zero() {
    let mut kb = KernelBuilder::new("div", [32, 1, 1]);
    let out = kb.buffer("out", Ty::I32, Access::Write);
    let d = kb.scalar("d", Ty::I32);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    kb.store(out, t.clone(), t / d);
    let k = kb.finish();
    let err = launch(&k, vec![DeviceBuffer::new(Ty::I32, 32)], &[Lit::I32(0)]).unwrap_err();
    assert!(
        matches!(&err, EmuError::UndefinedArithmetic { .. }),
        "{err}"
    );
    let emu = launch(&k, vec![DeviceBuffer::new(Ty::I32, 32)], &[Lit::I32(-3)]).unwrap();
    assert_eq!(emu.buffer(BufferId(0)).to_i64()[..5], [0, 0, 0, -1, -1]);
}

#[test]
fn launch_geometry_is_checked() {
    let mut kb = KernelBuilder::new("empty_grid", [32, 1, 1]);
    let out = kb.buffer("out", Ty::F32, Access::ReadWrite);
    let n = kb.scalar("n", Ty::I32);
    kb.grid(n / Expr::i32(32), Expr::i32(1), Expr::i32(1));
    let t = kb.let_(
        "t",
        kb.thread_idx(0).cast(Ty::I32) + kb.block_idx(0).cast(Ty::I32) * Expr::i32(32),
    );
    kb.store(out, t, Expr::f32(1.0));
    let k = kb.finish();
    let err = launch(&k, vec![f32s(64)], &[Lit::I32(16)]).unwrap_err();
    assert!(matches!(&err, EmuError::BadLaunch { .. }), "{err}");
    launch(&k, vec![f32s(64)], &[Lit::I32(64)]).unwrap();
    let big = KernelBuilder::new("huge_block", [2048, 1, 1]).finish();
    assert!(matches!(
        Emulator::new().launch(&big, &[]),
        Err(EmuError::BadLaunch { .. })
    ));
}

#[test]
fn global_element_written_by_two_threads_of_one_block_between_barriers() {
    let build = |barrier_between: bool| {
        let mut kb = KernelBuilder::new("last_writer", [32, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        kb.if_(t.clone().eq(Expr::i32(0)), |kb| {
            kb.store(out, Expr::i32(0), Expr::f32(1.0))
        });
        if barrier_between {
            kb.barrier();
        }
        kb.if_(t.clone().eq(Expr::i32(5)), |kb| {
            kb.store(out, Expr::i32(0), Expr::f32(2.0))
        });
        kb.finish()
    };
    let err = launch(&build(false), vec![DeviceBuffer::new(Ty::F32, 1)], &[]).unwrap_err();
    assert!(
        matches!(&err, EmuError::Race { kind: RaceKind::WriteWrite, at, .. } if at.thread == [5, 0, 0]),
        "{err}"
    );
    // A barrier orders the two writes within the block.
    let emu = launch(&build(true), vec![DeviceBuffer::new(Ty::F32, 1)], &[]).unwrap();
    assert_eq!(emu.buffer(BufferId(0)).to_f32(), vec![2.0]);
}

#[test]
fn loop_bound_compares_in_the_promoted_type() {
    // An i32 counter against an i64 end past i32::MAX: C++ compares as long long, so the loop
    // runs (and the i32 counter then overflows, which the emulator reports).
    let mut kb = KernelBuilder::new("wide_end", [32, 1, 1]);
    let out = kb.buffer("out", Ty::I32, Access::Write);
    let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
    let n = kb.var("n", Expr::i32(0));
    let end = Expr::i64(1 << 32) + t.clone().cast(Ty::I64);
    kb.for_("i", Expr::i32(i32::MAX - 2), end, Expr::i32(1), |kb, _| {
        kb.assign(n, Expr::Var(n) + Expr::i32(1))
    });
    kb.store(out, t, Expr::Var(n));
    let err = launch(&kb.finish(), vec![DeviceBuffer::new(Ty::I32, 32)], &[]).unwrap_err();
    assert!(
        matches!(
            &err,
            EmuError::I32Overflow {
                op: "+",
                a: 2147483647,
                b: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn host_writes_initialise_single_elements() {
    // A cache whose first 16 positions the host filled: the kernel may read those only.
    let build = |n: i32| {
        let mut kb = KernelBuilder::new("prefix", [32, 1, 1]);
        let cache = kb.buffer("cache", Ty::Bf16, Access::Read);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        let v = Expr::select(
            t.clone().lt(Expr::i32(n)),
            kb.load(cache, t.clone()).cast(Ty::F32),
            Expr::f32(0.0),
        );
        kb.store(out, t, v);
        kb.finish()
    };
    let mut cache = DeviceBuffer::new(Ty::Bf16, 32);
    (0..16).for_each(|i| cache.set_f32(i, i as f32 + 0.5));
    assert_eq!(cache.written().iter().filter(|&&w| w).count(), 16);
    let err = launch(
        &build(17),
        vec![cache.clone(), DeviceBuffer::new(Ty::F32, 32)],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, EmuError::Uninitialised { index: 16, .. }),
        "{err}"
    );
    let emu = launch(&build(16), vec![cache, DeviceBuffer::new(Ty::F32, 32)], &[]).unwrap();
    assert_eq!(emu.buffer(BufferId(1)).to_f32()[15], 15.5);
    let mut ids = DeviceBuffer::new(Ty::I32, 2);
    ids.set_i64(1, -7);
    assert_eq!(
        (ids.to_i64(), ids.written()),
        (vec![0, -7], vec![false, true])
    );
}

#[test]
fn loop_step_that_is_not_positive() {
    let build = |step: Expr| {
        let mut kb = KernelBuilder::new("stuck", [32, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let t = kb.let_("t", kb.thread_idx(0).cast(Ty::I32));
        let acc = kb.var("acc", Expr::f32(0.0));
        let start = Expr::f32(0.0);
        kb.for_("x", start, Expr::f32(1.0), step, |kb, x| {
            kb.assign(acc, Expr::Var(acc) + x)
        });
        kb.store(out, t, Expr::Var(acc));
        kb.finish()
    };
    let err = launch(
        &build(Expr::f32(0.0)),
        vec![DeviceBuffer::new(Ty::F32, 32)],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(&err, EmuError::UndefinedArithmetic { what, .. } if what.contains("step 0")),
        "{err}"
    );
    let emu = launch(
        &build(Expr::f32(0.25)),
        vec![DeviceBuffer::new(Ty::F32, 32)],
        &[],
    )
    .unwrap();
    assert_eq!(emu.buffer(BufferId(0)).to_f32(), vec![1.5; 32]);
}
