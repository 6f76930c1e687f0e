//! What the harness's random inputs cannot reach, run on the emulator against hand-computed
//! answers: Differential Frame Pruning on repeated and barely changed frames (the threshold and
//! the one-token-per-frame rule), the prefix sum over more tiles than one block scans (the carry
//! across chunks), and the KV-cache append into a cache larger than what is written (the
//! positions around the new ones are left alone).

use vl3c_cuda::emu::{Arg, BufferId, DeviceBuffer, Emulator};
use vl3c_cuda::kir::{Kernel, Lit, ParamKind, Ty};
use vl3c_cuda::templates::embed::MaskedScatter;
use vl3c_cuda::templates::prune::{DiffFramePrune, MaskedSelect};
use vl3c_cuda::templates::rope::RopeCache;
use vl3c_cuda::templates::{FloatTy, Sizes, Template};

/// Launches `kernels` in order, binding buffer parameters by name from `buffers` and scalar
/// parameters from `scalars`, as the harness and the engine do.
fn run(
    emu: &mut Emulator,
    kernels: &[Kernel],
    buffers: &[(&str, BufferId)],
    scalars: &[(&str, i64)],
) {
    for k in kernels {
        let args: Vec<Arg> = k
            .params
            .iter()
            .map(|p| match p.kind {
                ParamKind::Buffer { .. } => {
                    let (_, id) = buffers
                        .iter()
                        .find(|(n, _)| *n == p.name)
                        .unwrap_or_else(|| panic!("no buffer {}", p.name));
                    Arg::Buffer(*id)
                }
                ParamKind::Scalar(_) => {
                    let (_, v) = scalars
                        .iter()
                        .find(|(n, _)| *n == p.name)
                        .unwrap_or_else(|| panic!("no scalar {}", p.name));
                    Arg::Scalar(Lit::I64(*v))
                }
            })
            .collect();
        emu.launch(k, &args)
            .unwrap_or_else(|e| panic!("{}: {e}", k.name));
    }
}

/// A deterministic value in [-1, 1).
fn noise(i: usize) -> f32 {
    let h = (i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

#[test]
fn pruning_drops_repeated_frames_and_keeps_one_token_per_frame() {
    const VALUES: usize = 6;
    let prune = DiffFramePrune {
        dtype: FloatTy::F32,
        patch_values: VALUES,
        merge: 2,
        threshold: 0.1,
    };
    // Entry 0: 5 frames of 4×4 patches = 4 tokens per frame; entry 1: 2 frames of one token.
    let grid: [[i64; 3]; 2] = [[5, 4, 4], [2, 2, 2]];
    let block = 4 * VALUES;
    let frame0: Vec<f32> = (0..4 * block).map(noise).collect();
    let mut frames = vec![frame0.clone(), frame0.clone()];
    // Frame 2: token 2 changes by 0.5 (255·0.5 ≫ 0.1): kept alone, no rescue needed.
    let mut f2 = frame0.clone();
    f2[2 * block..3 * block].iter_mut().for_each(|v| *v += 0.5);
    frames.push(f2.clone());
    // Frame 3: every token moves by 1e-4 (mean·255 = 0.0255 < 0.1): all pruned, token 0 rescued.
    frames.push(f2.iter().map(|v| v + 1e-4).collect());
    // Frame 4: token 3 moves by 1e-3 (0.255 > 0.1) and token 1 by 2e-4 (0.051): only 3 kept.
    let mut f4 = frames[3].clone();
    f4[3 * block..].iter_mut().for_each(|v| *v += 1e-3);
    f4[block..2 * block].iter_mut().for_each(|v| *v += 2e-4);
    frames.push(f4);
    let second: Vec<f32> = (0..block).map(|i| noise(i + 999)).collect();
    // A token's m×m patch block is `block` consecutive values, so a frame is its tokens' blocks.
    let mut pixels: Vec<f32> = frames.concat();
    pixels.extend(&second);
    pixels.extend(&second);
    #[rustfmt::skip]
    let expected = [
        1, 1, 1, 1,
        1, 0, 0, 0,
        0, 0, 1, 0,
        1, 0, 0, 0,
        0, 0, 0, 1,
        1,
        1,
    ];

    let mut emu = Emulator::new();
    let px = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &pixels));
    let g = emu.alloc(DeviceBuffer::from_i64(Ty::I64, &grid.concat()));
    let out = emu.alloc(DeviceBuffer::new(Ty::Bool, expected.len()));
    let sizes = [("n_merged", expected.len() as i64), ("n_entries", 2)];
    run(
        &mut emu,
        &prune.kernels(),
        &[("pixel_values", px), ("grid_thw", g), ("out", out)],
        &sizes,
    );
    assert_eq!(emu.buffer(out).to_i64(), expected.map(i64::from).to_vec());
}

