//! Runs one block of a kernel: every thread in lockstep, one value per thread per register, and a
//! lane mask for divergence (`If` runs both sides under complementary masks, `For` keeps a lane in
//! the loop while its own condition holds). Expressions are evaluated for all lanes at once into
//! pooled vectors, so a statement costs a few passes over the block, not an allocation per thread.

use super::error::{At, BlockAt, EmuError};
use super::memory::DeviceBuffer;
use super::value::{self, as_i64, cast_lanes, Fault};
use crate::kir::{BinOp, Expr, Kernel, ParamKind, Special, Stmt, Ty};

/// The state of one launch while its blocks run.
pub(super) struct Exec<'a> {
    pub k: &'a Kernel,
    /// Per parameter: a scalar's bits (unused for buffers).
    pub scalars: Vec<u64>,
    /// Per parameter: the index of the bound buffer (unused for scalars).
    pub bind: Vec<usize>,
    pub buffers: &'a mut [DeviceBuffer],
    pub shared: Vec<DeviceBuffer>,
    /// The launch's stamp on global memory.
    pub launch_run: u32,
    /// The current block's stamp on shared memory.
    pub shared_run: u32,
    pub grid: [u32; 3],
    pub block_idx: [u32; 3],
    pub block_linear: u32,
    /// Barriers the current block has passed.
    pub epoch: u32,
    /// Threads per block (lanes of every value vector).
    pub n: usize,
    pub(super) tid: [Vec<u64>; 3],
    regs: Vec<Vec<u64>>,
    pool: Vec<Vec<u64>>,
    masks: Vec<Vec<bool>>,
    /// The statement path being executed: (`body`/`then`/`els`, index).
    path: Vec<(&'static str, usize)>,
    cur: Option<&'a Stmt>,
    /// What runs outside any statement (`grid`, `shared length`), for error sites.
    pub phase: &'static str,
    pub statements: u64,
}

impl<'a> Exec<'a> {
    pub fn new(
        k: &'a Kernel,
        scalars: Vec<u64>,
        bind: Vec<usize>,
        buffers: &'a mut [DeviceBuffer],
        launch_run: u32,
    ) -> Self {
        let mut e = Exec {
            k,
            scalars,
            bind,
            buffers,
            shared: Vec::new(),
            launch_run,
            shared_run: 0,
            grid: [1; 3],
            block_idx: [0; 3],
            block_linear: 0,
            epoch: 0,
            n: 0,
            tid: Default::default(),
            regs: Vec::new(),
            pool: Vec::new(),
            masks: Vec::new(),
            path: Vec::new(),
            cur: None,
            phase: "launch",
            statements: 0,
        };
        e.set_threads([1, 1, 1]);
        e
    }

    /// Sizes every lane vector for blocks of `block` threads.
    pub fn set_threads(&mut self, block: [u32; 3]) {
        let n = block.iter().map(|&d| d as usize).product();
        self.n = n;
        let (bx, by) = (block[0] as u64, block[1] as u64);
        self.tid = [
            (0..n as u64).map(|t| t % bx).collect(),
            (0..n as u64).map(|t| (t / bx) % by).collect(),
            (0..n as u64).map(|t| t / (bx * by)).collect(),
        ];
        self.regs = vec![vec![0; n]; self.k.vars.len()];
        self.pool.clear();
        self.masks.clear();
    }

    pub(super) fn take(&mut self) -> Vec<u64> {
        self.pool.pop().unwrap_or_else(|| vec![0; self.n])
    }

    pub(super) fn give(&mut self, v: Vec<u64>) {
        self.pool.push(v);
    }

    fn take_mask(&mut self) -> Vec<bool> {
        self.masks.pop().unwrap_or_else(|| vec![false; self.n])
    }

    fn give_mask(&mut self, m: Vec<bool>) {
        self.masks.push(m);
    }

    /// Runs the current block (`block_idx`, `block_linear`, `shared_run` set by the caller).
    pub fn run_block(&mut self) -> Result<(), EmuError> {
        self.epoch = 0;
        for s in &mut self.shared {
            s.uninitialise();
        }
        let mut all = self.take_mask();
        all.fill(true);
        let body = &self.k.body;
        let r = self.exec_list(body, "body", &all);
        self.give_mask(all);
        r
    }

