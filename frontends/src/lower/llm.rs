//! The Qwen2 language model (spec §3.4–3.5): multimodal embedding merge, decoder layers with
//! GQA and 1-D RoPE over a KV cache, final norm and the LM head for every position.

use super::builder::{Builder, Result};
use crate::config::{ModelConfig, TextConfig};
use vl3c_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Prompt processing: text with image/video embeddings scattered into their placeholders.
    Prefill,
    /// Token generation: text only.
    Decode,
}

/// The prefill graph's second output: the logits of the last position only, `[1, 1, vocab]`.
pub const LAST_LOGITS: &str = "last_logits";

/// Names of the KV-cache states of one layer.
pub fn cache_names(layer: usize) -> [String; 2] {
    [
        format!("layers.{layer}.key"),
        format!("layers.{layer}.value"),
    ]
}

/// `prefill` / `decode`: `input_ids [1, seq_len]` after `past_len` cached positions → `logits
/// [1, seq_len, vocab]` (and, for prefill, [`LAST_LOGITS`]), appending to the caches
/// `layers.{i}.{key,value}` `[kv_heads, len, head_dim]`.
pub fn llm_graph(
    cfg: &ModelConfig,
    step: Step,
    weight_dtype: &dyn Fn(&str) -> DType,
) -> Result<Graph> {
    let t = &cfg.text;
    let name = match step {
        Step::Prefill => "prefill",
        Step::Decode => "decode",
    };
    let mut b = Builder::new(name, weight_dtype);
    let max_pos = t.max_position_embeddings as i64;
    let seq = b.sym("seq_len", 1, max_pos);
    let past = b.sym("past_len", 0, max_pos - 1);
    let ids = b.input("input_ids", DType::I64, vec![Dim::Const(1), seq.clone()])?;
    let ids = b.reshape(ids, vec![seq.clone()])?;

    let embed_name = "model.language_model.embed_tokens.weight";
    let table = b.raw_weight(embed_name, &[t.vocab_size, t.hidden_size])?;
    // Gather before casting: only the looked-up rows are converted.
    let rows = b.op(Op::Gather { axis: 0 }, &[table, ids])?;
    let mut x = b.cast(rows, b.compute)?;
    if step == Step::Prefill {
        x = merge_multimodal(&mut b, x, ids, cfg, max_pos)?;
    }

    let positions = b.op(
        Op::Iota {
            len: seq.clone(),
            start: past.clone(),
            dtype: DType::I64,
        },
        &[],
    )?;
    let inv_freq = b.rope_inv_freq(t.head_dim, t.rope_theta)?;
    let freqs = b.rope_angles(positions, inv_freq)?;
    let angles = b.concat(&[freqs, freqs], 1)?;
    let angles = b.reshape(angles, vec![Dim::Const(1), seq.clone(), t.head_dim.into()])?;
    let cos = b.unary(vl3c_ir::UnaryOp::Cos, angles)?;
    let sin = b.unary(vl3c_ir::UnaryOp::Sin, angles)?;
    let allowed = causal_mask(&mut b, &seq, &past)?;

    for layer in 0..t.num_hidden_layers {
        x = decoder_layer(&mut b, x, layer, t, cos, sin, allowed, &seq, &past)?;
    }
    let x = b.rms_norm(
        x,
        "model.language_model.norm.weight",
        t.hidden_size,
        t.rms_norm_eps,
    )?;
    let head = b.weight(
        crate::names::lm_head_source(cfg),
        &[t.vocab_size, t.hidden_size],
    )?;
    let head = b.transpose(head, &[1, 0])?;
    let logits = b.matmul(x, head)?;
    let logits = b.reshape(
        logits,
        vec![Dim::Const(1), seq.clone(), t.vocab_size.into()],
    )?;
    b.g.set_output("logits", logits);
    if step == Step::Prefill {
        // transformers' `logits_to_keep=1`: generation samples from the last position only, so a
        // runner asked for just this output skips the LM head over the other rows (15 % of a
        // 2B prefill's FLOPs at 300 tokens).
        let last = b.op(
            Op::Slice {
                axis: 0,
                start: seq.clone() + -1i64,
                end: seq,
            },
            &[x],
        )?;
        let last = b.matmul(last, head)?;
        let last = b.reshape(
            last,
            vec![Dim::Const(1), Dim::Const(1), t.vocab_size.into()],
        )?;
        b.g.set_output(LAST_LOGITS, last);
    }
    Ok(b.finish())
}

/// Scatters projected image and video embeddings into their placeholder positions, after
/// dropping the video tokens that Differential Frame Pruning removed.
fn merge_multimodal(
    b: &mut Builder,
    x: NodeId,
    ids: NodeId,
    cfg: &ModelConfig,
    max_pos: i64,
) -> Result<NodeId> {
    let h = cfg.text.hidden_size;
    let n_img = b.sym("n_image_tokens", 0, max_pos);
    let images = b.input("image_embeds", b.compute, vec![n_img, h.into()])?;
    let is_image = placeholder_mask(b, ids, cfg.image_token_id.into())?;
    let x = b.op(Op::MaskedScatter, &[x, is_image, images])?;
    let Some(video_token) = cfg.video_token_id else {
        return Ok(x);
    };
    let n_vid = b.sym("n_video_tokens", 0, 1 << 24);
    let n_kept = b.sym("n_video_kept", 0, max_pos);
    let videos = b.input("video_embeds", b.compute, vec![n_vid.clone(), h.into()])?;
    let keep = b.input("video_compression_mask", DType::Bool, vec![n_vid])?;
    let kept = b.op(Op::MaskedSelect { len: n_kept }, &[videos, keep])?;
    let is_video = placeholder_mask(b, ids, video_token.into())?;
    b.op(Op::MaskedScatter, &[x, is_video, kept])
}

