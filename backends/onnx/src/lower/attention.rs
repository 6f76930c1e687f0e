//! Attention and RoPE as ONNX primitives: grouped-query heads as a `[kv heads, group, n, d]`
//! view, the causal mask from positions (and the decoder's attention_mask), and vision's
//! per-frame segments as a batch of frames.

use super::{err, Lowerer, Val};
use crate::builder::{attr_int, attr_ints};
use vl3c_engine::EngineError;
use vl3c_ir::{AttentionMask, Dim, NodeId, Op};

impl Lowerer<'_, '_, '_> {
    /// `x·cos + rotate_half(x)·sin`, pairing i with i + d/2.
    pub(super) fn rope(
        &mut self,
        x: &str,
        cos: &str,
        sin: &str,
        ty: &vl3c_ir::TensorType,
    ) -> Result<String, EngineError> {
        let d = ty.shape.last().and_then(Dim::as_const).ok_or_else(|| {
            EngineError::Incompatible("onnx export: rope needs a constant head size".into())
        })?;
        let x1 = self.slice_const(x, -1, 0, d / 2);
        let x2 = self.slice_const(x, -1, d / 2, d);
        let n2 = self.b.op("Neg", &[&x2], vec![]);
        let rot = self.concat(&[n2, x1], -1);
        let a = self.b.op("Mul", &[x, cos], vec![]);
        let r = self.b.op("Mul", &[&rot, sin], vec![]);
        Ok(self.b.op("Add", &[&a, &r], vec![]))
    }

    pub(super) fn attention(
        &mut self,
        id: NodeId,
        ins: &[Val],
        scale: f64,
        mask: AttentionMask,
        rope_q: bool,
        rope_k: bool,
    ) -> Result<String, EngineError> {
        let g = self.g;
        let node = &g.nodes[id.index()];
        let qt = &g.nodes[node.inputs[0].index()].ty;
        let kt = &g.nodes[node.inputs[1].index()].ty;
        let konst = |d: &Dim, what: &str| {
            d.as_const()
                .ok_or_else(|| err(g, id, format!("the {what} must be a constant")))
        };
        let hq = konst(&qt.shape[0], "query head count")?;
        let hk = konst(&kt.shape[0], "key head count")?;
        let d = konst(&qt.shape[2], "head size")?;
        let (mut q, mut k) = (ins[0].name.clone(), ins[1].name.clone());
        let v = ins[2].name.clone();
        if rope_q {
            q = self.rope(&q, &ins[3].name, &ins[4].name, qt)?;
        }
        if rope_k {
            k = self.rope(&k, &ins[3].name, &ins[4].name, kt)?;
        }
        let scale = self.f32_const(scale);
        let kt_perm = vec![attr_ints("perm", &[0, 1, 3, 2])];
        let out_shape = self.shape(&node.ty.shape)?;
        if mask == AttentionMask::Segments {
            // Every segment is one frame of the one image or video, all of h·w patches: a
            // batch of frames, each attending within itself.
            if hq != hk {
                return Err(err(
                    g,
                    id,
                    "grouped heads with segments are not supported yet",
                ));
            }
            let seg = node.inputs[5];
            let Op::SegmentIds { .. } = g.nodes[seg.index()].op else {
                return Err(err(g, id, "segments that are not the grid's frames"));
            };
            let grid = self.values[&g.nodes[seg.index()].inputs[0]].name.clone();
            let len = self.frame_patches(&grid);
            let (head, tail) = (self.b.ints(&[hq, -1]), self.b.ints(&[d]));
            let frames = self.concat(&[head, len, tail], 0);
            let q4 = self.b.op("Reshape", &[&q, &frames], vec![]);
            let k4 = self.b.op("Reshape", &[&k, &frames], vec![]);
            let v4 = self.b.op("Reshape", &[&v, &frames], vec![]);
            let kt4 = self.b.op("Transpose", &[&k4], kt_perm);
            let s = self.b.op("MatMul", &[&q4, &kt4], vec![]);
            let s = self.b.op("Mul", &[&s, &scale], vec![]);
            let p = self.b.op("Softmax", &[&s], vec![attr_int("axis", -1)]);
            let o = self.b.op("MatMul", &[&p, &v4], vec![]);
            return Ok(self.b.op("Reshape", &[&o, &out_shape], vec![]));
        }
        // Grouped-query heads: query head j reads kv head j / g, so the queries are viewed as
        // [kv heads, g, n, d] against keys [kv heads, 1, t, d].
        let group = hq / hk;
        let (head, tail) = (self.b.ints(&[hk, group]), self.b.ints(&[d]));
        let n = self.dim(&qt.shape[1])?;
        let grouped = self.concat(&[head, n.clone(), tail], 0);
        let q4 = self.b.op("Reshape", &[&q, &grouped], vec![]);
        let k4 = self.unsqueeze(&k, &[1]);
        let v4 = self.unsqueeze(&v, &[1]);
        let kt4 = self.b.op("Transpose", &[&k4], kt_perm);
        let s = self.b.op("MatMul", &[&q4, &kt4], vec![]);
        let mut s = self.b.op("Mul", &[&s, &scale], vec![]);
        if mask == AttentionMask::Causal {
            // Query i sits at position t − n + i and sees keys up to it.
            let t = self.dim(&kt.shape[1])?;
            let first = self.b.op("Sub", &[&t, &n], vec![]);
            let qpos = self.range(&first, &t);
            let zero = self.b.ints(&[0]);
            let kpos = self.range(&zero, &t);
            let qpos = self.unsqueeze(&qpos, &[1]);
            let kpos = self.unsqueeze(&kpos, &[0]);
            let mut allowed = self.b.op("LessOrEqual", &[&kpos, &qpos], vec![]);
            if let Some(keys) = self.key_mask.clone() {
                allowed = self.b.op("And", &[&allowed, &keys], vec![]);
            }
            let low = self.f32_const(f32::MIN as f64);
            s = self.b.op("Where", &[&allowed, &s, &low], vec![]);
        }
        let p = self.b.op("Softmax", &[&s], vec![attr_int("axis", -1)]);
        let o = self.b.op("MatMul", &[&p, &v4], vec![]);
        Ok(self.b.op("Reshape", &[&o, &out_shape], vec![]))
    }
}
