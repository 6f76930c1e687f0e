//! The precision policy for a bf16 checkpoint's matmuls: an f32 matmul whose stored weight holds
//! bf16 values exactly runs on bf16 inputs with f32 accumulation (the GEMM on bf16 A and B, the
//! activations rounded first; the decode GEMV on bf16 weights and f32 x), and its weight is on
//! the device once, `[N, K]` bf16. Any other weight keeps the f32 path. Checked on the plan and
//! end to end: the engine's files written from the plan, loaded onto the emulator and run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use vl3c_cuda::gemm::{ComputeType, DataType, GemmCall, MatrixLayout};
use vl3c_cuda::kir::{Kernel, Ty};
use vl3c_cuda::lower::{
    runtime_nodes, DevicePlan, GraphFile, PlanFile, Step, KERNELS_FILE, PLAN_FILE, WEIGHTS_FILE,
};
use vl3c_cuda::run::{DevArg, DevBuf, Device, DeviceError, EmuDevice, GemmBuffers, Program};
use vl3c_cuda::templates::Sizes;
use vl3c_engine::{TensorEntry, TensorLayout};
use vl3c_ir::{DType, Graph, NodeId, Op, TensorType, UnaryOp};
use vl3c_reference::Tensor;

const K: usize = 16;
const N: usize = 24;

/// How the graph's weight reaches the matmul.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// `weight : bf16 → cast → transpose → fold`, as a bf16 checkpoint's graphs read it.
    Bf16,
    /// `weight : f32 → transpose → fold`.
    F32,
    /// `weight : bf16 → cast → exp → transpose → fold`: computed, no longer bf16 values.
    Computed,
}

/// `decode`: `y[seq_len, N] = x[seq_len, K] · fold(w) + fold(bias)`, the bias a bf16 weight.
fn graph(source: Source) -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new("decode");
    let seq = g.declare_symbol("seq_len", 1, 64);
    let x = g
        .add_source(
            Op::Input { name: "x".into() },
            TensorType::new(DType::F32, vec![seq, K.into()]),
        )
        .unwrap();
    let stored_ty = if source == Source::F32 {
        DType::F32
    } else {
        DType::BF16
    };
    let w = g
        .add_source(
            Op::Weight { name: "w".into() },
            TensorType::new(stored_ty, vec![N.into(), K.into()]),
        )
        .unwrap();
    let mut w = if source == Source::F32 {
        w
    } else {
        g.add(Op::Cast { to: DType::F32 }, &[w]).unwrap()
    };
    if source == Source::Computed {
        w = g.add(Op::Unary(UnaryOp::Exp), &[w]).unwrap();
    }
    let w = g.add(Op::Transpose { perm: vec![1, 0] }, &[w]).unwrap();
    let w = g.add(Op::Fold, &[w]).unwrap();
    let b = g
        .add_source(
            Op::Weight {
                name: "bias".into(),
            },
            TensorType::new(DType::BF16, vec![N.into()]),
        )
        .unwrap();
    let b = g.add(Op::Cast { to: DType::F32 }, &[b]).unwrap();
    let b = g.add(Op::Fold, &[b]).unwrap();
    let y = g
        .add(
            Op::FusedMatMul {
                bias: true,
                residual: false,
            },
            &[x, w, b],
        )
        .unwrap();
    g.set_output("y", y);
    (g, w, b)
}

fn matmul_step(plan: &DevicePlan) -> (GemmCall, Option<usize>, Option<usize>) {
    plan.graphs[0]
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Matmul {
                gemm,
                gemv,
                round_b,
                ..
            } => Some((gemm.clone(), *gemv, *round_b)),
            _ => None,
        })
        .expect("a matmul step")
}

fn types(l: &[&MatrixLayout]) -> Vec<DataType> {
    l.iter().map(|l| l.ty).collect()
}

#[test]
fn a_bf16_checkpoints_weight_runs_bf16_inputs_with_f32_accumulation() {
    let (g, _, _) = graph(Source::Bf16);
    let plan = DevicePlan::lower([&g]).unwrap();
    let (gemm, gemv, round_b) = matmul_step(&plan);
    assert_eq!(
        types(&[&gemm.a, &gemm.b, &gemm.c, &gemm.d]),
        [DataType::Bf16, DataType::Bf16, DataType::F32, DataType::F32]
    );
    assert_eq!(gemm.compute, ComputeType::F32);
    let name = |i: Option<usize>| plan.instances[i.expect("an instance")].template.name();
    assert_eq!(name(round_b), format!("cast:to=bf16(x=f32[rows,{K}])"));
    assert!(
        name(gemv).starts_with(&format!("gemv(dtype=f32,weight=bf16,k={K},n={N},bias=1")),
        "{}",
        name(gemv)
    );
}

