//! The SigLIP-style encoder with 2-D axial RoPE and block-diagonal attention (spec §3.2),
//! followed by the spatial merge.

use super::builder::{Builder, Result};
use crate::config::{ModelConfig, VisionConfig};
use vl3c_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceOp};

/// Most images or videos one encoder call takes; the runner groups entries into calls.
pub const MAX_ENTRIES_PER_CALL: i64 = 64;

/// Differential Frame Pruning's threshold on the mean |Δpixel|·255 of a merged token's patch
/// block: transformers' default (`_get_compression_mask(threshold=0.1)`, spec §4.3).
pub const DIFF_FRAME_PRUNE_THRESHOLD: f64 = 0.1;

/// `vision_m{merge}`: `pixel_values`, `grid_thw`, `merge_sizes` → merged `features [n, F]`.
/// For merge > 1 (videos) also `keep_mask` bool `[n]`: Differential Frame Pruning's keep-mask
/// over the merged tokens, which the runner uses when the inputs carry no `video_compression_mask`.
/// Every entry in one call shares the merge size, which is what the symbolic patch count
/// `merge²·n_merged` states; the runner groups entries by merge size.
pub fn vision_graph(
    cfg: &ModelConfig,
    merge: usize,
    weight_dtype: &dyn Fn(&str) -> DType,
) -> Result<Graph> {
    let v = &cfg.vision;
    let mut b = Builder::new(&format!("vision_m{merge}"), weight_dtype);
    let group = (merge * merge) as i64;
    // Images merge 1 and videos 2 in every VideoLLaMA3 processor: the bound follows the kind.
    let limits = &cfg.vision_limits;
    let per_entry = if merge == 1 {
        limits.image_max_patches
    } else {
        limits.video_max_patches
    } as i64;
    let n_merged = b.sym(
        "n_merged",
        1,
        (MAX_ENTRIES_PER_CALL * per_entry / group).max(1),
    );
    let n_entries = b.sym("n_entries", 1, MAX_ENTRIES_PER_CALL);
    let n = Dim::Const(group) * n_merged.clone();
    let patch_len = v.num_channels * v.patch_size * v.patch_size;

    let pixels = b.input(
        "pixel_values",
        DType::F32,
        vec![n.clone(), patch_len.into()],
    )?;
    let grid = b.input("grid_thw", DType::I64, vec![n_entries.clone(), 3i64.into()])?;
    let merges = b.input("merge_sizes", DType::I64, vec![n_entries])?;

    let x = b.cast(pixels, b.compute)?;
    let mut x = patch_embed(&mut b, x, v)?;

    let positions = b.op(Op::VisionPositionIds { len: n.clone() }, &[grid, merges])?;
    let (cos, sin) = axial_rope_tables(&mut b, positions, v)?;
    let segments = b.op(Op::SegmentIds { len: n.clone() }, &[grid])?;
    let allowed = same_segment(&mut b, segments, &n)?;

    for layer in 0..v.num_hidden_layers {
        x = encoder_layer(&mut b, x, layer, v, cos, sin, allowed, &n)?;
    }
    let x = b.layer_norm(
        x,
        "model.vision_model.post_layernorm",
        v.hidden_size,
        v.layer_norm_eps,
    )?;
    let features = if merge == 1 {
        x
    } else {
        // Rows come in merge-block-major order, so each merged token is the mean of `merge²`
        // consecutive rows: exactly transformers' bilinear downsampling by an integer factor of 2.
        let grouped = b.reshape(
            x,
            vec![n_merged.clone(), Dim::Const(group), v.hidden_size.into()],
        )?;
        b.op(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: vec![1],
                keep_dims: false,
            },
            &[grouped],
        )?
    };
    b.g.set_output("features", features);
    if merge > 1 {
        // Pruning reads the normalized pixels, not the features (spec §4.3): it is part of the
        // graph so that a compiled model needs no preprocessing hidden in the runtime.
        let prune = Op::DiffFramePrune {
            threshold: DIFF_FRAME_PRUNE_THRESHOLD,
            merge,
            len: n_merged.clone(),
        };
        let keep = b.op(prune, &[pixels, grid])?;
        b.g.set_output("keep_mask", keep);
    }
    Ok(b.finish())
}

/// The Conv2d with kernel = stride = patch is a matmul with the flattened kernel.
fn patch_embed(b: &mut Builder, x: NodeId, v: &VisionConfig) -> Result<NodeId> {
    let (f, c, p) = (v.hidden_size, v.num_channels, v.patch_size);
    let prefix = "model.vision_model.embeddings.patch_embedding";
    let w = b.weight(&format!("{prefix}.weight"), &[f, c, p, p])?;
    let w = b.reshape(w, vec![f.into(), (c * p * p).into()])?;
    let wt = b.transpose(w, &[1, 0])?;
    let y = b.matmul(x, wt)?;
    let bias = b.weight(&format!("{prefix}.bias"), &[f])?;
    b.add(y, bias)
}