fn placeholder_mask(b: &mut Builder, ids: NodeId, token: i64) -> Result<NodeId> {
    let id = b.int(token)?;
    b.binary(BinaryOp::Eq, ids, id)
}

/// `allowed[i, j]`: key position j ≤ query position past + i.
fn causal_mask(b: &mut Builder, seq: &Dim, past: &Dim) -> Result<NodeId> {
    let total = past.clone() + seq.clone();
    let q = b.op(
        Op::Iota {
            len: seq.clone(),
            start: past.clone(),
            dtype: DType::I64,
        },
        &[],
    )?;
    let q = b.reshape(q, vec![seq.clone(), Dim::Const(1)])?;
    let k = b.op(
        Op::Iota {
            len: total.clone(),
            start: Dim::Const(0),
            dtype: DType::I64,
        },
        &[],
    )?;
    let k = b.reshape(k, vec![Dim::Const(1), total])?;
    b.binary(BinaryOp::Le, k, q)
}

/// `[len, heads·hd]` → `[heads, len, hd]`.
fn split_heads(b: &mut Builder, x: NodeId, len: &Dim, heads: usize, hd: usize) -> Result<NodeId> {
    let x = b.reshape(x, vec![len.clone(), heads.into(), hd.into()])?;
    b.transpose(x, &[1, 0, 2])
}

/// GQA: query head j reads kv head j / group, so each kv head is repeated `group` times.
fn repeat_kv(b: &mut Builder, x: NodeId, t: &TextConfig, len: &Dim) -> Result<NodeId> {
    let group = t.num_attention_heads / t.num_key_value_heads;
    if group == 1 {
        return Ok(x);
    }
    let (kv, hd) = (t.num_key_value_heads, t.head_dim);
    let x = b.reshape(x, vec![kv.into(), Dim::Const(1), len.clone(), hd.into()])?;
    let x = b.op(
        Op::Broadcast {
            shape: vec![kv.into(), group.into(), len.clone(), hd.into()],
        },
        &[x],
    )?;
    b.reshape(
        x,
        vec![t.num_attention_heads.into(), len.clone(), hd.into()],
    )
}

#[allow(clippy::too_many_arguments)]
fn decoder_layer(
    b: &mut Builder,
    x: NodeId,
    layer: usize,
    t: &TextConfig,
    cos: NodeId,
    sin: NodeId,
    allowed: NodeId,
    seq: &Dim,
    past: &Dim,
) -> Result<NodeId> {
    let p = format!("model.language_model.layers.{layer}");
    let (h, hd, heads, kv) = (
        t.hidden_size,
        t.head_dim,
        t.num_attention_heads,
        t.num_key_value_heads,
    );
    let y = b.rms_norm(x, &format!("{p}.input_layernorm.weight"), h, t.rms_norm_eps)?;
    let q = b.linear(y, &format!("{p}.self_attn.q_proj"), heads * hd, h, true)?;
    let k = b.linear(y, &format!("{p}.self_attn.k_proj"), kv * hd, h, true)?;
    let v = b.linear(y, &format!("{p}.self_attn.v_proj"), kv * hd, h, true)?;
    let q = split_heads(b, q, seq, heads, hd)?;
    let k = split_heads(b, k, seq, kv, hd)?;
    let v = split_heads(b, v, seq, kv, hd)?;
    let q = b.apply_rope(q, cos, sin)?;
    let k = b.apply_rope(k, cos, sin)?;

    let total = past.clone() + seq.clone();
    let [key_cache, value_cache] = cache_names(layer);
    let mut cached = Vec::new();
    for (name, new) in [(key_cache, k), (value_cache, v)] {
        let past_t = b.cache_read(&name, vec![kv.into(), past.clone(), hd.into()])?;
        cached.push(b.op(Op::CacheAppend { name, axis: 1 }, &[past_t, new])?);
    }
    let k = repeat_kv(b, cached[0], t, &total)?;
    let v = repeat_kv(b, cached[1], t, &total)?;
    let o = b.attention(q, k, v, allowed, hd)?;
    let o = b.transpose(o, &[1, 0, 2])?;
    let o = b.reshape(o, vec![seq.clone(), (heads * hd).into()])?;
    let o = b.linear(o, &format!("{p}.self_attn.o_proj"), h, heads * hd, false)?;
    let x = b.add(x, o)?;

    let y = b.rms_norm(
        x,
        &format!("{p}.post_attention_layernorm.weight"),
        h,
        t.rms_norm_eps,
    )?;
    let gate = b.linear(
        y,
        &format!("{p}.mlp.gate_proj"),
        t.intermediate_size,
        h,
        false,
    )?;
    let up = b.linear(
        y,
        &format!("{p}.mlp.up_proj"),
        t.intermediate_size,
        h,
        false,
    )?;
    let act = b.silu(gate)?;
    let hidden = b.mul(act, up)?;
    let down = b.linear(
        hidden,
        &format!("{p}.mlp.down_proj"),
        h,
        t.intermediate_size,
        false,
    )?;
    b.add(x, down)
}
