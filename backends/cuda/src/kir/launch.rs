//! Launch geometry on the host: a kernel's grid formulas and dynamic shared-memory lengths,
//! evaluated for one launch's scalar arguments. The GPU device needs these numbers before
//! `cuLaunchKernel`; the emulator computes the same ones inside its launch, so the arithmetic
//! here follows the emulator's (C++'s) exactly: usual arithmetic conversions, truncating
//! division, wrapping `U32`/`I64`, an `I32` overflow or a division by zero is an error.

use super::{BinOp, Expr, Kernel, Lit, ParamId, ParamKind, Ty, UnOp};
use crate::emu::promote;
use crate::print::dynamic_shared_layout;

/// Hopper's limits on one launch (also Ampere's).
const MAX_THREADS_PER_BLOCK: u32 = 1024;
const MAX_GRID: [i64; 3] = [(1 << 31) - 1, 65535, 65535];

/// What `cuLaunchKernel` takes besides the arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// The one `extern __shared__` buffer: every dynamic array at the offset the printed kernel
    /// carves it from (`print::dynamic_shared_layout`), padding included.
    pub dynamic_shared_bytes: usize,
}

/// `k`'s geometry for a launch whose scalar parameters have the values `scalars` (parameters
/// by id; buffers are not needed). Errors name the kernel and the formula that failed.
pub fn launch_geometry(k: &Kernel, scalars: &[(ParamId, Lit)]) -> Result<Geometry, String> {
    let fail = |what: String| format!("kernel {}: {what}", k.name);
    let threads = k.threads_per_block();
    if threads == 0 || threads > MAX_THREADS_PER_BLOCK {
        return Err(fail(format!("{threads} threads per block")));
    }
    let eval = Eval { k, scalars };
    let mut grid = [0u32; 3];
    for (axis, formula) in k.grid.iter().enumerate() {
        let n = eval
            .count(formula)
            .map_err(|e| fail(format!("grid dimension {axis}: {e}")))?;
        if !(1..=MAX_GRID[axis]).contains(&n) {
            return Err(fail(format!(
                "grid dimension {axis} is {n} (1 to {} allowed)",
                MAX_GRID[axis]
            )));
        }
        grid[axis] = n as u32;
    }
    let mut failure = None;
    let (_, bytes) = dynamic_shared_layout(k, |len| {
        let name = k
            .shared
            .iter()
            .find(|s| std::ptr::eq(&s.len, len))
            .map_or("?", |s| s.name.as_str());
        match eval.count(len) {
            // Bounded so the byte count cannot overflow; the device refuses far less anyway.
            Ok(n) if (0..=u32::MAX as i64).contains(&n) => n as u64,
            Ok(n) => {
                failure.get_or_insert(format!("shared array {name} has length {n}"));
                0
            }
            Err(e) => {
                failure.get_or_insert(format!("shared array {name}: {e}"));
                0
            }
        }
    });
    if let Some(e) = failure {
        return Err(fail(e));
    }
    let dynamic_shared_bytes = usize::try_from(bytes)
        .map_err(|_| fail(format!("{bytes} bytes of dynamic shared memory")))?;
    Ok(Geometry {
        grid,
        block: k.block,
        dynamic_shared_bytes,
    })
}

/// A value of a launch formula. `Bf16` never occurs: a formula that would need it is refused.
#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    Bool(bool),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
}

impl V {
    fn of(l: Lit) -> V {
        match l {
            Lit::Bool(b) => V::Bool(b),
            Lit::I32(v) => V::I32(v),
            Lit::U32(v) => V::U32(v),
            Lit::I64(v) => V::I64(v),
            Lit::F32(v) => V::F32(v),
        }
    }

    fn ty(self) -> Ty {
        match self {
            V::Bool(_) => Ty::Bool,
            V::I32(_) => Ty::I32,
            V::U32(_) => Ty::U32,
            V::I64(_) => Ty::I64,
            V::F32(_) => Ty::F32,
        }
    }

    /// As the emulator reads a count: integers by value, floats truncated.
    fn as_i64(self) -> i64 {
        match self {
            V::Bool(b) => b as i64,
            V::I32(v) => v as i64,
            V::U32(v) => v as i64,
            V::I64(v) => v,
            V::F32(v) => v as i64,
        }
    }