/// cos/sin `[n, 1, head_dim]`: angles laid out `[rows, cols, rows, cols]`, each a quarter.
fn axial_rope_tables(
    b: &mut Builder,
    positions: NodeId,
    v: &VisionConfig,
) -> Result<(NodeId, NodeId)> {
    let n = b.shape(positions)[0].clone();
    let inv_freq = b.rope_inv_freq(v.head_dim / 2, v.rope_theta)?;
    let mut axis_angles = Vec::new();
    for axis in 0..2 {
        let col = b.slice(positions, 1, axis, axis + 1)?;
        let col = b.reshape(col, vec![n.clone()])?;
        axis_angles.push(b.rope_angles(col, inv_freq)?);
    }
    let (rows, cols) = (axis_angles[0], axis_angles[1]);
    let angles = b.concat(&[rows, cols, rows, cols], 1)?;
    let angles = b.reshape(angles, vec![n, Dim::Const(1), v.head_dim.into()])?;
    let cos = b.unary(vl3c_ir::UnaryOp::Cos, angles)?;
    let sin = b.unary(vl3c_ir::UnaryOp::Sin, angles)?;
    Ok((cos, sin))
}

/// `allowed[i, j]` = patches i and j belong to the same frame: block-diagonal attention.
fn same_segment(b: &mut Builder, segments: NodeId, n: &Dim) -> Result<NodeId> {
    let col = b.reshape(segments, vec![n.clone(), Dim::Const(1)])?;
    let row = b.reshape(segments, vec![Dim::Const(1), n.clone()])?;
    b.binary(BinaryOp::Eq, col, row)
}

#[allow(clippy::too_many_arguments)]
fn encoder_layer(
    b: &mut Builder,
    x: NodeId,
    layer: usize,
    v: &VisionConfig,
    cos: NodeId,
    sin: NodeId,
    allowed: NodeId,
    n: &Dim,
) -> Result<NodeId> {
    let p = format!("model.vision_model.encoder.layers.{layer}");
    let (f, heads, hd) = (v.hidden_size, v.num_attention_heads, v.head_dim);
    let y = b.layer_norm(x, &format!("{p}.layer_norm1"), f, v.layer_norm_eps)?;
    let mut qkv = Vec::new();
    for name in ["q_proj", "k_proj", "v_proj"] {
        let t = b.linear(y, &format!("{p}.self_attn.{name}"), f, f, true)?;
        qkv.push(b.reshape(t, vec![n.clone(), heads.into(), hd.into()])?);
    }
    let q = b.apply_rope(qkv[0], cos, sin)?;
    let k = b.apply_rope(qkv[1], cos, sin)?;
    let [q, k, vv] = [q, k, qkv[2]].map(|t| b.transpose(t, &[1, 0, 2]));
    let o = b.attention(q?, k?, vv?, allowed, hd)?;
    let o = b.transpose(o, &[1, 0, 2])?;
    let o = b.reshape(o, vec![n.clone(), f.into()])?;
    let o = b.linear(o, &format!("{p}.self_attn.out_proj"), f, f, true)?;
    let x = b.add(x, o)?;

    let y = b.layer_norm(x, &format!("{p}.layer_norm2"), f, v.layer_norm_eps)?;
    let h = b.linear(y, &format!("{p}.mlp.fc1"), v.intermediate_size, f, true)?;
    let h = b.gelu_tanh(h)?;
    let h = b.linear(h, &format!("{p}.mlp.fc2"), f, v.intermediate_size, true)?;
    b.add(x, h)
}

/// `projector`: merged vision features `[n, F]` → LLM embeddings `[n, H]` (Linear, erf-GELU, Linear).
pub fn projector_graph(cfg: &ModelConfig, weight_dtype: &dyn Fn(&str) -> DType) -> Result<Graph> {
    let (f, h) = (cfg.vision.hidden_size, cfg.text.hidden_size);
    let mut b = Builder::new("projector", weight_dtype);
    let limits = &cfg.vision_limits;
    let most = MAX_ENTRIES_PER_CALL * limits.image_max_patches.max(limits.video_max_patches) as i64;
    let n = b.sym("n_tokens", 1, most);
    let x = b.input("features", b.compute, vec![n, f.into()])?;
    let x = b.linear(x, "model.projector.readout.0", h, f, true)?;
    let x = b.gelu_erf(x)?;
    let x = b.linear(x, "model.projector.readout.2", h, h, true)?;
    b.g.set_output("embeds", x);
    Ok(b.finish())
}
