//! Expressions: fully parenthesized, with every conversion spelled out and literals exact.

use super::Printer;
use crate::kir::{BinOp, Expr, Lit, Special, Ty, UnOp};

impl Printer<'_> {
    pub(super) fn expr(&self, e: &Expr) -> String {
        let k = self.kernel;
        match e {
            Expr::Lit(lit) => literal(*lit),
            Expr::Var(v) => self.var(*v).to_string(),
            Expr::Param(p) => self.param_names[p.0 as usize].clone(),
            Expr::Special(s) => special(*s),
            Expr::Unary(op, a) => self.unary(*op, a),
            Expr::Binary(op, a, b) => self.binary(*op, a, b),
            Expr::Fma(a, b, c) => {
                format!("fmaf({}, {}, {})", self.expr(a), self.expr(b), self.expr(c))
            }
            Expr::Select(c, a, b) => {
                format!("({} ? {} : {})", self.expr(c), self.expr(a), self.expr(b))
            }
            Expr::Cast(to, a) => cast(a.ty(k), *to, &self.expr(a)),
            Expr::Load(b, index) => format!("{}[{}]", self.buf(*b), self.expr(index)),
            Expr::PackBf16x2(lo, hi) => pack_bf16x2(&self.expr(lo), &self.expr(hi)),
        }
    }

    fn unary(&self, op: UnOp, a: &Expr) -> String {
        let ty = a.ty(self.kernel);
        let a = self.expr(a);
        let function = match (op, ty) {
            (UnOp::Neg, _) => return format!("(-{a})"),
            (UnOp::Not, Ty::Bool) => return format!("(!{a})"),
            (UnOp::Not, _) => return format!("(~{a})"),
            (UnOp::Abs, Ty::F32) => "fabsf",
            (UnOp::Abs, Ty::I32) => "abs",
            (UnOp::Abs, Ty::I64) => "llabs",
            (UnOp::Abs, Ty::U32 | Ty::Bool) => return a,
            (UnOp::Exp, _) => "expf",
            (UnOp::Log, _) => "logf",
            (UnOp::Sqrt, _) => "sqrtf",
            (UnOp::Rsqrt, _) => "rsqrtf",
            (UnOp::Tanh, _) => "tanhf",
            (UnOp::Erf, _) => "erff",
            (UnOp::Sin, _) => "sinf",
            (UnOp::Cos, _) => "cosf",
            (op, ty) => {
                panic!("{op:?} on {ty:?}: the kernel IR does arithmetic on F32 and integers only")
            }
        };
        format!("{function}({a})")
    }

    fn binary(&self, op: BinOp, a: &Expr, b: &Expr) -> String {
        let ty = a.ty(self.kernel);
        let (a, b) = (self.expr(a), self.expr(b));
        let float = ty == Ty::F32;
        let function = match op {
            BinOp::Min if float => "fminf",
            BinOp::Max if float => "fmaxf",
            BinOp::Min => "min",
            BinOp::Max => "max",
            BinOp::Rem if float => "fmodf",
            _ => "",
        };
        if !function.is_empty() {
            return format!("{function}({a}, {b})");
        }
        let operator = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::Min | BinOp::Max => unreachable!("printed as functions above"),
        };
        // C++ computes bitwise operators on bool as int; bring the result back to the IR's type.
        if ty == Ty::Bool && matches!(op, BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor) {
            return format!("((bool)({a} {operator} {b}))");
        }
        format!("({a} {operator} {b})")
    }
}

pub(super) fn pack_bf16x2(lo: &str, hi: &str) -> String {
    format!("(((unsigned int)__bfloat16_as_ushort({lo})) | (((unsigned int)__bfloat16_as_ushort({hi})) << 16))")
}

fn special(s: Special) -> String {
    let axis = |a: u8| ["x", "y", "z"][a as usize];
    match s {
        Special::ThreadIdx(a) => format!("threadIdx.{}", axis(a)),
        Special::BlockIdx(a) => format!("blockIdx.{}", axis(a)),
        Special::BlockDim(a) => format!("blockDim.{}", axis(a)),
        Special::GridDim(a) => format!("gridDim.{}", axis(a)),
        Special::LaneId => "(threadIdx.x & 31u)".to_string(),
    }
}

/// The conversions of `Expr::Cast`, spelled out: bf16 goes through f32 both ways (rounding to
/// nearest even on the way in), anything to bool is a test against zero, the rest are C casts
/// (which truncate floats and widen or wrap integers as the kernel IR specifies).
pub(super) fn cast(from: Ty, to: Ty, a: &str) -> String {
    if from == to {
        return a.to_string();
    }
    match (from, to) {
        (Ty::Bf16, Ty::F32) => format!("__bfloat162float({a})"),
        (Ty::Bf16, _) => cast(Ty::F32, to, &format!("__bfloat162float({a})")),
        (Ty::F32, Ty::Bf16) => format!("__float2bfloat16_rn({a})"),
        (_, Ty::Bf16) => format!("__float2bfloat16_rn(((float){a}))"),
        (Ty::F32, Ty::Bool) => format!("({a} != 0.0f)"),
        (_, Ty::Bool) => format!("({a} != 0)"),
        (_, to) => format!("(({}){a})", to.c_name()),
    }
}