    fn as_f32(self) -> f32 {
        match self {
            V::F32(v) => v,
            V::U32(v) => v as f32,
            other => other.as_i64() as f32,
        }
    }

    /// `Expr::Cast`: floats truncate (saturating), ints widen by sign and narrow by wrapping.
    fn cast(self, to: Ty) -> Result<V, String> {
        Ok(match to {
            Ty::Bool => V::Bool(match self {
                V::F32(v) => v != 0.0,
                other => other.as_i64() != 0,
            }),
            Ty::I32 => V::I32(match self {
                V::F32(v) => v as i32,
                other => other.as_i64() as i32,
            }),
            Ty::U32 => V::U32(match self {
                V::F32(v) => v as u32,
                other => other.as_i64() as u32,
            }),
            Ty::I64 => V::I64(self.as_i64()),
            Ty::F32 => V::F32(self.as_f32()),
            Ty::Bf16 => return Err("a bf16 value".into()),
        })
    }
}

struct Eval<'a> {
    k: &'a Kernel,
    scalars: &'a [(ParamId, Lit)],
}

impl Eval<'_> {
    /// A grid extent or an array length.
    fn count(&self, e: &Expr) -> Result<i64, String> {
        self.check_pure(e)?;
        Ok(self.eval(e)?.as_i64())
    }

    /// Refuses, before evaluating anything, what a launch cannot know: per-thread values and
    /// memory. Done on the whole formula so an untaken `Select` branch is refused too.
    fn check_pure(&self, e: &Expr) -> Result<(), String> {
        match e {
            Expr::Lit(_) => Ok(()),
            Expr::Param(p) => match self.k.params.get(p.0 as usize).map(|p| (&p.name, &p.kind)) {
                Some((_, ParamKind::Scalar(_))) => Ok(()),
                Some((name, ParamKind::Buffer { .. })) => {
                    Err(format!("buffer {name} used as a value"))
                }
                None => Err(format!("no parameter {}", p.0)),
            },
            Expr::Var(v) => Err(format!("reads register {}", v.0)),
            Expr::Special(s) => Err(format!("reads the per-thread value {s:?}")),
            Expr::Load(b, _) => Err(format!("reads memory ({})", self.k.buf_name(*b))),
            Expr::PackBf16x2(..) => Err("packs bf16".into()),
            Expr::Unary(_, a) | Expr::Cast(_, a) => self.check_pure(a),
            Expr::Binary(_, a, b) => self.check_pure(a).and_then(|()| self.check_pure(b)),
            Expr::Fma(a, b, c) | Expr::Select(a, b, c) => {
                self.check_pure(a)?;
                self.check_pure(b)?;
                self.check_pure(c)
            }
        }
    }

    fn eval(&self, e: &Expr) -> Result<V, String> {
        Ok(match e {
            Expr::Lit(l) => V::of(*l),
            Expr::Param(p) => self.param(*p)?,
            Expr::Unary(op, a) => unary(*op, self.eval(a)?)?,
            Expr::Binary(op @ (BinOp::And | BinOp::Or), a, b) => {
                // Short-circuit, as C++: the right side may be guarded by the left.
                let x = self.eval(a)?.cast(Ty::Bool)? == V::Bool(true);
                if x == (*op == BinOp::Or) {
                    V::Bool(x)
                } else {
                    self.eval(b)?.cast(Ty::Bool)?
                }
            }
            Expr::Binary(op, a, b) => binary(*op, self.eval(a)?, self.eval(b)?)?,
            Expr::Fma(a, b, c) => {
                let (x, y, z) = (
                    self.eval(a)?.as_f32(),
                    self.eval(b)?.as_f32(),
                    self.eval(c)?.as_f32(),
                );
                V::F32(x.mul_add(y, z))
            }
            Expr::Select(c, a, b) => {
                // Only the taken side is evaluated (a guarded division stays guarded); the other
                // contributes its type.
                let (taken, other) = if self.eval(c)?.cast(Ty::Bool)? == V::Bool(true) {
                    (a, b)
                } else {
                    (b, a)
                };
                let v = self.eval(taken)?;
                let other_ty = other.ty(self.k);
                let t = if v.ty() == other_ty {
                    other_ty
                } else {
                    promote(v.ty(), other_ty)
                };
                v.cast(t)?
            }
            Expr::Cast(t, a) => self.eval(a)?.cast(*t)?,
            Expr::Var(_) | Expr::Special(_) | Expr::Load(..) | Expr::PackBf16x2(..) => {
                unreachable!("refused by check_pure")
            }
        })
    }

    fn param(&self, p: ParamId) -> Result<V, String> {
        let param = &self.k.params[p.0 as usize];
        let ParamKind::Scalar(ty) = param.kind else {
            unreachable!("refused by check_pure")
        };
        let (_, lit) = self
            .scalars
            .iter()
            .find(|(id, _)| *id == p)
            .ok_or_else(|| format!("no value for scalar {}", param.name))?;
        if lit.ty() != ty {
            return Err(format!("{} is {ty:?} but was given {lit:?}", param.name));
        }
        Ok(V::of(*lit))
    }
}

