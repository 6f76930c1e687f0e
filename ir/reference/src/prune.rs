//! Differential Frame Pruning (spec §4.3): the keep-mask over merged video tokens, computed from
//! the normalized pixels the way transformers' `_get_compression_mask` does.

use super::tensor::{Tensor, TensorData};

/// transformers' `min_tokens`: a frame whose tokens are all pruned still keeps this many.
const MIN_TOKENS: usize = 1;

/// `pixels [N, C·p·p]` (rows in (frame, block-row, block-col, ii, jj) order per entry) and
/// `grid [e, 3]` → bool `[Σ t·h·w / merge²]`, one entry per merged token in feature order.
/// `expected` (the node's `len`, when already bound) is checked before anything is allocated.
pub fn diff_frame_prune(
    pixels: &Tensor,
    grid: &Tensor,
    threshold: f64,
    merge: usize,
    expected: Option<usize>,
) -> Result<Tensor, String> {
    if !pixels.dtype().is_float() || pixels.shape.len() != 2 {
        return Err(format!(
            "pixels must be a float [patches, values] tensor, got {} {:?}",
            pixels.dtype(),
            pixels.shape
        ));
    }
    let TensorData::I64(g) = &grid.data else {
        return Err(format!("grid must be i64, got {}", grid.dtype()));
    };
    if grid.shape.len() != 2 || grid.shape[1] != 3 {
        return Err(format!("grid must be [n, 3], got {:?}", grid.shape));
    }
    if merge == 0 {
        return Err("merge size must be positive".into());
    }
    let group = merge * merge;
    let mut entries = Vec::with_capacity(g.len() / 3);
    let (mut rows, mut tokens) = (0usize, 0usize);
    for (e, r) in g.chunks_exact(3).enumerate() {
        let [t, h, w] = [r[0], r[1], r[2]].map(|d| usize::try_from(d).ok());
        let (Some(t), Some(h), Some(w)) = (t, h, w) else {
            return Err(format!("grid entry {e} {r:?} has a negative size"));
        };
        if h % merge != 0 || w % merge != 0 {
            return Err(format!(
                "grid entry {e} ({h}x{w}) is not divisible by merge size {merge}"
            ));
        }
        let n = t
            .checked_mul(h)
            .and_then(|x| x.checked_mul(w))
            .ok_or_else(|| format!("grid entry {e} {r:?} overflows"))?;
        rows = rows.checked_add(n).ok_or("grid patch count overflows")?;
        tokens += n / group;
        entries.push((t, h * w / group));
    }
    if rows != pixels.shape[0] {
        return Err(format!(
            "pixels have {} rows but the grid holds Σt·h·w = {rows} patches",
            pixels.shape[0]
        ));
    }
    if let Some(len) = expected.filter(|&len| len != tokens) {
        return Err(format!(
            "len is {len} but the grid holds {tokens} merged tokens"
        ));
    }

    let values = pixels.as_f32();
    // One merged token's m×m patch block is `group` consecutive rows: transformers' `view(t, tokens, -1)`.
    let block = group * pixels.shape[1];
    // torch compares an f32 tensor with a Python float in f32.
    let threshold = threshold as f32;
    let mut keep = Vec::with_capacity(tokens);
    let mut start = 0;
    for (t, per_frame) in entries {
        let video = &values[start * block..(start + t * per_frame) * block];
        start += t * per_frame;
        // Frame 0 (and a single-frame entry) is always kept: transformers pads its distance with
        // threshold + 1 or, for t == 1, emits all-ones.
        if t > 0 {
            keep.extend(std::iter::repeat_n(true, per_frame));
        }
        for f in 1..t {
            let frame_start = keep.len();
            for k in 0..per_frame {
                let cur = &video[(f * per_frame + k) * block..][..block];
                let prev = &video[((f - 1) * per_frame + k) * block..][..block];
                keep.push(block_distance(cur, prev) > threshold);
            }
            let frame = &mut keep[frame_start..];
            if frame.iter().filter(|&&b| b).count() < MIN_TOKENS {
                frame.iter_mut().take(MIN_TOKENS).for_each(|b| *b = true);
            }
        }
    }
    Ok(Tensor {
        shape: vec![tokens],
        data: TensorData::Bool(keep),
    })
}

/// `(|cur − prev|).mean() · 255` in f32 as torch computes it: differences and absolute values in
/// f32, the mean as sum / n. torch sums with a cascade of f32 partial sums; accumulating in f64
/// and rounding once stays within an ulp of it (verified on the fixtures: the d values differ in
/// at most the last bit, and none is near the threshold).
fn block_distance(cur: &[f32], prev: &[f32]) -> f32 {
    let sum: f64 = cur
        .iter()
        .zip(prev)
        .map(|(&a, &b)| f64::from((a - b).abs()))
        .sum();
    (sum as f32 / cur.len() as f32) * 255.0
}