fn literal(lit: Lit) -> String {
    match lit {
        Lit::Bool(b) => b.to_string(),
        Lit::I32(i32::MIN) => "(-2147483647 - 1)".to_string(),
        Lit::I32(v) if v < 0 => format!("({v})"),
        Lit::I32(v) => v.to_string(),
        Lit::U32(v) => format!("{v}u"),
        Lit::I64(i64::MIN) => "(-9223372036854775807LL - 1LL)".to_string(),
        Lit::I64(v) if v < 0 => format!("({v}LL)"),
        Lit::I64(v) => format!("{v}LL"),
        Lit::F32(v) => float_literal(v),
    }
}

/// A literal that NVRTC reads as exactly `v`: the shortest decimal where that decimal is also
/// exact as a double (so even a compiler that rounds through double gets `v`), a hex float
/// otherwise, and the bit pattern for infinities and NaNs.
pub fn float_literal(v: f32) -> String {
    if !v.is_finite() {
        return format!("__uint_as_float(0x{:08x}u)", v.to_bits());
    }
    let decimal = format!("{v:?}");
    let exact = decimal
        .parse::<f64>()
        .is_ok_and(|d| d.to_bits() == (v as f64).to_bits());
    let text = if exact {
        format!("{decimal}f")
    } else {
        hex_float(v)
    };
    if v.is_sign_negative() {
        format!("({text})")
    } else {
        text
    }
}

/// C++17 hexadecimal float literal: `0x1.99999ap-4f` for 0.1.
fn hex_float(v: f32) -> String {
    let bits = v.to_bits();
    let sign = if bits >> 31 == 1 { "-" } else { "" };
    let exponent = ((bits >> 23) & 0xff) as i32;
    // 23 fraction bits shifted to 24 make six hex digits.
    let fraction = (bits & 0x7f_ffff) << 1;
    let (lead, exponent) = if exponent == 0 {
        (0, -126)
    } else {
        (1, exponent - 127)
    };
    let digits = format!("{fraction:06x}");
    let digits = digits.trim_end_matches('0');
    let point = if digits.is_empty() {
        String::new()
    } else {
        format!(".{digits}")
    };
    format!("{sign}0x{lead}{point}p{exponent}f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_literals_are_decimal_only_where_exact() {
        assert_eq!(float_literal(1.5), "1.5f");
        assert_eq!(float_literal(256.0), "256.0f");
        assert_eq!(float_literal(-0.0), "(-0.0f)");
        assert_eq!(float_literal(0.1), "0x1.99999ap-4f");
        assert_eq!(float_literal(1e-6), "0x1.0c6f7ap-20f");
        assert_eq!(float_literal(-3.0e38), "(-0x1.c363ccp127f)");
        assert_eq!(float_literal(f32::from_bits(1)), "0x0.000002p-126f");
        assert_eq!(float_literal(f32::INFINITY), "__uint_as_float(0x7f800000u)");
        assert_eq!(
            float_literal(f32::NEG_INFINITY),
            "__uint_as_float(0xff800000u)"
        );
        assert_eq!(
            float_literal(f32::from_bits(0x7fc0_0001)),
            "__uint_as_float(0x7fc00001u)"
        );
    }

    #[test]
    fn hex_floats_denote_their_value() {
        for v in [
            0.1f32,
            1e-6,
            3.0e38,
            f32::MIN_POSITIVE,
            f32::from_bits(0x0040_0001),
            0.3,
            1.0 / 3.0,
            f32::MAX,
        ] {
            assert_eq!(parse_hex_float(&hex_float(v)), v as f64, "{}", hex_float(v));
        }
    }

    /// Evaluates `[-]0xH.HHHHHHpEf` exactly in f64 (24 significant bits fit).
    fn parse_hex_float(text: &str) -> f64 {
        let (negative, text) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
        let body = text.strip_prefix("0x").unwrap().strip_suffix('f').unwrap();
        let (mantissa, exponent) = body.split_once('p').unwrap();
        let (lead, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut value = lead.parse::<f64>().unwrap();
        for (i, digit) in fraction.chars().enumerate() {
            value += digit.to_digit(16).unwrap() as f64 * 16f64.powi(-(i as i32 + 1));
        }
        let value = value * 2f64.powi(exponent.parse().unwrap());
        if negative {
            -value
        } else {
            value
        }
    }
}
