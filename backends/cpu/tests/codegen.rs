//! Generated kernels: compile → object file → load → call, against the reference executor's
//! arithmetic (tests/codegen/reference.rs). Run with `--nocapture` to see the measured errors.

#[path = "codegen/reference.rs"]
mod reference;

use reference as r;
use reference::{max_err, Mask, Rng};
use std::sync::OnceLock;
use vl3c_cpu::codegen::{
    clif_text, compile_kernels, CodegenError, KernelSpec, LoadedKernels, MaskKind,
};

const WIDTHS: [usize; 8] = [1, 3, 7, 32, 37, 72, 128, 1152];
const ROPE_DS: [usize; 7] = [2, 6, 14, 64, 72, 74, 128];
const FLAT_NS: [usize; 9] = [1, 3, 7, 32, 37, 72, 128, 1152, 5001];
const ATTN: [(usize, usize); 7] = [
    (1, 1),
    (1, 9),
    (3, 7),
    (5, 37),
    (16, 72),
    (4, 130),
    (7, 1152),
];
const EPS: f64 = 1e-6;
const SCALE: f64 = 0.117_851_13; // 1/√72, the vision head

/// Tolerances: adds, RoPE and norms are f32-exact up to f64 summation order; exp/tanh/erf ones
/// carry the polynomial approximations' error.
const TOL_EXACT: f64 = 1e-6;
const TOL_TRANSCENDENTAL: f64 = 2e-6;

/// Every spec the tests use, compiled into one object, in a fixed order.
fn specs() -> Vec<KernelSpec> {
    let mut s = Vec::new();
    for &w in &WIDTHS {
        s.push(KernelSpec::LayerNorm { width: w, eps: EPS });
        s.push(KernelSpec::RmsNorm { width: w, eps: EPS });
        s.push(KernelSpec::Softmax { width: w });
        s.push(KernelSpec::AddBias { width: w });
    }
    for &d in &ROPE_DS {
        s.push(KernelSpec::Rope { d });
    }
    s.extend([
        KernelSpec::Gelu { tanh: true },
        KernelSpec::Gelu { tanh: false },
        KernelSpec::Silu,
    ]);
    s.extend([KernelSpec::SwiGlu, KernelSpec::Add]);
    for mask in [MaskKind::Full, MaskKind::Causal, MaskKind::Segments] {
        s.push(KernelSpec::AttentionSoftmax { scale: SCALE, mask });
    }
    s
}

struct Compiled {
    specs: Vec<KernelSpec>,
    kernels: LoadedKernels,
}

impl Compiled {
    fn index(&self, spec: KernelSpec) -> usize {
        self.specs
            .iter()
            .position(|s| *s == spec)
            .expect("spec compiled")
    }
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        let specs = specs();
        let obj = compile_kernels(&specs).expect("compile");
        assert_eq!(
            obj.symbols[0],
            format!("vl3c_k0_layer_norm{}", specs[0].abi())
        );
        assert!(specs[0].abi().starts_with("__w"), "{}", specs[0].abi());
        let kernels = LoadedKernels::load(&obj.bytes).expect("load");
        kernels.check_specs(&specs).expect("kinds match");
        println!(
            "object: {} bytes, {} kernels, {} relocations",
            obj.bytes.len(),
            kernels.len(),
            kernels.relocations_applied()
        );
        Compiled { specs, kernels }
    })
}

fn report(name: &str, err: f64) {
    println!("{name:<28} max error {err:.3e}");
}

