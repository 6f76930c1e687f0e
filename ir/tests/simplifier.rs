use proptest::prelude::*;
use std::collections::HashMap;
use vl3c_ir::{Bounds, Dim};

const SYMS: [&str; 3] = ["a", "b", "c"];

fn d(s: &str) -> Dim {
    Dim::parse(s).unwrap().simplify()
}

fn bx(x: Dim) -> Box<Dim> {
    Box::new(x)
}

/// Unsimplified expressions over three symbols; divisors are arbitrary and cases where one
/// evaluates to a non-positive value are discarded.
fn dim_expr() -> impl Strategy<Value = Dim> {
    let leaf = prop_oneof![
        (-4i64..=6).prop_map(Dim::Const),
        prop::sample::select(SYMS.to_vec()).prop_map(Dim::sym)
    ];
    leaf.prop_recursive(5, 40, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Dim::Add(bx(a), bx(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Dim::Mul(bx(a), bx(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Dim::FloorDiv(bx(a), bx(b))),
            (inner, 1i64..=4).prop_map(|(a, k)| Dim::FloorDiv(bx(a), bx(Dim::Const(k)))),
        ]
    })
}

fn env_strategy() -> impl Strategy<Value = HashMap<String, i64>> {
    (1i64..=12, 1i64..=12, 1i64..=12).prop_map(|(a, b, c)| {
        [("a", a), ("b", b), ("c", c)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    })
}

/// Whether every divisor in `e` is positive under `env`, as the simplifier assumes.
fn divisors_positive(e: &Dim, env: &HashMap<String, i64>) -> bool {
    match e {
        Dim::Const(_) | Dim::Sym(_) => true,
        Dim::Add(x, y) | Dim::Mul(x, y) => divisors_positive(x, env) && divisors_positive(y, env),
        Dim::FloorDiv(x, y) => {
            divisors_positive(x, env)
                && divisors_positive(y, env)
                && y.eval(env).is_ok_and(|v| v > 0)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn simplify_preserves_value(e in dim_expr(), env in env_strategy()) {
        if !divisors_positive(&e, &env) {
            return Ok(());
        }
        let Ok(want) = e.eval(&env) else { return Ok(()) };
        let s = e.simplify();
        prop_assert_eq!(s.eval(&env), Ok(want), "{} simplified to {}", e, s);
    }

    #[test]
    fn simplify_is_idempotent(e in dim_expr()) {
        let s = e.simplify();
        prop_assert_eq!(s.simplify(), s.clone(), "{}", e);
    }

    #[test]
    fn add_and_mul_commute(x in dim_expr(), y in dim_expr()) {
        prop_assert_eq!(Dim::Add(bx(x.clone()), bx(y.clone())).simplify(), Dim::Add(bx(y.clone()), bx(x.clone())).simplify());
        prop_assert_eq!(Dim::Mul(bx(x.clone()), bx(y.clone())).simplify(), Dim::Mul(bx(y), bx(x)).simplify());
    }

    #[test]
    fn display_parses_back(e in dim_expr()) {
        prop_assert_eq!(Dim::parse(&e.to_string()).unwrap(), e.clone());
        let s = e.simplify();
        prop_assert_eq!(Dim::parse(&s.to_string()).unwrap().simplify(), s.clone());
        prop_assert_eq!(Dim::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn bounds_contain_every_value(e in dim_expr(), env in env_strategy()) {
        if !divisors_positive(&e, &env) {
            return Ok(());
        }
        let of = |_: &str| Some(Bounds { min: 1, max: 12 });
        if let (Some(b), Ok(v)) = (e.simplify().bounds(&of), e.eval(&env)) {
            prop_assert!(b.min <= v && v <= b.max, "{} = {} outside [{}, {}]", e, v, b.min, b.max);
        }
    }
}

#[test]
fn known_simplifications() {
    assert_eq!(d("(4*n)/4"), d("n"));
    assert_eq!(d("(n/2)/2"), d("n/4"));
    assert_eq!(d("n + n"), d("2*n"));
    assert_eq!(d("(2*n + 1)/2"), d("n"));
    assert_eq!(d("n*m/m"), d("n"));
    assert_eq!(d("(n + 1)/(n + 1)"), d("1"));
    assert_eq!(d("n - n"), Dim::Const(0));
    assert_eq!(d("7/2"), Dim::Const(3));
    assert_eq!(d("-7/2"), Dim::Const(-4));
    assert_eq!(d("(4*n + 6)/2"), d("2*n + 3"));
    assert_eq!(d("(n + 1)*(n + 1)"), d("n*n + 2*n + 1"));
    assert_ne!(d("(n + 1)/2"), d("n/2"));
    assert_eq!(d("n/2").to_string(), "n/2");
    assert_eq!(d("3 + 2*n").to_string(), "2*n + 3");
}

#[test]
fn bounds_of_floor_div() {
    let of = |s: &str| (s == "n").then_some(Bounds { min: 4, max: 400 });
    assert_eq!(d("n/4").bounds(&of), Some(Bounds { min: 1, max: 100 }));
    assert_eq!(d("n - 4").bounds(&of), Some(Bounds { min: 0, max: 396 }));
    assert_eq!(d("m").bounds(&of), None);
    assert_eq!(d("n/(n - 4)").bounds(&of), None, "the divisor may be zero");
}

#[test]
fn nested_division_with_huge_divisors_does_not_overflow() {
    let e = d("(n/4611686018427387904)/4");
    assert_eq!(e.to_string(), "n/4611686018427387904/4");
    assert_eq!(e.simplify(), e);
}

#[test]
fn overflowing_coefficients_are_left_unsimplified() {
    let big = Dim::Const(4611686018427387904);
    let d = Dim::Mul(
        Box::new(Dim::Mul(Box::new(Dim::sym("n")), Box::new(big))),
        Box::new(Dim::Const(4)),
    );
    let s = d.simplify();
    assert_ne!(s, Dim::Const(0), "a wrapped coefficient must not appear");
    let env = std::collections::HashMap::from([("n".to_string(), 1)]);
    assert!(
        matches!(s.eval(&env), Err(vl3c_ir::DimEvalError::Overflow(_))),
        "evaluation reports the overflow: {:?}",
        s.eval(&env)
    );
}