#[test]
fn f32_and_computed_weights_keep_f32_products() {
    for source in [Source::F32, Source::Computed] {
        let (g, _, _) = graph(source);
        let plan = DevicePlan::lower([&g]).unwrap();
        let (gemm, gemv, round_b) = matmul_step(&plan);
        assert_eq!(
            types(&[&gemm.a, &gemm.b, &gemm.c, &gemm.d]),
            [DataType::F32; 4]
        );
        assert_eq!(gemm.compute, ComputeType::F32Pedantic, "no TF32");
        assert_eq!(round_b, None);
        let gemv = plan.instances[gemv.unwrap()].template.name();
        assert!(gemv.starts_with("gemv(dtype=f32,k="), "{gemv}");
        let json = serde_json::to_string(&plan.graphs[0].steps).unwrap();
        assert!(
            !json.contains("round_b"),
            "an f32 plan reads as before: {json}"
        );
    }
}

#[test]
fn plans_without_round_b_still_parse() {
    let (g, _, _) = graph(Source::F32);
    let plan = DevicePlan::lower([&g]).unwrap();
    let json = serde_json::to_string(&plan.graphs[0].steps).unwrap();
    let back: Vec<Step> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan.graphs[0].steps);
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn bf16(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| half::bf16::from_f32(x).to_f32())
        .collect()
}

/// Every allocation the device is asked for.
struct Logged {
    inner: EmuDevice,
    allocs: Arc<Mutex<Vec<(Ty, usize)>>>,
}

impl Device for Logged {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn alloc(&mut self, elem: Ty, len: usize) -> Result<DevBuf, DeviceError> {
        self.allocs.lock().unwrap().push((elem, len));
        self.inner.alloc(elem, len)
    }
    fn free(&mut self, buf: DevBuf) {
        self.inner.free(buf)
    }
    fn write(&mut self, buf: DevBuf, at: usize, bytes: &[u8]) -> Result<(), DeviceError> {
        self.inner.write(buf, at, bytes)
    }
    fn read(&mut self, buf: DevBuf, at: usize, len: usize) -> Result<Vec<u8>, DeviceError> {
        self.inner.read(buf, at, len)
    }
    fn copy(&mut self, src: DevBuf, dst: DevBuf, len: usize) -> Result<(), DeviceError> {
        self.inner.copy(src, dst, len)
    }
    fn launch(&mut self, kernel: &Kernel, args: &[DevArg]) -> Result<(), DeviceError> {
        self.inner.launch(kernel, args)
    }
    fn gemm(
        &mut self,
        call: &GemmCall,
        sizes: &Sizes,
        bufs: GemmBuffers,
    ) -> Result<(), DeviceError> {
        self.inner.gemm(call, sizes, bufs)
    }
}

/// The engine's `cuda/` files for `g`, with the fold values `w_kn` (`[K, N]`) and `bias`.
fn engine_files(
    g: &Graph,
    w: NodeId,
    b: NodeId,
    w_kn: &[f32],
    bias: &[f32],
) -> HashMap<&'static str, Vec<u8>> {
    let plan = DevicePlan::lower([g]).unwrap();
    let live = runtime_nodes(g);
    assert!(live[w.index()] && live[b.index()]);
    let mut bytes = Vec::new();
    let mut tensors = BTreeMap::new();
    let mut stored = BTreeMap::new();
    for (node, name, shape, data) in [(w, "w_kn", vec![K, N], w_kn), (b, "bias", vec![N], bias)] {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let entry = TensorEntry {
            offset: bytes.len() as u64,
            bytes: raw.len() as u64,
            dtype: "f32".into(),
            shape,
            layout: TensorLayout::Raw,
        };
        bytes.extend(raw);
        tensors.insert(name.to_string(), entry);
        stored.insert(node.index(), name.to_string());
    }
    let graphs = vec![GraphFile {
        plan: plan.graphs[0].clone(),
        stored,
    }];
    let file = PlanFile {
        instances: plan.instance_index(),
        graphs,
        weights: true,
        tensors,
    };
    let kernels: Vec<Kernel> = plan
        .instances
        .iter()
        .flat_map(|i| i.template.kernels())
        .collect();
    [
        (PLAN_FILE, serde_json::to_vec(&file).unwrap()),
        (KERNELS_FILE, serde_json::to_vec(&kernels).unwrap()),
        (WEIGHTS_FILE, bytes),
    ]
    .into_iter()
    .collect()
}