#[test]
fn layer_norm_matches_reference() {
    let c = compiled();
    let mut rng = Rng::new(1);
    let mut worst = 0f64;
    for &w in &WIDTHS {
        let f = c
            .kernels
            .layer_norm(c.index(KernelSpec::LayerNorm { width: w, eps: EPS }))
            .unwrap();
        let rows = 5;
        // An offset mean exercises the centring; a constant row exercises var = 0.
        let mut x: Vec<f32> = rng
            .vec(rows * w, -3.0, 3.0)
            .iter()
            .map(|v| v + 0.75)
            .collect();
        x[..w].fill(2.5);
        let (wt, b) = (rng.vec(w, 0.5, 1.5), rng.vec(w, -1.0, 1.0));
        let want = r::layer_norm(&x, &wt, &b, EPS as f32);
        let mut out = vec![0f32; x.len()];
        unsafe {
            f(
                out.as_mut_ptr(),
                x.as_ptr(),
                wt.as_ptr(),
                b.as_ptr(),
                rows as i64,
            )
        };
        worst = worst.max(max_err(
            &format!("layer_norm w={w}"),
            &out,
            &want,
            TOL_EXACT,
        ));
        // In place, and rows = 0 / negative touch nothing.
        let mut inplace = x.clone();
        unsafe {
            f(
                inplace.as_mut_ptr(),
                inplace.as_ptr(),
                wt.as_ptr(),
                b.as_ptr(),
                rows as i64,
            )
        };
        assert_eq!(inplace, out, "in place w={w}");
        let mut untouched = vec![7f32; x.len()];
        unsafe {
            f(
                untouched.as_mut_ptr(),
                x.as_ptr(),
                wt.as_ptr(),
                b.as_ptr(),
                -1,
            )
        };
        assert!(untouched.iter().all(|&v| v == 7.0));
    }
    report("layer_norm", worst);
}

#[test]
fn rms_norm_matches_reference() {
    let c = compiled();
    let mut rng = Rng::new(2);
    let mut worst = 0f64;
    for &w in &WIDTHS {
        let f = c
            .kernels
            .rms_norm(c.index(KernelSpec::RmsNorm { width: w, eps: EPS }))
            .unwrap();
        let rows = 6;
        let x = rng.vec(rows * w, -4.0, 4.0);
        let wt = rng.vec(w, -1.5, 1.5);
        let want = r::rms_norm(&x, &wt, EPS as f32);
        let mut out = vec![0f32; x.len()];
        unsafe { f(out.as_mut_ptr(), x.as_ptr(), wt.as_ptr(), rows as i64) };
        worst = worst.max(max_err(&format!("rms_norm w={w}"), &out, &want, TOL_EXACT));
    }
    report("rms_norm", worst);
}

#[test]
fn softmax_matches_reference() {
    let c = compiled();
    let mut rng = Rng::new(3);
    let mut worst = 0f64;
    for &w in &WIDTHS {
        let f = c
            .kernels
            .softmax(c.index(KernelSpec::Softmax { width: w }))
            .unwrap();
        let rows = 7;
        let mut x = rng.vec(rows * w, -30.0, 30.0);
        // −inf entries (masked positions), one row entirely −inf (NaN) and one with a NaN.
        for v in x.iter_mut() {
            if rng.f32(0.0, 1.0) < 0.15 {
                *v = f32::NEG_INFINITY;
            }
        }
        x[w..2 * w].fill(f32::NEG_INFINITY);
        x[2 * w] = f32::NAN;
        x[3 * w] = 1.0; // keep row 3 with at least one finite entry
        let mut want = x.clone();
        want.chunks_mut(w).for_each(r::softmax_row);
        let mut out = vec![0f32; x.len()];
        unsafe { f(out.as_mut_ptr(), x.as_ptr(), rows as i64) };
        worst = worst.max(max_err(
            &format!("softmax w={w}"),
            &out,
            &want,
            TOL_TRANSCENDENTAL,
        ));
        assert!(out[w..2 * w].iter().all(|v| v.is_nan()));
    }
    report("softmax", worst);
}

#[test]
fn add_bias_and_add_match_reference() {
    let c = compiled();
    let mut rng = Rng::new(4);
    for &w in &WIDTHS {
        let f = c
            .kernels
            .add_bias(c.index(KernelSpec::AddBias { width: w }))
            .unwrap();
        let rows = 3;
        let (x, b) = (rng.vec(rows * w, -5.0, 5.0), rng.vec(w, -5.0, 5.0));
        let want: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + b[i % w]).collect();
        let mut out = vec![0f32; x.len()];
        unsafe { f(out.as_mut_ptr(), x.as_ptr(), b.as_ptr(), rows as i64) };
        assert_eq!(out, want, "add_bias w={w}");
    }
    let f = c.kernels.binary(c.index(KernelSpec::Add)).unwrap();
    for &n in &FLAT_NS {
        let (a, b) = (rng.vec(n, -5.0, 5.0), rng.vec(n, -5.0, 5.0));
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mut out = vec![0f32; n];
        unsafe { f(out.as_mut_ptr(), a.as_ptr(), b.as_ptr(), n as i64) };
        assert_eq!(out, want, "add n={n}");
    }
    report("add / add_bias", 0.0);
}