#[test]
fn compaction_carries_the_scan_across_more_tiles_than_a_block() {
    // 2^18 + 5000 rows: 262 tiles of 1024, more than the 256 the offsets kernel scans at once.
    let rows = (1 << 18) + 5000;
    let mask: Vec<i64> = (0..rows)
        .map(|i| i64::from(i % 3 == 0 || i % 7 == 1))
        .collect();
    let data: Vec<f32> = (0..rows * 2).map(|i| i as f32).collect();
    let expected: Vec<f32> = (0..rows)
        .filter(|&i| mask[i] == 1)
        .flat_map(|i| [(2 * i) as f32, (2 * i + 1) as f32])
        .collect();
    let select = MaskedSelect {
        dtype: FloatTy::F32,
        features: 2,
    };
    let sizes = [("rows", rows as i64), ("kept", (expected.len() / 2) as i64)];
    let size_map: Sizes = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let scratch = select.scratch();

    let mut emu = Emulator::new();
    let d = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &data));
    let m = emu.alloc(DeviceBuffer::from_i64(Ty::Bool, &mask));
    let out = emu.alloc(DeviceBuffer::new(Ty::F32, expected.len()));
    let scratch: Vec<(String, BufferId)> = scratch
        .into_iter()
        .map(|s| {
            let len = s.len_at(&size_map).unwrap();
            (s.name, emu.alloc(DeviceBuffer::new(s.elem, len)))
        })
        .collect();
    let mut buffers: Vec<(&str, BufferId)> = vec![("data", d), ("mask", m), ("out", out)];
    buffers.extend(scratch.iter().map(|(n, id)| (n.as_str(), *id)));
    run(&mut emu, &select.kernels(), &buffers, &sizes);
    assert_eq!(emu.buffer(out).to_f32(), expected);
}

#[test]
fn scatter_without_sources_copies_the_base() {
    let scatter = MaskedScatter {
        dtype: FloatTy::Bf16,
        hidden: 4,
    };
    let base: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let sizes = [("rows", 3), ("n_src", 0)];
    let mut emu = Emulator::new();
    let b = emu.alloc(DeviceBuffer::from_f32(Ty::Bf16, &base));
    let m = emu.alloc(DeviceBuffer::from_i64(Ty::Bool, &[0, 0, 0]));
    let s = emu.alloc(DeviceBuffer::from_f32(Ty::Bf16, &[]));
    let out = emu.alloc(DeviceBuffer::new(Ty::Bf16, 12));
    let size_map: Sizes = sizes.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let scratch = scatter.scratch();
    let scratch: Vec<(String, BufferId)> = scratch
        .into_iter()
        .map(|s| {
            let len = s.len_at(&size_map).unwrap();
            (s.name, emu.alloc(DeviceBuffer::new(s.elem, len)))
        })
        .collect();
    let mut buffers: Vec<(&str, BufferId)> =
        vec![("base", b), ("mask", m), ("src", s), ("out", out)];
    buffers.extend(scratch.iter().map(|(n, id)| (n.as_str(), *id)));
    run(&mut emu, &scatter.kernels(), &buffers, &sizes);
    assert_eq!(emu.buffer(out).to_f32(), base);
}

#[test]
fn cache_append_writes_only_the_new_positions() {
    let (hq, hk, d) = (2usize, 1usize, 4usize);
    let (n, past, capacity) = (2usize, 3usize, 8usize);
    let width = (hq + 2 * hk) * d;
    let qkv: Vec<f32> = (0..n * width).map(|i| noise(i + 7)).collect();
    let angle = |pos: usize, j: usize| (pos * 10 + j % (d / 2)) as f32 * 0.1;
    let cos: Vec<f32> = (0..n * d).map(|i| angle(i / d, i % d).cos()).collect();
    let sin: Vec<f32> = (0..n * d).map(|i| angle(i / d, i % d).sin()).collect();
    let old: Vec<f32> = (0..hk * capacity * d).map(|i| 100.0 + i as f32).collect();

    let mut key = old.clone();
    let mut value = old.clone();
    for i in 0..n {
        let k = &qkv[i * width + hq * d..][..d];
        let v = &qkv[i * width + (hq + hk) * d..][..d];
        let dst = (past + i) * d;
        for j in 0..d {
            let rotated = if j < d / 2 {
                -k[j + d / 2]
            } else {
                k[j - d / 2]
            };
            key[dst + j] = k[j] * cos[i * d + j] + rotated * sin[i * d + j];
            value[dst + j] = v[j];
        }
    }

    let step = RopeCache {
        dtype: FloatTy::F32,
        q_heads: hq,
        kv_heads: hk,
        head_dim: d,
    };
    let mut emu = Emulator::new();
    let q = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &qkv));
    let c = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &cos));
    let s = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &sin));
    let kc = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &old));
    let vc = emu.alloc(DeviceBuffer::from_f32(Ty::F32, &old));
    let sizes = [
        ("n", n as i64),
        ("past_len", past as i64),
        ("capacity", capacity as i64),
    ];
    run(
        &mut emu,
        &step.kernels(),
        &[
            ("qkv", q),
            ("cos", c),
            ("sin", s),
            ("key", kc),
            ("value", vc),
        ],
        &sizes,
    );
    assert_eq!(emu.buffer(kc).to_f32(), key);
    assert_eq!(emu.buffer(vc).to_f32(), value);
}
