//! The printed text declares each variable in the block its declaration sits in, as C++ scoping
//! requires; this check turns a kernel that breaks that rule into a clear panic, not an NVRTC
//! error about an undeclared name.

use super::Printer;
use crate::kir::{Expr, Shfl, Stmt, VarId};

impl Printer<'_> {
    /// Panics when a variable is read or assigned outside the block that declares it: the
    /// emulator's register file would allow it, C++ scoping does not.
    pub(super) fn check_scopes(&self) {
        let mut visible = vec![false; self.kernel.vars.len()];
        self.check_block(&self.kernel.body, &mut visible);
    }

    fn check_block(&self, stmts: &[Stmt], visible: &mut Vec<bool>) {
        let outer = visible.clone();
        for stmt in stmts {
            let mut declares: Vec<VarId> = Vec::new();
            match stmt {
                Stmt::Let { var, init } => {
                    self.check_expr(init, visible);
                    declares.push(*var);
                }
                Stmt::Assign { var, value } => {
                    self.check_var(*var, visible);
                    self.check_expr(value, visible);
                }
                Stmt::Store { index, value, .. } => {
                    self.check_expr(index, visible);
                    self.check_expr(value, visible);
                }
                Stmt::LoadVec { vars, index, .. } => {
                    self.check_expr(index, visible);
                    declares.extend(vars);
                }
                Stmt::StoreVec { index, values, .. } => {
                    self.check_expr(index, visible);
                    values.iter().for_each(|v| self.check_expr(v, visible));
                }
                Stmt::If { cond, then, els } => {
                    self.check_expr(cond, visible);
                    self.check_block(then, visible);
                    self.check_block(els, visible);
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    step,
                    body,
                } => {
                    self.check_expr(start, visible);
                    let loop_outer = visible.clone();
                    visible[var.0 as usize] = true;
                    self.check_expr(end, visible);
                    self.check_expr(step, visible);
                    self.check_block(body, visible);
                    *visible = loop_outer;
                }
                Stmt::Barrier => {}
                Stmt::Shfl { dst, value, mode } => {
                    self.check_expr(value, visible);
                    if let Shfl::Idx(lane) = mode {
                        self.check_expr(lane, visible);
                    }
                    declares.push(*dst);
                }
                Stmt::Mma { d, a, b, c } => {
                    a.iter()
                        .chain(b)
                        .chain(c)
                        .for_each(|e| self.check_expr(e, visible));
                    declares.extend(d);
                }
            }
            for var in declares {
                assert!(
                    !visible[var.0 as usize],
                    "kernel {}: {} is declared twice",
                    self.kernel.name,
                    self.var(var)
                );
                visible[var.0 as usize] = true;
            }
        }
        *visible = outer;
    }

    fn check_var(&self, var: VarId, visible: &[bool]) {
        assert!(
            visible[var.0 as usize],
            "kernel {}: {} is used outside the block that declares it (or before its declaration)",
            self.kernel.name,
            self.var(var)
        );
    }

    fn check_expr(&self, e: &Expr, visible: &[bool]) {
        match e {
            Expr::Var(v) => self.check_var(*v, visible),
            Expr::Lit(_) | Expr::Param(_) | Expr::Special(_) => {}
            Expr::Unary(_, a) | Expr::Cast(_, a) | Expr::Load(_, a) => self.check_expr(a, visible),
            Expr::Binary(_, a, b) | Expr::PackBf16x2(a, b) => {
                self.check_expr(a, visible);
                self.check_expr(b, visible);
            }
            Expr::Fma(a, b, c) | Expr::Select(a, b, c) => {
                self.check_expr(a, visible);
                self.check_expr(b, visible);
                self.check_expr(c, visible);
            }
        }
    }
}