#[test]
fn rope_matches_reference() {
    let c = compiled();
    let mut rng = Rng::new(5);
    for &d in &ROPE_DS {
        let f = c.kernels.rope(c.index(KernelSpec::Rope { d })).unwrap();
        let (heads, n) = (3, 5);
        let x = rng.vec(heads * n * d, -2.0, 2.0);
        let ang = rng.vec(n * d, -3.2, 3.2);
        let cos: Vec<f32> = ang.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = ang.iter().map(|a| a.sin()).collect();
        let want = r::rope(&x, &cos, &sin, d, n);
        let mut out = vec![0f32; x.len()];
        unsafe {
            f(
                out.as_mut_ptr(),
                x.as_ptr(),
                cos.as_ptr(),
                sin.as_ptr(),
                (heads * n) as i64,
                n as i64,
            )
        };
        assert_eq!(out, want, "rope d={d}");
        let mut inplace = x.clone();
        unsafe {
            f(
                inplace.as_mut_ptr(),
                inplace.as_ptr(),
                cos.as_ptr(),
                sin.as_ptr(),
                (heads * n) as i64,
                n as i64,
            )
        };
        assert_eq!(inplace, want, "rope in place d={d}");
        let mut untouched = x.clone();
        unsafe {
            f(
                untouched.as_mut_ptr(),
                x.as_ptr(),
                cos.as_ptr(),
                sin.as_ptr(),
                (heads * n) as i64,
                0,
            )
        };
        assert_eq!(untouched, x, "table_rows = 0 does nothing");
    }
    report("rope", 0.0);
}

/// Inputs for activations: random values, a dense sweep and the special values.
fn activation_inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.vec(n, -12.0, 12.0);
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-30,
        -1e-30,
        100.0,
        -100.0,
        88.0,
        -88.0,
    ];
    for (i, s) in specials.iter().enumerate() {
        if i < n {
            x[i] = *s;
        }
    }
    x
}

#[test]
fn activations_match_reference() {
    let c = compiled();
    let mut rng = Rng::new(6);
    type Case = (KernelSpec, &'static str, fn(f32) -> f32);
    let cases: [Case; 3] = [
        (KernelSpec::Gelu { tanh: true }, "gelu_tanh", r::gelu_tanh),
        (KernelSpec::Gelu { tanh: false }, "gelu_erf", r::gelu_erf),
        (KernelSpec::Silu, "silu", r::silu),
    ];
    for (spec, name, reff) in cases {
        let f = c.kernels.unary(c.index(spec)).unwrap();
        let mut worst = 0f64;
        for &n in &FLAT_NS {
            let x = activation_inputs(&mut rng, n);
            let want: Vec<f32> = x.iter().map(|&v| reff(v)).collect();
            let mut out = vec![0f32; n];
            unsafe { f(out.as_mut_ptr(), x.as_ptr(), n as i64) };
            worst = worst.max(max_err(
                &format!("{name} n={n}"),
                &out,
                &want,
                TOL_TRANSCENDENTAL,
            ));
        }
        // Dense sweep over [−20, 20]: bounds the exp/tanh/erf approximations' effect.
        let x: Vec<f32> = (0..400_001).map(|i| -20.0 + i as f32 * 1e-4).collect();
        let want: Vec<f32> = x.iter().map(|&v| reff(v)).collect();
        let mut out = vec![0f32; x.len()];
        unsafe { f(out.as_mut_ptr(), x.as_ptr(), x.len() as i64) };
        worst = worst.max(max_err(
            &format!("{name} sweep"),
            &out,
            &want,
            TOL_TRANSCENDENTAL,
        ));
        report(name, worst);
    }
}

#[test]
fn swiglu_matches_reference() {
    let c = compiled();
    let f = c.kernels.binary(c.index(KernelSpec::SwiGlu)).unwrap();
    let mut rng = Rng::new(7);
    let mut worst = 0f64;
    for &n in &FLAT_NS {
        let (g, u) = (activation_inputs(&mut rng, n), rng.vec(n, -3.0, 3.0));
        let want: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| r::silu(g) * u).collect();
        let mut out = vec![0f32; n];
        unsafe { f(out.as_mut_ptr(), g.as_ptr(), u.as_ptr(), n as i64) };
        worst = worst.max(max_err(
            &format!("swiglu n={n}"),
            &out,
            &want,
            TOL_TRANSCENDENTAL,
        ));
    }
    report("swiglu", worst);
}

