//! The vision ops in closed form over the one grid entry `[1, 3]` of a call: patch positions,
//! frame sizes and Differential Frame Pruning.

use super::Lowerer;
use vl3c_engine::EngineError;
use vl3c_ir::{DType, Dim, ReduceOp};

impl Lowerer<'_, '_, '_> {
    /// Column `col` of the one grid entry `[1, 3]`, as `[1]`.
    pub(super) fn grid_col(&mut self, grid: &str, col: i64) -> String {
        let s = self.b.ints(&[0, col]);
        let e = self.b.ints(&[1, col + 1]);
        let axes = self.b.ints(&[0, 1]);
        let v = self.b.op("Slice", &[grid, &s, &e, &axes], vec![]);
        let shape = self.b.ints(&[1]);
        self.b.op("Reshape", &[&v, &shape], vec![])
    }

    /// h·w of the one grid entry: the patches of a frame.
    pub(super) fn frame_patches(&mut self, grid: &str) -> String {
        let (h, w) = (self.grid_col(grid, 1), self.grid_col(grid, 2));
        self.b.op("Mul", &[&h, &w], vec![])
    }

    /// transformers' `get_vision_position_ids` for one entry: patch p of a frame lies in merge
    /// block p / m² (row-major over the (h/m)×(w/m) blocks) at offset p mod m² inside it.
    pub(super) fn vision_position_ids(
        &mut self,
        grid: &str,
        merges: &str,
        len: &Dim,
    ) -> Result<String, EngineError> {
        let (h, w) = (self.grid_col(grid, 1), self.grid_col(grid, 2));
        let hw = self.b.op("Mul", &[&h, &w], vec![]);
        let m = merges.to_string();
        let mm = self.b.op("Mul", &[&m, &m], vec![]);
        let (zero, end) = (self.b.ints(&[0]), self.dim(len)?);
        let idx = self.range(&zero, &end);
        let p = self.b.op("Mod", &[&idx, &hw], vec![]);
        let (block, inner) = self.divmod(&p, &mm);
        let blocks_per_row = self.b.op("Div", &[&w, &m], vec![]);
        let (br, bc) = self.divmod(&block, &blocks_per_row);
        let (i, j) = self.divmod(&inner, &m);
        let row = self.b.op("Mul", &[&br, &m], vec![]);
        let row = self.b.op("Add", &[&row, &i], vec![]);
        let col = self.b.op("Mul", &[&bc, &m], vec![]);
        let col = self.b.op("Add", &[&col, &j], vec![]);
        let row = self.unsqueeze(&row, &[1]);
        let col = self.unsqueeze(&col, &[1]);
        Ok(self.concat(&[row, col], 1))
    }

    /// Differential Frame Pruning for one entry (transformers' `_get_compression_mask`): a
    /// token of frame f ≥ 1 is kept where mean |Δ| of its m×m patch block against frame f − 1,
    /// ×255, exceeds the threshold; frame 0 is kept whole, and a frame that keeps nothing keeps
    /// its first token.
    pub(super) fn diff_frame_prune(
        &mut self,
        pixels: &str,
        grid: &str,
        threshold: f64,
        merge: i64,
        row: i64,
    ) -> String {
        let t = self.grid_col(grid, 0);
        let hw = self.frame_patches(grid);
        let mm = self.b.ints(&[merge * merge]);
        let per_frame = self.b.op("Div", &[&hw, &mm], vec![]);
        let block = self.b.ints(&[merge * merge * row]);
        let shape = self.concat(&[t, per_frame.clone(), block], 0);
        let x = self.b.op("Reshape", &[pixels, &shape], vec![]);
        let cur = self.slice_const(&x, 0, 1, i64::MAX);
        let prev = self.slice_const(&x, 0, 0, -1);
        let d = self.b.op("Sub", &[&cur, &prev], vec![]);
        let d = self.b.op("Abs", &[&d], vec![]);
        let d = self.reduce(ReduceOp::Mean, &d, &[2], false);
        let k = self.f32_const(255.0);
        let d = self.b.op("Mul", &[&d, &k], vec![]);
        let thr = self.f32_const(threshold);
        let keep = self.b.op("Greater", &[&d, &thr], vec![]);
        let kf = self.cast(&keep, DType::F32);
        let any = self.reduce(ReduceOp::Max, &kf, &[1], true);
        let zero = self.f32_const(0.0);
        let none = self.b.op("Equal", &[&any, &zero], vec![]);
        let z = self.b.ints(&[0]);
        let pos = self.range(&z, &per_frame);
        let zero_i = self.b.scalar(DType::I64, 0.0);
        let first = self.b.op("Equal", &[&pos, &zero_i], vec![]);
        let forced = self.b.op("And", &[&none, &first], vec![]);
        let keep = self.b.op("Or", &[&keep, &forced], vec![]);
        let one = self.b.ints(&[1]);
        let head_shape = self.concat(&[one, per_frame], 0);
        let yes = self.b.scalar(DType::Bool, 1.0);
        let head = self.b.op("Expand", &[&yes, &head_shape], vec![]);
        let all = self.concat(&[head, keep], 0);
        let flat = self.b.ints(&[-1]);
        self.b.op("Reshape", &[&all, &flat], vec![])
    }
}