    fn exec_list(
        &mut self,
        stmts: &'a [Stmt],
        label: &'static str,
        mask: &[bool],
    ) -> Result<(), EmuError> {
        let active = mask.iter().filter(|&&m| m).count() as u64;
        for (i, s) in stmts.iter().enumerate() {
            self.path.push((label, i));
            self.cur = Some(s);
            self.statements += active;
            self.exec_stmt(s, mask)?;
            self.path.pop();
        }
        Ok(())
    }

    fn exec_stmt(&mut self, s: &'a Stmt, mask: &[bool]) -> Result<(), EmuError> {
        match s {
            Stmt::Let { var, init: value } | Stmt::Assign { var, value } => {
                let v = self.eval_as(value, mask, self.k.var_ty(*var))?;
                let reg = &mut self.regs[var.0 as usize];
                for ((r, &x), &m) in reg.iter_mut().zip(&v).zip(mask) {
                    if m {
                        *r = x;
                    }
                }
                self.give(v);
            }
            Stmt::Store { buf, index, value } => {
                let (idx, ity) = self.eval(index, mask)?;
                let v = self.eval_as(value, mask, self.k.buf_elem(*buf))?;
                self.store(*buf, &idx, ity, 0, &v, mask)?;
                self.give(idx);
                self.give(v);
            }
            Stmt::LoadVec { vars, buf, index } => {
                let (idx, ity) = self.eval(index, mask)?;
                self.check_aligned(*buf, &idx, ity, vars.len(), mask)?;
                for (j, var) in vars.iter().enumerate() {
                    let mut out = self.take();
                    self.load(*buf, &idx, ity, j as i64, &mut out, mask)?;
                    cast_lanes(&mut out, self.k.buf_elem(*buf), self.k.var_ty(*var));
                    let reg = &mut self.regs[var.0 as usize];
                    for ((r, &x), &m) in reg.iter_mut().zip(&out).zip(mask) {
                        if m {
                            *r = x;
                        }
                    }
                    self.give(out);
                }
                self.give(idx);
            }
            Stmt::StoreVec { buf, index, values } => {
                let (idx, ity) = self.eval(index, mask)?;
                self.check_aligned(*buf, &idx, ity, values.len(), mask)?;
                for (j, value) in values.iter().enumerate() {
                    let v = self.eval_as(value, mask, self.k.buf_elem(*buf))?;
                    self.store(*buf, &idx, ity, j as i64, &v, mask)?;
                    self.give(v);
                }
                self.give(idx);
            }
            Stmt::If { cond, then, els } => {
                let c = self.eval_as(cond, mask, Ty::Bool)?;
                let mut then_mask = self.take_mask();
                let mut else_mask = self.take_mask();
                for i in 0..self.n {
                    let t = c[i] != 0;
                    then_mask[i] = mask[i] && t;
                    else_mask[i] = mask[i] && !t;
                }
                self.give(c);
                let r = self
                    .exec_branch(then, "then", &then_mask)
                    .and_then(|_| self.exec_branch(els, "els", &else_mask));
                self.give_mask(then_mask);
                self.give_mask(else_mask);
                r?;
            }
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                let mut looping = self.take_mask();
                looping.copy_from_slice(mask);
                let r = self.exec_for(s, *var, start, end, step, body, &mut looping);
                self.give_mask(looping);
                r?;
            }
            Stmt::Barrier => {
                let active = mask.iter().filter(|&&m| m).count();
                if active != self.n {
                    return Err(EmuError::DivergentBarrier {
                        at: self.block_at(),
                        active: active as u32,
                        threads: self.n as u32,
                    });
                }
                self.epoch += 1;
            }
            Stmt::Shfl { dst, value, mode } => self.shfl(*dst, value, mode, mask)?,
            Stmt::Mma { d, a, b, c } => self.mma(d, a, b, c, mask)?,
        }
        Ok(())
    }

    fn exec_branch(
        &mut self,
        stmts: &'a [Stmt],
        label: &'static str,
        mask: &[bool],
    ) -> Result<(), EmuError> {
        if stmts.is_empty() || !mask.contains(&true) {
            return Ok(());
        }
        let depth = self.path.len();
        self.exec_list(stmts, label, mask)?;
        debug_assert_eq!(self.path.len(), depth);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_for(
        &mut self,
        s: &'a Stmt,
        var: crate::kir::VarId,
        start: &'a Expr,
        end: &'a Expr,
        step: &'a Expr,
        body: &'a [Stmt],
        looping: &mut [bool],
    ) -> Result<(), EmuError> {
        let vty = self.k.var_ty(var);
        let v = self.eval_as(start, looping, vty)?;
        let reg = &mut self.regs[var.0 as usize];
        for ((r, &x), &m) in reg.iter_mut().zip(&v).zip(looping.iter()) {
            if m {
                *r = x;
            }
        }
        self.give(v);
        loop {
            // `i < end` compares in the promoted type, as C++ does (an int against a long long).
            let (mut e, ety) = self.eval(end, looping)?;
            let (work, _) = value::binary_types(BinOp::Lt, value::promote(vty, ety));
            let mut cur = self.take();
            cur.copy_from_slice(&self.regs[var.0 as usize]);
            cast_lanes(&mut cur, vty, work);
            cast_lanes(&mut e, ety, work);
            let mut lt = self.take();
            let r = value::binary(BinOp::Lt, work, &cur, &e, &mut lt, looping);
            self.give(cur);
            self.give(e);
            r.map_err(|(lane, f)| self.fault(lane, f))?;
            for (m, &c) in looping.iter_mut().zip(&lt) {
                *m = *m && c != 0;
            }
            self.give(lt);
            if !looping.contains(&true) {
                return Ok(());
            }
            self.exec_branch(body, "body", looping)?;
            self.cur = Some(s);
            // `i += step` in the counter's arithmetic type (bf16 counters add in f32); a step
            // that is not positive would loop forever, or until the counter overflows.
            let work = value::binary_types(BinOp::Add, value::promote(vty, vty)).0;
            let st = self.eval_as(step, looping, work)?;
            let stuck = |x: u64| match work {
                Ty::F32 => {
                    f32::from_bits(x as u32).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                }
                _ => as_i64(x, work) <= 0,
            };
            if let Some(lane) = (0..self.n).find(|&i| looping[i] && stuck(st[i])) {
                let what = match work {
                    Ty::F32 => format!(
                        "loop step {} never reaches the end",
                        f32::from_bits(st[lane] as u32)
                    ),
                    _ => format!("loop step {} never reaches the end", as_i64(st[lane], work)),
                };
                self.give(st);
                return Err(self.fault(lane, Fault::Undefined(what)));
            }
            let mut cur = self.take();
            cur.copy_from_slice(&self.regs[var.0 as usize]);
            cast_lanes(&mut cur, vty, work);
            let mut next = self.take();
            let r = value::binary(BinOp::Add, work, &cur, &st, &mut next, looping);
            self.give(st);
            self.give(cur);
            cast_lanes(&mut next, work, vty);
            r.map_err(|(lane, f)| self.fault(lane, f))?;
            let reg = &mut self.regs[var.0 as usize];
            for ((r, &x), &m) in reg.iter_mut().zip(&next).zip(looping.iter()) {
                if m {
                    *r = x;
                }
            }
            self.give(next);
        }
    }

    /// Evaluates `e` for the lanes of `mask` (other lanes get unspecified values) and converts it
    /// to `ty`, as C++ converts on assignment.
    pub(super) fn eval_as(
        &mut self,
        e: &'a Expr,
        mask: &[bool],
        ty: Ty,
    ) -> Result<Vec<u64>, EmuError> {
        let (mut v, t) = self.eval(e, mask)?;
        cast_lanes(&mut v, t, ty);
        Ok(v)
    }

    pub(super) fn eval(&mut self, e: &'a Expr, mask: &[bool]) -> Result<(Vec<u64>, Ty), EmuError> {
        Ok(match e {
            Expr::Lit(l) => {
                let bits = match *l {
                    crate::kir::Lit::Bool(b) => b as u64,
                    crate::kir::Lit::I32(v) => v as u32 as u64,
                    crate::kir::Lit::U32(v) => v as u64,
                    crate::kir::Lit::I64(v) => v as u64,
                    crate::kir::Lit::F32(v) => v.to_bits() as u64,
                };
                let mut out = self.take();
                out.fill(bits);
                (out, l.ty())
            }
            Expr::Var(v) => {
                let mut out = self.take();
                out.copy_from_slice(&self.regs[v.0 as usize]);
                (out, self.k.var_ty(*v))
            }
            Expr::Param(p) => {
                let ty = match &self.k.params[p.0 as usize].kind {
                    ParamKind::Scalar(t) => *t,
                    // A buffer used as a value is a template bug: C++ would not compile it either.
                    ParamKind::Buffer { .. } => panic!(
                        "buffer param {} used as a value",
                        self.k.params[p.0 as usize].name
                    ),
                };
                let mut out = self.take();
                out.fill(self.scalars[p.0 as usize]);
                (out, ty)
            }
            Expr::Special(Special::LaneId) if !lane_is_thread_x(self.k.block) => {
                // The printer spells the lane `threadIdx.x & 31`, which is the hardware lane
                // (linear id % 32) only when warps do not straddle rows of x.
                let [x, y, z] = self.k.block;
                let reason = format!(
                    "LaneId in a ({x},{y},{z}) block: the x extent must be a multiple of 32 \
                     when y or z exceeds 1"
                );
                return Err(EmuError::BadLaunch {
                    kernel: self.k.name.clone(),
                    reason,
                });
            }
            Expr::Special(s) => {
                let mut out = self.take();
                match *s {
                    Special::ThreadIdx(a) => out.copy_from_slice(&self.tid[a as usize % 3]),
                    Special::BlockIdx(a) => out.fill(self.block_idx[a as usize % 3] as u64),
                    Special::BlockDim(a) => out.fill(self.k.block[a as usize % 3] as u64),
                    Special::GridDim(a) => out.fill(self.grid[a as usize % 3] as u64),
                    Special::LaneId => out
                        .iter_mut()
                        .enumerate()
                        .for_each(|(t, o)| *o = t as u64 % 32),
                }
                (out, Ty::U32)
            }
            Expr::Unary(op, a) => {
                let (mut v, t) = self.eval(a, mask)?;
                let ty = value::unary_type(*op, t);
                cast_lanes(&mut v, t, ty);
                if let Err((lane, f)) = value::unary(*op, ty, &mut v, mask) {
                    self.give(v);
                    return Err(self.fault(lane, f));
                }
                (v, ty)
            }
            Expr::Binary(op @ (BinOp::And | BinOp::Or), a, b) => {
                self.eval_logical(*op, a, b, mask)?
            }
            Expr::Binary(op, a, b) => {
                let (mut x, tx) = self.eval(a, mask)?;
                let (mut y, ty) = self.eval(b, mask)?;
                let shift = matches!(op, BinOp::Shl | BinOp::Shr);
                // A shift has the left operand's type; the amount is only a count.
                let t = if shift {
                    value::promote(tx, Ty::Bool)
                } else {
                    value::promote(tx, ty)
                };
                let (work, result) = value::binary_types(*op, t);
                cast_lanes(&mut x, tx, work);
                cast_lanes(&mut y, ty, work);
                let mut out = self.take();
                let r = value::binary(*op, work, &x, &y, &mut out, mask);
                self.give(x);
                self.give(y);
                if let Err((lane, f)) = r {
                    self.give(out);
                    return Err(self.fault(lane, f));
                }
                (out, result)
            }
            Expr::Fma(a, b, c) => {
                let mut x = self.eval_as(a, mask, Ty::F32)?;
                let y = self.eval_as(b, mask, Ty::F32)?;
                let z = self.eval_as(c, mask, Ty::F32)?;
                value::fma(&mut x, &y, &z);
                self.give(y);
                self.give(z);
                (x, Ty::F32)
            }
            Expr::Select(c, a, b) => {
                // C++ `c ? a : b` evaluates one side per thread: a guarded load stays guarded.
                let cv = self.eval_as(c, mask, Ty::Bool)?;
                let mut on_a = self.take_mask();
                let mut on_b = self.take_mask();
                for i in 0..self.n {
                    let t = cv[i] != 0;
                    on_a[i] = mask[i] && t;
                    on_b[i] = mask[i] && !t;
                }
                self.give(cv);
                let r = self
                    .eval(a, &on_a)
                    .and_then(|(x, tx)| match self.eval(b, &on_b) {
                        Ok((y, ty)) => Ok((x, tx, y, ty)),
                        Err(e) => {
                            self.give(x);
                            Err(e)
                        }
                    });
                let (mut x, tx, mut y, ty) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        self.give_mask(on_a);
                        self.give_mask(on_b);
                        return Err(e);
                    }
                };
                let t = value::promote(tx, ty);
                let t = if tx == ty { tx } else { t };
                cast_lanes(&mut x, tx, t);
                cast_lanes(&mut y, ty, t);
                for i in 0..self.n {
                    if on_b[i] {
                        x[i] = y[i];
                    }
                }
                self.give(y);
                self.give_mask(on_a);
                self.give_mask(on_b);
                (x, t)
            }
            Expr::Cast(to, a) => (self.eval_as(a, mask, *to)?, *to),
            Expr::Load(buf, index) => {
                let (idx, ity) = self.eval(index, mask)?;
                let mut out = self.take();
                let r = self.load(*buf, &idx, ity, 0, &mut out, mask);
                self.give(idx);
                r?;
                (out, self.k.buf_elem(*buf))
            }
            Expr::PackBf16x2(lo, hi) => {
                let mut l = self.eval_as(lo, mask, Ty::Bf16)?;
                let h = self.eval_as(hi, mask, Ty::Bf16)?;
                for (x, &y) in l.iter_mut().zip(&h) {
                    *x |= y << 16;
                }
                self.give(h);
                (l, Ty::U32)
            }
        })
    }

    /// `a && b` / `a || b`, evaluating `b` only where C++ would.
    fn eval_logical(
        &mut self,
        op: BinOp,
        a: &'a Expr,
        b: &'a Expr,
        mask: &[bool],
    ) -> Result<(Vec<u64>, Ty), EmuError> {
        let mut x = self.eval_as(a, mask, Ty::Bool)?;
        let mut need_b = self.take_mask();
        for i in 0..self.n {
            let t = x[i] != 0;
            need_b[i] = mask[i] && (t == (op == BinOp::And));
        }
        let r = self.eval_as(b, &need_b, Ty::Bool);
        let y = match r {
            Ok(v) => v,
            Err(e) => {
                self.give_mask(need_b);
                self.give(x);
                return Err(e);
            }
        };
        for i in 0..self.n {
            if need_b[i] {
                x[i] = y[i];
            }
        }
        self.give(y);
        self.give_mask(need_b);
        Ok((x, Ty::Bool))
    }

    /// The statement path, `body[3].then[1] store out`.
    fn site(&self) -> String {
        if self.path.is_empty() {
            return self.phase.to_string();
        }
        let mut s = String::new();
        for (i, (label, idx)) in self.path.iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            s.push_str(&format!("{label}[{idx}]"));
        }
        if let Some(stmt) = self.cur {
            s.push(' ');
            s.push_str(&describe(self.k, stmt));
        }
        s
    }

    pub(super) fn at(&self, lane: usize) -> Box<At> {
        Box::new(At {
            kernel: self.k.name.clone(),
            block: self.block_idx,
            thread: self.thread_coords(lane),
            site: self.site(),
        })
    }

    pub(super) fn block_at(&self) -> Box<BlockAt> {
        Box::new(BlockAt {
            kernel: self.k.name.clone(),
            block: self.block_idx,
            site: self.site(),
        })
    }

    pub(super) fn fault(&self, lane: usize, f: Fault) -> EmuError {
        match f {
            Fault::I32Overflow { op, a, b } => EmuError::I32Overflow {
                at: self.at(lane),
                op,
                a,
                b,
            },
            Fault::Undefined(what) => EmuError::UndefinedArithmetic {
                at: self.at(lane),
                what,
            },
        }
    }

    pub(super) fn regs_mut(&mut self, v: crate::kir::VarId) -> &mut Vec<u64> {
        &mut self.regs[v.0 as usize]
    }
}