#[test]
fn attention_softmax_matches_reference() {
    let c = compiled();
    let mut rng = Rng::new(8);
    let mut worst = 0f64;
    for mask in [MaskKind::Full, MaskKind::Causal, MaskKind::Segments] {
        let f = c
            .kernels
            .attention_softmax(c.index(KernelSpec::AttentionSoftmax { scale: SCALE, mask }))
            .unwrap();
        for &(n, t) in &ATTN {
            let t = if mask == MaskKind::Segments {
                n.max(t.min(64))
            } else {
                t
            };
            let n = if mask == MaskKind::Segments { t } else { n };
            let s = rng.vec(n * t, -60.0, 60.0);
            // Segments: runs of random length, plus one shuffled id list.
            let mut seg = Vec::with_capacity(t);
            let mut id = 0i64;
            while seg.len() < t {
                let run = 1 + (rng.next_u64() % 9) as usize;
                seg.extend(std::iter::repeat_n(id, run.min(t - seg.len())));
                id += 1;
            }
            if n % 2 == 1 {
                seg.iter_mut()
                    .for_each(|v| *v = (rng.next_u64() % 3) as i64);
            }
            let offset = t - n;
            let rmask = match mask {
                MaskKind::Full => Mask::Full,
                MaskKind::Causal => Mask::Causal { offset },
                MaskKind::Segments => Mask::Segments { q: &seg, k: &seg },
            };
            let want = r::attention_rows(&s, t, SCALE as f32, &rmask);
            let mut got = s.clone();
            let sp = if mask == MaskKind::Segments {
                seg.as_ptr()
            } else {
                std::ptr::null()
            };
            unsafe { f(got.as_mut_ptr(), sp, sp, n as i64, t as i64, offset as i64) };
            worst = worst.max(max_err(
                &format!("attention {mask:?} {n}x{t}"),
                &got,
                &want,
                TOL_TRANSCENDENTAL,
            ));
        }
    }
    // Causal with a negative offset: the first row sees nothing and is NaN, as the chain gives.
    let f = c
        .kernels
        .attention_softmax(c.index(KernelSpec::AttentionSoftmax {
            scale: SCALE,
            mask: MaskKind::Causal,
        }))
        .unwrap();
    let mut s = vec![1f32; 2 * 5];
    unsafe { f(s.as_mut_ptr(), std::ptr::null(), std::ptr::null(), 2, 5, -1) };
    assert!(s[..5].iter().all(|v| v.is_nan()), "{s:?}");
    assert_eq!(&s[5..], &[1.0, 0.0, 0.0, 0.0, 0.0]);
    report("attention_softmax", worst);
}

#[test]
fn invalid_specs_are_errors() {
    for (spec, why) in [
        (
            KernelSpec::LayerNorm {
                width: 0,
                eps: 1e-6,
            },
            "width must be in 1..=2^24",
        ),
        (
            KernelSpec::RmsNorm {
                width: 8,
                eps: f64::NAN,
            },
            "eps must be finite and >= 0",
        ),
        (KernelSpec::Rope { d: 7 }, "d must be even, in 2..=2^24"),
        (
            KernelSpec::Softmax { width: 0 },
            "width must be in 1..=2^24",
        ),
        (
            KernelSpec::AttentionSoftmax {
                scale: f64::INFINITY,
                mask: MaskKind::Full,
            },
            "scale must be finite",
        ),
    ] {
        // The Debug text, not `==`: a NaN eps is not equal to itself.
        match compile_kernels(&[KernelSpec::Add, spec]) {
            Err(CodegenError::InvalidSpec {
                index: 1,
                spec: got,
                reason,
            }) if format!("{got:?}") == format!("{spec:?}") && reason == why => {}
            other => panic!("{spec:?}: expected InvalidSpec at index 1 ({why}), got {other:?}"),
        }
    }
}

