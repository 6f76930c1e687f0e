//! The decode GEMV kernels on the emulator against a plain f32 loop, binding buffers by name as
//! test-kernels does (inputs initialised, `out` and `partials` not), so a feature never written,
//! a read of unwritten scratch or a race between split-K slices fails here.

use std::collections::HashMap;
use vl3c_cuda::emu::{Arg, DeviceBuffer, Emulator};
use vl3c_cuda::kir::{Lit, ParamKind, Ty};
use vl3c_cuda::templates::gemv::Gemv;
use vl3c_cuda::templates::{Sizes, Template};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `g` at `rows` and returns (kernel output, loop output), both as f32.
fn run(g: &Gemv, rows: usize) -> (Vec<f32>, Vec<f32>) {
    let (k, n) = (g.k as usize, g.n as usize);
    let round = |v: Vec<f32>| DeviceBuffer::from_f32(g.dtype, &v).to_f32();
    let inputs: HashMap<&str, Vec<f32>> = [
        ("x", round(values(rows * k, 1))),
        (
            "w_nk",
            DeviceBuffer::from_f32(g.weight, &values(n * k, 2)).to_f32(),
        ),
        ("bias", round(values(n, 3))),
        ("residual", round(values(rows * n, 4))),
    ]
    .into_iter()
    .collect();
    let sizes: Sizes = [("rows".to_string(), rows as i64)].into_iter().collect();
    let scratch: HashMap<String, (Ty, usize)> = g
        .scratch()
        .into_iter()
        .map(|s| (s.name.clone(), (s.elem, s.len_at(&sizes).unwrap())))
        .collect();

    let mut emu = Emulator::new();
    let mut ids = HashMap::new();
    for kernel in g.kernels() {
        let args: Vec<Arg> = kernel
            .params
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Scalar(_) => Arg::Scalar(Lit::I64(sizes[&p.name])),
                ParamKind::Buffer { elem, .. } => {
                    Arg::Buffer(*ids.entry(p.name.clone()).or_insert_with(|| {
                        let buf = match (inputs.get(p.name.as_str()), scratch.get(&p.name)) {
                            (Some(v), _) => DeviceBuffer::from_f32(*elem, v),
                            (None, Some(&(ty, len))) => DeviceBuffer::new(ty, len),
                            (None, None) => DeviceBuffer::new(*elem, rows * n),
                        };
                        emu.alloc(buf)
                    }))
                }
            })
            .collect();
        emu.launch(&kernel, &args)
            .unwrap_or_else(|e| panic!("{}: {e}", kernel.name));
    }
    let got = emu.buffer(ids["out"]).to_f32();

    let mut want = vec![0f32; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let mut acc = 0f32;
            for l in 0..k {
                acc += inputs["x"][r * k + l] * inputs["w_nk"][j * k + l];
            }
            if g.bias {
                acc += inputs["bias"][j];
            }
            if g.residual {
                acc += inputs["residual"][r * n + j];
            }
            want[r * n + j] = acc;
        }
    }
    (got, round(want))
}

fn assert_close(g: &Gemv, rows: usize) {
    let (got, want) = run(g, rows);
    // f32: the loop and the lanes sum in different orders.
    let tolerance = if g.dtype == Ty::Bf16 {
        1.6e-2
    } else {
        1e-5 * (g.k as f32).sqrt()
    };
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * b.abs().max(1.0),
            "{} rows={rows} [{i}]: {a} vs {b}",
            g.name()
        );
    }
}

#[test]
fn single_pass_matches_the_loop() {
    assert_close(
        &Gemv::new(Ty::Bf16, 512, 40, true, true).with_schedule(2, 1),
        1,
    );
    assert_close(
        &Gemv::new(Ty::F32, 256, 37, false, true).with_schedule(3, 1),
        3,
    );
    assert_close(&Gemv::new(Ty::Bf16, 64, 128, false, false), 1);
}

/// bf16 weights under f32 activations: exact products summed in f32, so f32's tolerance.
#[test]
fn bf16_weights_under_f32_activations_match_the_loop() {
    let mixed = |k, n, bias, residual| Gemv::with_weight(Ty::F32, Ty::Bf16, k, n, bias, residual);
    assert_close(&mixed(512, 40, true, true).with_schedule(2, 1), 1);
    assert_close(&mixed(256, 37, false, true).with_schedule(3, 1), 3);
    assert_close(&mixed(1024, 33, true, false).with_schedule(1, 4), 2);
    assert_close(&mixed(64, 128, false, false), 1);
    let g = mixed(1536, 256, true, false);
    assert!(g.split_k > 1, "{g:?}");
    assert!(g.name().contains("dtype=f32,weight=bf16"), "{}", g.name());
    assert!(
        g.kernels().iter().all(|k| k.name.contains("_f32_wbf16_")),
        "kernel names say both types"
    );
    assert!(
        !Gemv::supports_weight(Ty::F32, Ty::Bf16, 36),
        "K = 36 is not whole 8-element bf16 chunks"
    );
    assert!(Gemv::supports_weight(Ty::F32, Ty::Bf16, 40));
    assert!(
        !Gemv::supports_weight(Ty::Bf16, Ty::F32, 64),
        "f32 weights under bf16 activations have no kernel"
    );
}

#[test]
fn split_k_matches_the_loop() {
    assert_close(
        &Gemv::new(Ty::Bf16, 1024, 33, true, false).with_schedule(1, 4),
        2,
    );
    assert_close(
        &Gemv::new(Ty::F32, 768, 20, true, true).with_schedule(2, 3),
        1,
    );
}

#[test]
fn small_n_gets_split_k() {
    let kv = Gemv::new(Ty::Bf16, 1536, 256, true, false);
    assert!(kv.split_k > 1, "{kv:?}");
    let lm_head_2b = Gemv::new(Ty::Bf16, 1536, 151936, false, false);
    assert_eq!(lm_head_2b.split_k, 1, "{lm_head_2b:?}");
}

#[test]
fn reference_reads_the_weight_as_stored() {
    for case in vl3c_cuda::templates::gemv::cases() {
        let graph = case.template.reference();
        let (_, _, w) = graph
            .inputs()
            .find(|(_, name, _)| *name == "w_nk")
            .expect("a w_nk input");
        let g = case.template.name();
        let weight = if g.contains("weight=bf16") || g.contains("dtype=bf16") {
            vl3c_ir::DType::BF16
        } else {
            vl3c_ir::DType::F32
        };
        assert_eq!(
            w.dtype,
            weight,
            "{}: w_nk is stored in the weight's type",
            case.label()
        );
        let out = graph.ty(graph.output("out").expect("an `out` output"));
        let (n, k) = (w.shape[0].clone(), w.shape[1].clone());
        assert_eq!(out.shape[1], n, "{}: w_nk is [N, K]", case.label());
        let (_, _, x) = graph
            .inputs()
            .find(|(_, name, _)| *name == "x")
            .expect("an x input");
        assert_eq!(x.shape[1], k, "{}", case.label());
    }
}