/// Whether `threadIdx.x % 32` is the lane (linear thread id % 32) in blocks of `block`.
fn lane_is_thread_x(block: [u32; 3]) -> bool {
    block[0].is_multiple_of(32) || block[1] * block[2] == 1
}

/// A statement as an error site names it: `store out`, `let acc`, `for i`.
fn describe(k: &Kernel, s: &Stmt) -> String {
    let var = |v: &crate::kir::VarId| k.vars[v.0 as usize].name.clone();
    match s {
        Stmt::Let { var: v, .. } => format!("let {}", var(v)),
        Stmt::Assign { var: v, .. } => format!("assign {}", var(v)),
        Stmt::Store { buf, .. } => format!("store {}", k.buf_name(*buf)),
        Stmt::LoadVec { buf, .. } => format!("load_vec {}", k.buf_name(*buf)),
        Stmt::StoreVec { buf, .. } => format!("store_vec {}", k.buf_name(*buf)),
        Stmt::If { .. } => "if".into(),
        Stmt::For { var: v, .. } => format!("for {}", var(v)),
        Stmt::Barrier => "barrier".into(),
        Stmt::Shfl { dst, .. } => format!("shfl {}", var(dst)),
        Stmt::Mma { d, .. } => format!("mma {}", var(&d[0])),
    }
}