#[test]
fn wrong_kind_and_index_are_errors() {
    let c = compiled();
    let add = c.index(KernelSpec::Add);
    let e = c.kernels.softmax(add).unwrap_err();
    assert!(
        matches!(&e, CodegenError::Kernel { index, reason } if *index == add && reason == "is add, not softmax"),
        "{e}"
    );
    let n = c.specs.len();
    let e = c.kernels.layer_norm(n).unwrap_err();
    assert!(
        matches!(&e, CodegenError::Kernel { index, reason } if *index == n && reason.starts_with("out of range")),
        "{e}"
    );
    let e = c.kernels.check_specs(&c.specs[1..]).unwrap_err();
    let want = format!("object has {n} kernels, expected {}", n - 1);
    assert!(matches!(&e, CodegenError::Object(m) if *m == want), "{e}");
}

#[test]
fn malformed_objects_are_errors() {
    let obj = compile_kernels(&[KernelSpec::Add, KernelSpec::Softmax { width: 37 }]).unwrap();
    let good = &obj.bytes;
    assert!(LoadedKernels::load(good).is_ok());
    let object_err = |bytes: &[u8]| match LoadedKernels::load(bytes) {
        Err(CodegenError::Object(m)) => m,
        other => panic!("expected a malformed-object error, got {other:?}"),
    };
    // Under 16 bytes there is no file magic to read; 16 bytes of text have an unknown one.
    assert_eq!(object_err(&[]), "Could not read file magic");
    assert_eq!(object_err(b"not an object"), "Could not read file magic");
    assert_eq!(object_err(b"not an object file"), "Unknown file magic");
    for cut in [4, 16, 63, good.len() / 2, good.len() - 1] {
        let m = object_err(&good[..cut]);
        assert!(!m.is_empty(), "truncated at {cut}");
    }
    // e_type = executable, then e_machine = something else: both rejected.
    let mut exec = good.clone();
    exec[16] = 2;
    let m = object_err(&exec);
    assert!(m.starts_with("expected a relocatable object"), "{m}");
    let mut arch = good.clone();
    arch[18] = 0x28; // EM_ARM
    arch[19] = 0;
    let m = object_err(&arch);
    assert!(m.contains("not this host"), "{m}");
    // Corrupting bytes anywhere must give Ok or Err, never a panic.
    let mut rng = Rng::new(9);
    for _ in 0..2000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let i = (rng.next_u64() % b.len() as u64) as usize;
            b[i] = rng.next_u64() as u8;
        }
        let _ = LoadedKernels::load(&b);
    }
}

#[test]
fn clif_snapshots() {
    let kinds = [
        KernelSpec::LayerNorm {
            width: 37,
            eps: 1e-6,
        },
        KernelSpec::RmsNorm {
            width: 37,
            eps: 1e-6,
        },
        KernelSpec::Softmax { width: 37 },
        KernelSpec::Rope { d: 14 },
        KernelSpec::Gelu { tanh: true },
        KernelSpec::Gelu { tanh: false },
        KernelSpec::Silu,
        KernelSpec::SwiGlu,
        KernelSpec::Add,
        KernelSpec::AddBias { width: 37 },
        KernelSpec::AttentionSoftmax {
            scale: SCALE,
            mask: MaskKind::Causal,
        },
        KernelSpec::AttentionSoftmax {
            scale: SCALE,
            mask: MaskKind::Segments,
        },
    ];
    for spec in kinds {
        let name = match spec {
            KernelSpec::AttentionSoftmax { mask, .. } => {
                format!("attention_softmax_{mask:?}").to_lowercase()
            }
            _ => spec.kind().to_string(),
        };
        insta::assert_snapshot!(name, clif_text(0, &spec).unwrap());
    }
}

#[path = "codegen/relocs.rs"]
mod relocs;