fn unary(op: UnOp, a: V) -> Result<V, String> {
    let f = |g: fn(f64) -> f64| V::F32(g(a.as_f32() as f64) as f32);
    Ok(match (op, a) {
        (UnOp::Neg, V::I32(v)) => V::I32(v.checked_neg().ok_or("i32 overflow in -")?),
        (UnOp::Abs, V::I32(v)) => V::I32(v.checked_abs().ok_or("i32 overflow in abs")?),
        (UnOp::Neg, V::U32(v)) => V::U32(v.wrapping_neg()),
        (UnOp::Neg, V::I64(v)) => V::I64(v.wrapping_neg()),
        (UnOp::Abs, V::I64(v)) => V::I64(v.wrapping_abs()),
        (UnOp::Neg | UnOp::Abs, V::U32(_) | V::Bool(_)) => a,
        (UnOp::Neg, V::F32(v)) => V::F32(-v),
        (UnOp::Abs, V::F32(v)) => V::F32(v.abs()),
        (UnOp::Not, V::Bool(b)) => V::Bool(!b),
        (UnOp::Not, V::I32(v)) => V::I32(!v),
        (UnOp::Not, V::U32(v)) => V::U32(!v),
        (UnOp::Not, V::I64(v)) => V::I64(!v),
        (UnOp::Not, V::F32(_)) => return Err("bitwise not of an f32".into()),
        (UnOp::Sqrt, _) => V::F32(a.as_f32().sqrt()),
        (UnOp::Rsqrt, _) => V::F32(1.0 / a.as_f32().sqrt()),
        (UnOp::Exp, _) => f(f64::exp),
        (UnOp::Log, _) => f(f64::ln),
        (UnOp::Tanh, _) => f(f64::tanh),
        (UnOp::Erf, _) => f(libm::erf),
        (UnOp::Sin, _) => f(f64::sin),
        (UnOp::Cos, _) => f(f64::cos),
    })
}