/// The program, and what its load allocated, largest first.
fn load(files: &HashMap<&'static str, Vec<u8>>) -> (Result<Program, String>, Vec<(Ty, usize)>) {
    let allocs = Arc::new(Mutex::new(Vec::new()));
    let device = Logged {
        inner: EmuDevice::new(),
        allocs: allocs.clone(),
    };
    let read = |name: &str| {
        files
            .get(name)
            .cloned()
            .ok_or_else(|| "is missing".to_string())
    };
    let program = Program::load_with(&read, Box::new(device)).map_err(|e| e.to_string());
    let mut allocs = allocs.lock().unwrap().clone();
    allocs.sort_by_key(|&(_, len)| std::cmp::Reverse(len));
    (program, allocs)
}

/// `x · w_kn + bias` in f32, k in order.
fn expected(x: &[f32], w_kn: &[f32], bias: &[f32], rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * N];
    for r in 0..rows {
        for j in 0..N {
            let dot: f32 = (0..K).map(|l| x[r * K + l] * w_kn[l * N + j]).sum();
            out[r * N + j] = dot + bias[j];
        }
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_weight_is_uploaded_once_in_bf16_and_both_paths_match_their_loops() {
    let (g, w, b) = graph(Source::Bf16);
    let (w_kn, bias) = (bf16(&values(K * N, 1)), bf16(&values(N, 2)));
    let files = engine_files(&g, w, b, &w_kn, &bias);
    let (program, allocs) = load(&files);
    let program = program.unwrap();
    // The weight as `[N, K]` bf16 only, the bias as the IR holds it: no f32 copy of the weight.
    assert_eq!(allocs, [(Ty::Bf16, K * N), (Ty::F32, N)]);

    for rows in [1, 3] {
        let x = values(rows * K, 3 + rows as u64);
        let inputs: HashMap<String, Tensor> = [(
            "x".to_string(),
            Tensor::from_f32(DType::F32, vec![rows, K], x.clone()),
        )]
        .into_iter()
        .collect();
        let mut kv = program.new_kv(&g, 8).unwrap();
        let y = program.run(&g, &inputs, &mut kv).unwrap().outputs["y"].to_f32_vec();
        let (unrounded, rounded) = (
            expected(&x, &w_kn, &bias, rows),
            expected(&bf16(&x), &w_kn, &bias, rows),
        );
        let (near, far) = if rows == 1 {
            (&unrounded, &rounded)
        } else {
            (&rounded, &unrounded)
        };
        // The GEMV reads x in f32, the GEMM reads it rounded to bf16: only the summation order
        // differs from the matching loop, and the other loop is visibly further.
        assert!(
            max_diff(&y, near) <= 1e-5,
            "rows = {rows}: {} from its loop",
            max_diff(&y, near)
        );
        assert!(
            max_diff(&y, far) > 1e-4,
            "rows = {rows}: as close to the other loop ({})",
            max_diff(&y, far)
        );
    }
}

#[test]
fn a_weight_read_as_bf16_that_is_not_bf16_fails_the_load() {
    let (g, w, b) = graph(Source::Bf16);
    let mut w_kn = bf16(&values(K * N, 1));
    w_kn[5] = 0.1; // not a bf16 value
    let files = engine_files(&g, w, b, &w_kn, &bf16(&values(N, 2)));
    let err = load(&files).0.err().expect("the load fails");
    assert!(
        err.contains("tensor `w_kn`") && err.contains("is not a bf16 value"),
        "{err}"
    );
}

#[test]
fn an_f32_weight_is_uploaded_once_in_f32() {
    let (g, w, b) = graph(Source::F32);
    let files = engine_files(&g, w, b, &values(K * N, 1), &bf16(&values(N, 2)));
    let (program, allocs) = load(&files);
    program.unwrap();
    assert_eq!(allocs, [(Ty::F32, K * N), (Ty::F32, N)]);
}
