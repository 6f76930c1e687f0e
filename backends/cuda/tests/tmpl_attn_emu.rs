//! The attention kernels on the emulator against a direct f64 attention written here (rotate,
//! mask, softmax, weighted sum), independent of the kernels' tiling, splitting and online softmax.
//! The harness (`test_kernels`) checks the same templates against the reference executor; this
//! test also pins the edge cases of the tiling: partial tiles, segments crossing tile edges,
//! prefixes in the cache, more than one decode chunk, a cache with rows to spare.

use std::collections::HashMap;
use vl3c_cuda::check::OutputCheck;
use vl3c_cuda::emu::{bf16_bits_to_f32, f32_to_bf16_bits, Arg, BufferId, DeviceBuffer, Emulator};
use vl3c_cuda::kir::{Lit, ParamKind, Ty};
use vl3c_cuda::templates::attention::{
    AttnSpec, DecodeAttention, PrefillAttention, VisionAttention,
};
use vl3c_cuda::templates::{Sizes, Template};
use vl3c_ir::{AttentionMask, DType, Op};
use vl3c_reference::{execute_sized, Tensor};

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn sizes(pairs: &[(&str, i64)]) -> Sizes {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Direct attention in f64 over the (already rounded) inputs, `[hq, n, d]`.
fn direct(
    spec: &AttnSpec,
    inputs: &HashMap<String, Vec<f32>>,
    ints: &HashMap<String, Vec<i64>>,
    n: usize,
    t: usize,
) -> Vec<f64> {
    let (d, hq, group) = (spec.head_dim, spec.q_heads, spec.group());
    let rotate = |x: &[f32], row: usize, pos: usize| -> Vec<f64> {
        let x: Vec<f64> = x[row * d..(row + 1) * d]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let (cos, sin) = (
            &inputs["cos"][pos * d..(pos + 1) * d],
            &inputs["sin"][pos * d..(pos + 1) * d],
        );
        (0..d)
            .map(|c| {
                let rot = if c < d / 2 {
                    -x[c + d / 2]
                } else {
                    x[c - d / 2]
                };
                x[c] * cos[c] as f64 + rot * sin[c] as f64
            })
            .collect()
    };
    let plain = |x: &[f32], row: usize| -> Vec<f64> {
        x[row * d..(row + 1) * d]
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let past = t - n;
    let mut out = vec![0f64; hq * n * d];
    for h in 0..hq {
        let kh = h / group;
        for i in 0..n {
            let q = if spec.rope_q {
                rotate(&inputs["q"], h * n + i, i)
            } else {
                plain(&inputs["q"], h * n + i)
            };
            let mut scores = vec![f64::NEG_INFINITY; t];
            for (j, s) in scores.iter_mut().enumerate() {
                let ok = match spec.mask {
                    AttentionMask::Causal => j <= past + i,
                    AttentionMask::Segments => ints["segments"][i] == ints["segments"][j],
                    AttentionMask::Full => true,
                };
                if ok {
                    let k = if spec.rope_k {
                        rotate(&inputs["k"], kh * t + j, j)
                    } else {
                        plain(&inputs["k"], kh * t + j)
                    };
                    *s = q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() * spec.scale;
                }
            }
            let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f64 = w.iter().sum();
            for (j, wj) in w.iter().enumerate() {
                let v = plain(&inputs["v"], kh * t + j);
                for c in 0..d {
                    out[(h * n + i) * d + c] += wj / total * v[c];
                }
            }
        }
    }
    out
}

/// Runs the template's kernels on the emulator and returns the NMSE of `out` against `direct`.
fn nmse(t: &dyn Template, spec: &AttnSpec, sz: &Sizes) -> f64 {
    let graph = t.reference();
    let env: HashMap<String, i64> = sz.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (sz.values().sum::<i64>() as u64 + 1));
    let (mut floats, mut ints) = (HashMap::new(), HashMap::new());
    let mut emu = Emulator::new();
    let mut buffers: HashMap<String, BufferId> = HashMap::new();
    for node in &graph.nodes {
        let Op::Input { name } = &node.op else {
            continue;
        };
        let len: usize = node
            .ty
            .concrete_shape(&env)
            .expect("sizes bind the graph")
            .iter()
            .product();
        if node.ty.dtype.is_float() {
            let mut v: Vec<f32> = (0..len).map(|_| rng.uniform()).collect();
            if spec.dtype == Ty::Bf16 {
                v.iter_mut()
                    .for_each(|x| *x = bf16_bits_to_f32(f32_to_bf16_bits(*x)));
            }
            buffers.insert(
                name.clone(),
                emu.alloc(DeviceBuffer::from_f32(spec.dtype, &v)),
            );
            floats.insert(name.clone(), v);
        } else {
            let v = t.int_input(name, sz).expect("int input values");
            assert_eq!(v.len(), len, "{name}");
            buffers.insert(name.clone(), emu.alloc(DeviceBuffer::from_i64(Ty::I64, &v)));
            ints.insert(name.clone(), v);
        }
    }
    let (hq, d) = (spec.q_heads, spec.head_dim);
    let (n, kv) = match spec.mask {
        AttentionMask::Segments => (sz["n_patches"], sz["n_patches"]),
        _ if sz.contains_key("seq_len") => (sz["seq_len"], sz["seq_len"] + sz["past_len"]),
        _ => (1, sz["past_len"] + 1),
    };
    let out = emu.alloc(DeviceBuffer::new(spec.dtype, hq * n as usize * d));
    buffers.insert("out".into(), out);
    for s in t.scratch() {
        buffers.insert(
            s.name.clone(),
            emu.alloc(DeviceBuffer::new(s.elem, s.len_at(sz).unwrap())),
        );
    }
    for k in t.kernels() {
        let args: Vec<Arg> = k
            .params
            .iter()
            .map(|p| match p.kind {
                ParamKind::Buffer { .. } => Arg::Buffer(
                    *buffers
                        .get(&p.name)
                        .unwrap_or_else(|| panic!("no buffer {}", p.name)),
                ),
                ParamKind::Scalar(_) => Arg::Scalar(Lit::I64(
                    *sz.get(&p.name)
                        .unwrap_or_else(|| panic!("no size {}", p.name)),
                )),
            })
            .collect();
        emu.launch(&k, &args)
            .unwrap_or_else(|e| panic!("{} {sz:?}: {e}", k.name));
    }
    let got = emu.buffer(out).to_f32();
    let want = direct(spec, &floats, &ints, n as usize, kv as usize);
    assert!(got.iter().all(|g| g.is_finite()), "non-finite output");
    let err: f64 = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    err / norm
}

fn limit(dtype: Ty) -> f64 {
    if dtype == Ty::F32 {
        1e-10
    } else {
        5e-4
    }
}

#[test]
fn vision_segments_across_tiles() {
    for dtype in [Ty::F32, Ty::Bf16] {
        let t = VisionAttention {
            dtype,
            heads: 2,
            head_dim: if dtype == Ty::F32 { 12 } else { 24 },
        };
        // 3 segments of 43 patches: segment edges inside tiles, and a tile that spans three.
        for (n, frames) in [(1, 1), (7, 1), (129, 3), (70, 5)] {
            let sz = sizes(&[("n_patches", n), ("frames", frames)]);
            let e = nmse(&t, &t.spec(), &sz);
            eprintln!("{} {sz:?}: nmse {e:.2e}", t.name());
            assert!(e < limit(dtype), "{} {sz:?}: nmse {e:e}", t.name());
        }
    }
}

#[test]
fn prefill_causal_gqa_with_prefix() {
    for dtype in [Ty::F32, Ty::Bf16] {
        // Group 3: packed tiles end mid-position.
        let t = PrefillAttention {
            dtype,
            q_heads: 6,
            kv_heads: 2,
            head_dim: 16,
        };
        for (seq_len, past_len) in [(1, 0), (7, 0), (30, 0), (5, 70), (1, 9)] {
            let sz = sizes(&[
                ("seq_len", seq_len),
                ("past_len", past_len),
                ("kv_capacity", seq_len + past_len),
            ]);
            let e = nmse(&t, &t.spec(), &sz);
            eprintln!("{} {sz:?}: nmse {e:.2e}", t.name());
            assert!(e < limit(dtype), "{} {sz:?}: nmse {e:e}", t.name());
        }
    }
}

/// Prefill reads the engine's cache, `kv_capacity` rows per kv head of which only the first
/// `past_len + seq_len` are valid: the rows past them stay uninitialised, so the emulator fails
/// the launch if the kernel reads one, and the output must match the reference executor on the
/// unpadded keys.
#[test]
fn prefill_reads_cache_with_capacity() {
    let (seq_len, past_len, capacity) = (9usize, 3usize, 20usize);
    let t = past_len + seq_len;
    for dtype in [Ty::F32, Ty::Bf16] {
        // Two kv heads, so a wrong head stride lands in the padding or the other head.
        let tmpl = PrefillAttention {
            dtype,
            q_heads: 6,
            kv_heads: 2,
            head_dim: 16,
        };
        let spec = tmpl.spec();
        let (hkv, d) = (spec.kv_heads, spec.head_dim);
        let ir_dtype = if dtype == Ty::F32 {
            DType::F32
        } else {
            DType::BF16
        };
        let sz = sizes(&[
            ("seq_len", seq_len as i64),
            ("past_len", past_len as i64),
            ("kv_capacity", capacity as i64),
        ]);
        let symbols: HashMap<String, i64> = sz.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let graph = tmpl.reference();
        let mut rng = Rng(0x243f_6a88_85a3_08d3);
        let mut emu = Emulator::new();
        let (mut inputs, mut buffers) = (HashMap::new(), HashMap::new());
        for node in &graph.nodes {
            let Op::Input { name } = &node.op else {
                continue;
            };
            let shape = node
                .ty
                .concrete_shape(&symbols)
                .expect("sizes bind the graph");
            let v: Vec<f32> = (0..shape.iter().product()).map(|_| rng.uniform()).collect();
            let buf = if name == "k" || name == "v" {
                assert_eq!(shape, [hkv, t, d]);
                let mut b = DeviceBuffer::new(dtype, hkv * capacity * d);
                for (i, x) in v.iter().enumerate() {
                    let (h, row) = (i / (t * d), i % (t * d));
                    b.set_f32(h * capacity * d + row, *x);
                }
                b
            } else {
                DeviceBuffer::from_f32(dtype, &v)
            };
            buffers.insert(name.clone(), emu.alloc(buf));
            inputs.insert(name.clone(), Tensor::from_f32(ir_dtype, shape, v));
        }
        let no_weights: HashMap<String, Tensor> = HashMap::new();
        let expected = execute_sized(&graph, &inputs, &no_weights, &HashMap::new(), &symbols)
            .expect("reference");
        let out = emu.alloc(DeviceBuffer::new(dtype, spec.q_heads * seq_len * d));
        buffers.insert("out".to_string(), out);
        for k in tmpl.kernels() {
            let args: Vec<Arg> = k
                .params
                .iter()
                .map(|p| match p.kind {
                    ParamKind::Buffer { .. } => Arg::Buffer(buffers[&p.name]),
                    ParamKind::Scalar(_) => Arg::Scalar(Lit::I64(sz[&p.name])),
                })
                .collect();
            emu.launch(&k, &args)
                .unwrap_or_else(|e| panic!("{} {sz:?}: {e}", k.name));
        }
        let check = OutputCheck::compare(
            "out",
            &expected.outputs["out"],
            emu.buffer(out),
            tmpl.nmse_limit(),
        );
        eprintln!("{} {sz:?}: nmse {:.2e}", tmpl.name(), check.nmse);
        assert!(check.passed(), "{} {sz:?}: {check:?}", tmpl.name());
    }
}

#[test]
fn decode_split_kv_chunks() {
    for dtype in [Ty::F32, Ty::Bf16] {
        let t = DecodeAttention {
            dtype,
            q_heads: 6,
            kv_heads: 2,
            head_dim: 16,
        };
        // 1 chunk; 3 chunks of 128 with a short last one; a grid with more CTAs than chunks.
        for (past_len, max_chunks) in [(0, 2), (299, 3), (130, 8), (299, 1)] {
            let sz = sizes(&[
                ("past_len", past_len),
                ("kv_capacity", past_len + 1),
                ("max_chunks", max_chunks),
            ]);
            let e = nmse(&t, &t.spec(), &sz);
            eprintln!("{} {sz:?}: nmse {e:.2e}", t.name());
            assert!(e < limit(dtype), "{} {sz:?}: nmse {e:e}", t.name());
        }
    }
}

/// The real 2B/7B shapes (the harness runs them against the reference executor; this checks
/// them against the direct attention). About 10 s, so run on demand: `--ignored`.
#[test]
#[ignore]
fn real_shapes() {
    let check = |t: &dyn Template, spec: &AttnSpec, pairs: &[(&str, i64)]| {
        let start = std::time::Instant::now();
        let e = nmse(t, spec, &sizes(pairs));
        eprintln!(
            "{} {pairs:?}: nmse {e:.2e} in {:.2} s",
            t.name(),
            start.elapsed().as_secs_f64()
        );
        assert!(e < limit(spec.dtype), "{} {pairs:?}: nmse {e:e}", t.name());
    };
    for dtype in [Ty::F32, Ty::Bf16] {
        let v = VisionAttention {
            dtype,
            heads: 16,
            head_dim: 72,
        };
        for (n, frames) in [(64, 1), (256, 16), (129, 3)] {
            check(&v, &v.spec(), &[("n_patches", n), ("frames", frames)]);
        }
        for (q_heads, kv_heads) in [(12, 2), (28, 4)] {
            let p = PrefillAttention {
                dtype,
                q_heads,
                kv_heads,
                head_dim: 128,
            };
            for seq_len in [7, 64, 129] {
                check(
                    &p,
                    &p.spec(),
                    &[
                        ("seq_len", seq_len),
                        ("past_len", 0),
                        ("kv_capacity", seq_len),
                    ],
                );
            }
            let d = DecodeAttention {
                dtype,
                q_heads,
                kv_heads,
                head_dim: 128,
            };
            check(
                &d,
                &d.spec(),
                &[("past_len", 299), ("kv_capacity", 300), ("max_chunks", 4)],
            );
        }
    }
}