fn binary(op: BinOp, a: V, b: V) -> Result<V, String> {
    use BinOp::*;
    // A shift has its left operand's type; the amount is only a count.
    let t = if matches!(op, Shl | Shr) {
        promote(a.ty(), Ty::Bool)
    } else {
        promote(a.ty(), b.ty())
    };
    let bitwise_or_equality = matches!(op, And | Or | BitAnd | BitOr | BitXor | Eq | Ne);
    let t = if t == Ty::Bool && !bitwise_or_equality {
        Ty::I32
    } else {
        t
    };
    let (x, y) = (a.cast(t)?, b.cast(t)?);
    let cmp = |o: std::cmp::Ordering| -> V {
        use std::cmp::Ordering::*;
        V::Bool(match op {
            Lt => o == Less,
            Le => o != Greater,
            Gt => o == Greater,
            Ge => o != Less,
            Eq => o == Equal,
            _ => o != Equal,
        })
    };
    Ok(match (x, y) {
        (V::Bool(x), V::Bool(y)) => V::Bool(match op {
            BitAnd => x & y,
            BitOr => x | y,
            BitXor | Ne => x ^ y,
            Eq => x == y,
            And => x && y,
            Or => x || y,
            _ => unreachable!("bool arithmetic computes in i32"),
        }),
        (V::F32(x), V::F32(y)) => match op {
            Add => V::F32(x + y),
            Sub => V::F32(x - y),
            Mul => V::F32(x * y),
            Div => V::F32(x / y),
            Rem => V::F32(x % y),
            Min => V::F32(x.min(y)),
            Max => V::F32(x.max(y)),
            Lt | Le | Gt | Ge | Eq | Ne => match x.partial_cmp(&y) {
                Some(o) => cmp(o),
                None => V::Bool(op == Ne),
            },
            BitAnd | BitOr | BitXor | Shl | Shr | And | Or => return Err(format!("{op:?} on f32")),
        },
        (V::I32(x), V::I32(y)) => {
            let overflow = || format!("i32 overflow in {x} {op:?} {y}");
            match op {
                Add => V::I32(x.checked_add(y).ok_or_else(overflow)?),
                Sub => V::I32(x.checked_sub(y).ok_or_else(overflow)?),
                Mul => V::I32(x.checked_mul(y).ok_or_else(overflow)?),
                Div | Rem if y == 0 => return Err("integer division by zero".into()),
                Div => V::I32(x.checked_div(y).ok_or_else(overflow)?),
                Rem => V::I32(x.checked_rem(y).ok_or_else(overflow)?),
                Shl | Shr => V::I32(shift(op, x as i64, y as i64, 32)? as i32),
                _ => int_common(op, x as i64, y as i64, cmp, |v| V::I32(v as i32)),
            }
        }
        (V::U32(x), V::U32(y)) => match op {
            Add => V::U32(x.wrapping_add(y)),
            Sub => V::U32(x.wrapping_sub(y)),
            Mul => V::U32(x.wrapping_mul(y)),
            Div | Rem if y == 0 => return Err("integer division by zero".into()),
            Div => V::U32(x / y),
            Rem => V::U32(x % y),
            Shl => V::U32(
                x.checked_shl(y)
                    .ok_or_else(|| format!("shift by {y} of a 32-bit value"))?,
            ),
            Shr => V::U32(
                x.checked_shr(y)
                    .ok_or_else(|| format!("shift by {y} of a 32-bit value"))?,
            ),
            _ => int_common(op, x as i64, y as i64, cmp, |v| V::U32(v as u32)),
        },
        (V::I64(x), V::I64(y)) => match op {
            Add => V::I64(x.wrapping_add(y)),
            Sub => V::I64(x.wrapping_sub(y)),
            Mul => V::I64(x.wrapping_mul(y)),
            Div | Rem if y == 0 => return Err("integer division by zero".into()),
            Div => V::I64(
                x.checked_div(y)
                    .ok_or_else(|| format!("{x} / -1 overflows"))?,
            ),
            Rem => V::I64(
                x.checked_rem(y)
                    .ok_or_else(|| format!("{x} % -1 overflows"))?,
            ),
            Shl | Shr => V::I64(shift(op, x, y, 64)?),
            _ => int_common(op, x, y, cmp, V::I64),
        },
        _ => unreachable!("both operands were cast to {t:?}"),
    })
}

/// The integer ops whose meaning does not depend on the width beyond the value's sign.
fn int_common(
    op: BinOp,
    x: i64,
    y: i64,
    cmp: impl Fn(std::cmp::Ordering) -> V,
    make: impl Fn(i64) -> V,
) -> V {
    use BinOp::*;
    match op {
        Min => make(x.min(y)),
        Max => make(x.max(y)),
        BitAnd => make(x & y),
        BitOr => make(x | y),
        BitXor => make(x ^ y),
        And => V::Bool(x != 0 && y != 0),
        Or => V::Bool(x != 0 || y != 0),
        _ => cmp(x.cmp(&y)),
    }
}

