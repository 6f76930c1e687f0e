//! Builds kernels from Rust: templates call these methods in the order the statements run, and
//! nested blocks (`if_`, `for_`) take closures, so a template reads top to bottom like its CUDA.

use super::{
    Access, Buf, Expr, Kernel, Lit, Param, ParamId, ParamKind, Shared, Shfl, Special, Stmt, Ty,
    Var, VarId,
};

pub struct KernelBuilder {
    kernel: Kernel,
    /// Statement lists being built: the kernel body at the bottom, the innermost block on top.
    blocks: Vec<Vec<Stmt>>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>, block: [u32; 3]) -> Self {
        KernelBuilder {
            kernel: Kernel {
                name: name.into(),
                params: Vec::new(),
                shared: Vec::new(),
                vars: Vec::new(),
                block,
                grid: [Expr::u32(1), Expr::u32(1), Expr::u32(1)],
                body: Vec::new(),
            },
            blocks: vec![Vec::new()],
        }
    }

    /// The kernel so far (for typing expressions while building).
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub fn buffer(&mut self, name: &str, elem: Ty, access: Access) -> Buf {
        self.kernel.params.push(Param {
            name: name.into(),
            kind: ParamKind::Buffer { elem, access },
        });
        Buf::Param(ParamId(self.kernel.params.len() as u32 - 1))
    }

    /// A scalar parameter, as the expression that reads it.
    pub fn scalar(&mut self, name: &str, ty: Ty) -> Expr {
        self.kernel.params.push(Param {
            name: name.into(),
            kind: ParamKind::Scalar(ty),
        });
        Expr::Param(ParamId(self.kernel.params.len() as u32 - 1))
    }

    pub fn shared(&mut self, name: &str, elem: Ty, len: usize) -> Buf {
        self.shared_sized(name, elem, Expr::Lit(Lit::I64(len as i64)))
    }

    /// Dynamic shared memory: `len` elements, a formula over scalar parameters.
    pub fn shared_dynamic(&mut self, name: &str, elem: Ty, len: Expr) -> Buf {
        assert!(
            !matches!(len, Expr::Lit(_)),
            "a literal length is static shared memory: use `shared`"
        );
        self.shared_sized(name, elem, len)
    }

    fn shared_sized(&mut self, name: &str, elem: Ty, len: Expr) -> Buf {
        self.kernel.shared.push(Shared {
            name: name.into(),
            elem,
            len,
        });
        Buf::Shared(self.kernel.shared.len() as u32 - 1)
    }

    /// Blocks per grid, as formulas over scalar parameters (cast to `U32` by the launcher).
    pub fn grid(&mut self, x: Expr, y: Expr, z: Expr) {
        self.kernel.grid = [x, y, z];
    }

    pub fn thread_idx(&self, axis: u8) -> Expr {
        Expr::Special(Special::ThreadIdx(axis))
    }
    pub fn block_idx(&self, axis: u8) -> Expr {
        Expr::Special(Special::BlockIdx(axis))
    }
    pub fn lane(&self) -> Expr {
        Expr::Special(Special::LaneId)
    }

    fn new_var(&mut self, name: &str, ty: Ty) -> VarId {
        self.kernel.vars.push(Var {
            name: name.into(),
            ty,
        });
        VarId(self.kernel.vars.len() as u32 - 1)
    }

    fn push(&mut self, s: Stmt) {
        self.blocks.last_mut().expect("a block is open").push(s);
    }

    /// Declares a register holding `init`; returns the expression that reads it.
    pub fn let_(&mut self, name: &str, init: Expr) -> Expr {
        Expr::Var(self.var(name, init))
    }

    /// Declares a register that will be reassigned.
    pub fn var(&mut self, name: &str, init: Expr) -> VarId {
        let ty = init.ty(&self.kernel);
        let var = self.new_var(name, ty);
        self.push(Stmt::Let { var, init });
        var
    }

    pub fn assign(&mut self, var: VarId, value: Expr) {
        self.push(Stmt::Assign { var, value });
    }

    pub fn load(&self, buf: Buf, index: Expr) -> Expr {
        Expr::load(buf, index)
    }

    pub fn store(&mut self, buf: Buf, index: Expr, value: Expr) {
        self.push(Stmt::Store { buf, index, value });
    }

    /// Loads `width` consecutive elements from an aligned `index` into new registers.
    pub fn load_vec(&mut self, name: &str, buf: Buf, index: Expr, width: usize) -> Vec<Expr> {
        let ty = self.kernel.buf_elem(buf);
        let vars: Vec<VarId> = (0..width)
            .map(|i| self.new_var(&format!("{name}{i}"), ty))
            .collect();
        self.push(Stmt::LoadVec {
            vars: vars.clone(),
            buf,
            index,
        });
        vars.into_iter().map(Expr::Var).collect()
    }

    pub fn store_vec(&mut self, buf: Buf, index: Expr, values: Vec<Expr>) {
        self.push(Stmt::StoreVec { buf, index, values });
    }

    fn nested(&mut self, f: impl FnOnce(&mut Self)) -> Vec<Stmt> {
        self.blocks.push(Vec::new());
        f(self);
        self.blocks.pop().expect("the block just opened")
    }

    pub fn if_(&mut self, cond: Expr, then: impl FnOnce(&mut Self)) {
        let then = self.nested(then);
        self.push(Stmt::If {
            cond,
            then,
            els: Vec::new(),
        });
    }

    pub fn if_else(
        &mut self,
        cond: Expr,
        then: impl FnOnce(&mut Self),
        els: impl FnOnce(&mut Self),
    ) {
        let then = self.nested(then);
        let els = self.nested(els);
        self.push(Stmt::If { cond, then, els });
    }

    /// `for (i = start; i < end; i += step)`, with `i` of `start`'s type.
    pub fn for_(
        &mut self,
        name: &str,
        start: Expr,
        end: Expr,
        step: Expr,
        body: impl FnOnce(&mut Self, Expr),
    ) {
        let var = self.new_var(name, start.ty(&self.kernel));
        let body = self.nested(|b| body(b, Expr::Var(var)));
        self.push(Stmt::For {
            var,
            start,
            end,
            step,
            body,
        });
    }

    pub fn barrier(&mut self) {
        self.push(Stmt::Barrier);
    }

    pub fn shfl(&mut self, name: &str, value: Expr, mode: Shfl) -> Expr {
        let dst = self.new_var(name, value.ty(&self.kernel));
        self.push(Stmt::Shfl { dst, value, mode });
        Expr::Var(dst)
    }

    pub fn shfl_xor(&mut self, name: &str, value: Expr, mask: u32) -> Expr {
        self.shfl(name, value, Shfl::Xor(mask))
    }

    /// `d = a·b + c` on the tensor cores (m16n8k16, bf16 in, f32 accumulate).
    pub fn mma(&mut self, name: &str, a: [Expr; 4], b: [Expr; 2], c: [Expr; 4]) -> [Expr; 4] {
        let d = [0, 1, 2, 3].map(|i| self.new_var(&format!("{name}{i}"), Ty::F32));
        self.push(Stmt::Mma { d, a, b, c });
        d.map(Expr::Var)
    }

    pub fn finish(mut self) -> Kernel {
        assert_eq!(self.blocks.len(), 1, "a nested block was left open");
        self.kernel.body = self.blocks.pop().expect("the body");
        self.kernel
    }
}