/// A signed shift (arithmetic right shift) of a `width`-bit value.
fn shift(op: BinOp, x: i64, n: i64, width: i64) -> Result<i64, String> {
    if !(0..width).contains(&n) {
        return Err(format!("shift by {n} of a {width}-bit value"));
    }
    Ok(match (op, width) {
        (BinOp::Shl, 64) => x << n,
        (BinOp::Shl, _) => ((x as u32) << n) as i32 as i64,
        _ => x >> n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{Arg, DeviceBuffer, Emulator};
    use crate::kir::{Access, Buf, KernelBuilder, Param, Special, Stmt};

    /// `n` elements, 128 per block; `rows` in y; dynamic shared `n` f32 then 3 bf16.
    fn sample() -> Kernel {
        let mut kb = KernelBuilder::new("sample", [128, 1, 1]);
        let out = kb.buffer("out", Ty::F32, Access::Write);
        let n = kb.scalar("n", Ty::I64);
        let rows = kb.scalar("rows", Ty::U32);
        kb.shared_dynamic("partial", Ty::F32, n.clone());
        kb.shared_dynamic("tail", Ty::Bf16, Expr::i64(1) + Expr::i64(2));
        kb.grid((n + Expr::i64(127)) / Expr::i64(128), rows, Expr::u32(1));
        kb.store(out, Expr::i64(0), Expr::f32(0.0));
        kb.finish()
    }

    fn args(n: i64, rows: u32) -> Vec<(ParamId, Lit)> {
        vec![(ParamId(1), Lit::I64(n)), (ParamId(2), Lit::U32(rows))]
    }

    #[test]
    fn grid_and_dynamic_shared_follow_the_scalars() {
        let g = launch_geometry(&sample(), &args(1000, 7)).unwrap();
        assert_eq!(g.grid, [8, 7, 1]);
        assert_eq!(g.block, [128, 1, 1]);
        // 4000 bytes of f32, then the bf16 array at the next 16-byte boundary.
        assert_eq!(g.dynamic_shared_bytes, 4000 + 16);
    }

    #[test]
    fn out_of_range_grids_are_errors() {
        let k = sample();
        let e = launch_geometry(&k, &args(0, 1)).unwrap_err();
        assert!(e.contains("grid dimension 0 is 0"), "{e}");
        let e = launch_geometry(&k, &args(1, 65536)).unwrap_err();
        assert!(e.contains("grid dimension 1 is 65536"), "{e}");
        let e = launch_geometry(&k, &[(ParamId(1), Lit::I64(5))]).unwrap_err();
        assert!(e.contains("no value for scalar rows"), "{e}");
        let e = launch_geometry(&k, &[(ParamId(1), Lit::I32(5)), (ParamId(2), Lit::U32(1))])
            .unwrap_err();
        assert!(e.contains("n is I64"), "{e}");
    }

    #[test]
    fn per_thread_values_and_memory_are_refused() {
        let mut k = sample();
        k.grid[0] = Expr::Special(Special::ThreadIdx(0));
        assert!(launch_geometry(&k, &args(1, 1))
            .unwrap_err()
            .contains("per-thread"));
        // Even where a select would not take the side that loads.
        k.grid[0] = Expr::select(
            Expr::bool(true),
            Expr::u32(1),
            Expr::load(Buf::Param(ParamId(0)), Expr::i64(0)).cast(Ty::U32),
        );
        assert!(launch_geometry(&k, &args(1, 1))
            .unwrap_err()
            .contains("reads memory (out)"));
    }

    #[test]
    fn arithmetic_is_the_emulators() {
        let mut k = sample();
        let n = Expr::Param(ParamId(1));
        // A division guarded by a select is not evaluated on the other side.
        k.grid[0] = Expr::select(
            n.clone().gt(Expr::i64(0)),
            Expr::i64(64) / n.clone(),
            Expr::i64(3),
        );
        assert_eq!(launch_geometry(&k, &args(0, 1)).unwrap().grid[0], 3);
        assert_eq!(launch_geometry(&k, &args(16, 1)).unwrap().grid[0], 4);
        // I32 overflow is an error, u32 wraps, a float count truncates.
        k.grid[0] = Expr::i32(i32::MAX) + Expr::i32(1);
        assert!(launch_geometry(&k, &args(1, 1))
            .unwrap_err()
            .contains("i32 overflow"));
        k.grid[0] = Expr::u32(0) - Expr::u32(u32::MAX);
        assert_eq!(launch_geometry(&k, &args(1, 1)).unwrap().grid[0], 1);
        k.grid[0] = (Expr::f32(10.0) / Expr::f32(4.0)).cast(Ty::I64);
        assert_eq!(launch_geometry(&k, &args(1, 1)).unwrap().grid[0], 2);
        k.grid[0] = Expr::i64(1) / (n - Expr::i64(1));
        assert!(launch_geometry(&k, &args(1, 1))
            .unwrap_err()
            .contains("division by zero"));
        k.grid[0] = Expr::i64(1);
        k.shared[0].len = Expr::i64(2) - Expr::Param(ParamId(1));
        assert!(launch_geometry(&k, &args(5, 1))
            .unwrap_err()
            .contains("partial has length -3"));
    }

    /// `k` with its body replaced by one that stores what the emulator evaluated: the grid
    /// (`gridDim`) and every shared array's length, into a new `I64` output. One thread per
    /// block, and buffers read-only, so any grid the case has runs quickly and checks nothing
    /// but the geometry.
    fn geometry_probe(k: &Kernel) -> (Kernel, Buf) {
        let mut p = k.clone();
        p.block = [1, 1, 1];
        for param in &mut p.params {
            if let ParamKind::Buffer { access, .. } = &mut param.kind {
                *access = Access::Read;
            }
        }
        p.params.push(Param {
            name: "vl3_geometry".into(),
            kind: ParamKind::Buffer {
                elem: Ty::I64,
                access: Access::Write,
            },
        });
        let out = Buf::Param(ParamId(p.params.len() as u32 - 1));
        p.vars.clear();
        let first = (0..3)
            .map(|a| Expr::Special(Special::BlockIdx(a)).eq(Expr::u32(0)))
            .reduce(Expr::and)
            .unwrap();
        let grid = (0..3).map(|a| Expr::Special(Special::GridDim(a)).cast(Ty::I64));
        let lens = k.shared.iter().map(|s| s.len.clone().cast(Ty::I64));
        let then = grid.chain(lens).enumerate().map(|(i, value)| Stmt::Store {
            buf: out,
            index: Expr::i64(i as i64),
            value,
        });
        p.body = vec![Stmt::If {
            cond: first,
            then: then.collect(),
            els: Vec::new(),
        }];
        (p, out)
    }

    /// Whether `launch_geometry` and the emulator's launch of `k` agree (`false`: too many
    /// blocks to emulate quickly).
    fn agrees_with_emulator(k: &Kernel, scalars: &[(ParamId, Lit)]) -> bool {
        let g = launch_geometry(k, scalars).unwrap_or_else(|e| panic!("{e}"));
        if g.grid.iter().map(|&d| d as u64).product::<u64>() > 1 << 18 {
            return false;
        }
        let (probe, out) = geometry_probe(k);
        let mut emu = Emulator::new();
        let mut args = Vec::new();
        for (i, p) in probe.params.iter().enumerate() {
            args.push(match p.kind {
                ParamKind::Scalar(_) => {
                    Arg::Scalar(scalars.iter().find(|(id, _)| id.0 as usize == i).unwrap().1)
                }
                ParamKind::Buffer { elem, .. } => {
                    let len = if Buf::Param(ParamId(i as u32)) == out {
                        3 + k.shared.len()
                    } else {
                        1
                    };
                    Arg::Buffer(emu.alloc(DeviceBuffer::new(elem, len)))
                }
            });
        }
        let stats = emu.launch(&probe, &args).unwrap_or_else(|e| panic!("{e}"));
        let Some(Arg::Buffer(out)) = args.last() else {
            unreachable!("the probe's output is last")
        };
        let seen = emu.buffer(*out).to_i64();
        let grid = [seen[0] as u32, seen[1] as u32, seen[2] as u32];
        assert_eq!(g.grid, grid, "{}", k.name);
        assert_eq!(
            stats.blocks,
            grid.iter().map(|&d| d as u64).product::<u64>()
        );
        let (_, bytes) = dynamic_shared_layout(k, |len| {
            seen[3 + k
                .shared
                .iter()
                .position(|s| std::ptr::eq(&s.len, len))
                .unwrap()] as u64
        });
        assert_eq!(g.dynamic_shared_bytes as u64, bytes, "{}", k.name);
        true
    }

    #[test]
    fn agrees_with_the_emulator_on_every_template_case() {
        // No template sizes shared memory at launch yet: the sample does.
        assert!(agrees_with_emulator(&sample(), &args(1000, 7)));
        let mut probed = 0;
        for case in crate::templates::cases() {
            for k in case.template.kernels() {
                let mut scalars = Vec::new();
                for (i, p) in k.params.iter().enumerate() {
                    if let ParamKind::Scalar(ty) = p.kind {
                        let v = case.sizes[&p.name];
                        let lit = match ty {
                            Ty::I64 => Lit::I64(v),
                            Ty::I32 => Lit::I32(v as i32),
                            Ty::U32 => Lit::U32(v as u32),
                            other => {
                                panic!("{}: scalar {} of type {other:?}", case.label(), p.name)
                            }
                        };
                        scalars.push((ParamId(i as u32), lit));
                    }
                }
                probed += agrees_with_emulator(&k, &scalars) as usize;
            }
        }
        assert!(probed > 400, "only {probed} kernels probed");
    }
}
