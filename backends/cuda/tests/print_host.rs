//! Runs the printed text of the sample kernels on the CPU (g++ with a fiber shim,
//! `print_host/shim.h`, under the address and undefined-behaviour sanitizers) and compares what
//! they compute with plain Rust. Snapshots pin how the printer spells things; this proves that
//! the spelling means what the kernels say: index arithmetic, shuffles, barriers, carved dynamic
//! shared memory, vector accesses, bf16 conversions and the mma fragment layout.

mod print_samples;

use half::bf16;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use vl3c_cuda::kir::{BinOp, Expr, Kernel, Lit, ParamKind};
use vl3c_cuda::print::{dynamic_shared_layout, print_module};

/// One launch of one kernel: scalar values, input buffers (raw bytes) and output lengths (in
/// elements), by parameter name.
struct Launch {
    kernel: Kernel,
    grid: [u32; 3],
    scalars: BTreeMap<&'static str, i64>,
    inputs: BTreeMap<&'static str, Vec<u8>>,
    outputs: BTreeMap<&'static str, usize>,
}

fn gxx_available() -> bool {
    let found = Command::new("g++")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // Straight to the file descriptor: the test harness captures `eprintln!` of passing tests.
        let line = "\n*** skipped: no g++ to build the printed kernels for the host ***\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    found
}

/// The value of a length formula for the launch's scalars.
fn evaluate(e: &Expr, kernel: &Kernel, scalars: &BTreeMap<&str, i64>) -> i64 {
    match e {
        Expr::Lit(Lit::I64(v)) => *v,
        Expr::Lit(Lit::I32(v)) => *v as i64,
        Expr::Lit(Lit::U32(v)) => *v as i64,
        Expr::Param(p) => scalars[kernel.params[p.0 as usize].name.as_str()],
        Expr::Cast(_, a) => evaluate(a, kernel, scalars),
        Expr::Binary(op, a, b) => {
            let (a, b) = (evaluate(a, kernel, scalars), evaluate(b, kernel, scalars));
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                other => panic!("length formula uses {other:?}"),
            }
        }
        other => panic!("length formula {other:?}"),
    }
}

/// The printed module made host C++: the shim instead of the CUDA headers, the dynamic shared
/// buffer from the launcher, and the mma helper's inline PTX replaced by the shim's warp model.
fn host_source(kernel: &Kernel) -> String {
    let mut source = print_module(std::slice::from_ref(kernel))
        .replace("#include <cuda_bf16.h>", "#include \"shim.h\"")
        .replace(
            "extern __shared__ __align__(16) unsigned char vl3_smem[];",
            "unsigned char* const vl3_smem = vl3::dynamic_smem;",
        );
    if let Some(start) = source.find("  asm volatile(") {
        let end = start
            + source[start..]
                .find("));\n")
                .expect("the asm statement ends")
            + 4;
        source.replace_range(
            start..end,
            "  vl3::mma(d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3);\n",
        );
    }
    source
}

fn host_main(launch: &Launch, dynamic_bytes: u64) -> String {
    let kernel = &launch.kernel;
    let mut main =
        String::from("int main(int argc, char** argv) {\n  const std::string dir = argv[1];\n");
    let mut args = Vec::new();
    for (i, param) in kernel.params.iter().enumerate() {
        let name = param.name.as_str();
        match &param.kind {
            ParamKind::Buffer { elem, .. } => {
                let ty = elem.c_name();
                if launch.inputs.contains_key(name) {
                    main.push_str(&format!(
                        "  auto buf{i} = vl3::read<{ty}>(dir + \"/{name}.bin\");\n"
                    ));
                } else {
                    let len = launch.outputs[name];
                    main.push_str(&format!("  std::vector<{ty}> buf{i}({len});\n"));
                }
                args.push(format!("buf{i}.data()"));
            }
            ParamKind::Scalar(ty) => {
                args.push(format!("({}){}LL", ty.c_name(), launch.scalars[name]))
            }
        }
    }
    let [gx, gy, gz] = launch.grid;
    let [bx, by, bz] = kernel.block;
    main.push_str(&format!(
        "  vl3::launch(dim3{{{gx}, {gy}, {gz}}}, dim3{{{bx}, {by}, {bz}}}, {dynamic_bytes}, [&] {{ {}({}); }});\n",
        kernel.name,
        args.join(", ")
    ));
    for (i, param) in kernel.params.iter().enumerate() {
        if launch.outputs.contains_key(param.name.as_str()) {
            main.push_str(&format!(
                "  vl3::write(dir + \"/{}.bin\", buf{i});\n",
                param.name
            ));
        }
    }
    main.push_str("}\n");
    main
}

/// Builds and runs the launch on the host; the outputs' bytes by name.
fn run_on_host(launch: &Launch) -> BTreeMap<&'static str, Vec<u8>> {
    let kernel = &launch.kernel;
    let (_, dynamic_bytes) =
        dynamic_shared_layout(kernel, |len| evaluate(len, kernel, &launch.scalars) as u64);
    let dir = std::env::temp_dir().join(format!(
        "vl3c-print-host-{}-{}",
        std::process::id(),
        kernel.name
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let source = format!(
        "{}\n{}",
        host_source(kernel),
        host_main(launch, dynamic_bytes)
    );
    let cpp = dir.join("kernel.cpp");
    std::fs::write(&cpp, &source).unwrap();
    for (name, bytes) in &launch.inputs {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
    let shim_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/print_host");
    let binary = dir.join("kernel");
    let built = Command::new("g++")
        .args([
            "-std=c++17",
            "-O1",
            "-g",
            "-fno-strict-aliasing",
            "-fsanitize=address,undefined",
        ])
        .args(["-fno-sanitize-recover=all", "-Wall", "-Wno-unused-variable"])
        .arg("-I")
        .arg(&shim_dir)
        .arg(&cpp)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("g++ runs");
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(
        built.status.success(),
        "g++ rejects the printed {}:\n{stderr}\n--- source ---\n{source}",
        kernel.name
    );
    let ran = Command::new(&binary)
        .arg(&dir)
        // The fibers switch stacks under ASan, which it tolerates but warns about.
        .env(
            "ASAN_OPTIONS",
            "detect_stack_use_after_return=0:detect_leaks=0",
        )
        .output()
        .expect("the host build runs");
    assert!(
        ran.status.success(),
        "the host build of {} failed:\n{}",
        kernel.name,
        String::from_utf8_lossy(&ran.stderr)
    );
    let outputs = launch
        .outputs
        .keys()
        .map(|name| {
            (
                *name,
                std::fs::read(dir.join(format!("{name}.bin"))).unwrap(),
            )
        })
        .collect();
    remove(&dir);
    outputs
}

fn remove(dir: &PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Deterministic values in [-1, 1).
fn uniform(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
        .collect()
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn bf16_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
        .collect()
}

#[test]
fn block_sum_adds_each_row() {
    if !gxx_available() {
        return;
    }
    let (rows, n) = (3usize, 1000usize);
    let x = uniform(rows * n, 1);
    let launch = Launch {
        kernel: print_samples::block_sum(),
        grid: [rows as u32, 1, 1],
        scalars: [("n", n as i64), ("rows", rows as i64)].into(),
        inputs: [("x", f32_bytes(&x))].into(),
        outputs: [("out", rows)].into(),
    };
    let out = f32_values(&run_on_host(&launch)["out"]);
    for (r, got) in out.iter().enumerate() {
        let row = &x[r * n..(r + 1) * n];
        let want: f64 = row.iter().map(|v| *v as f64).sum();
        let scale: f64 = row.iter().map(|v| v.abs() as f64).sum();
        assert!(
            (*got as f64 - want).abs() <= 1e-5 * scale,
            "row {r}: {got} against {want}"
        );
    }
}

#[test]
fn softmax_bf16_normalizes_each_row() {
    if !gxx_available() {
        return;
    }
    let (rows, cols) = (2usize, 1000usize);
    let x: Vec<f32> = uniform(rows * cols, 2)
        .iter()
        .map(|v| bf16::from_f32(v * 4.0).to_f32())
        .collect();
    let launch = Launch {
        kernel: print_samples::softmax_bf16(),
        grid: [rows as u32, 1, 1],
        scalars: [("cols", cols as i64), ("rows", rows as i64)].into(),
        inputs: [("x", bf16_bytes(&x))].into(),
        outputs: [("out", rows * cols)].into(),
    };
    let out = bf16_values(&run_on_host(&launch)["out"]);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let total: f64 = row.iter().map(|v| (*v as f64 - max).exp()).sum();
        for (c, v) in row.iter().enumerate() {
            let want = (*v as f64 - max).exp() / total;
            let got = out[r * cols + c] as f64;
            // One bf16 rounding (2⁻⁹ relative) plus f32 noise.
            assert!(
                (got - want).abs() <= 4e-3 * want,
                "[{r}, {c}]: {got} against {want}"
            );
        }
    }
}

#[test]
fn mma_tile_multiplies_with_the_ptx_fragment_layout() {
    if !gxx_available() {
        return;
    }
    let a: Vec<f32> = uniform(16 * 16, 3)
        .iter()
        .map(|v| bf16::from_f32(*v).to_f32())
        .collect();
    let b: Vec<f32> = uniform(8 * 16, 4)
        .iter()
        .map(|v| bf16::from_f32(*v).to_f32())
        .collect();
    let launch = Launch {
        kernel: print_samples::mma_tile(),
        grid: [1, 1, 1],
        scalars: BTreeMap::new(),
        inputs: [("a", bf16_bytes(&a)), ("b", bf16_bytes(&b))].into(),
        outputs: [("d", 16 * 8)].into(),
    };
    let d = f32_values(&run_on_host(&launch)["d"]);
    for row in 0..16 {
        for col in 0..8 {
            let want: f64 = (0..16)
                .map(|k| a[row * 16 + k] as f64 * b[col * 16 + k] as f64)
                .sum();
            let got = d[row * 8 + col] as f64;
            assert!(
                (got - want).abs() <= 1e-5,
                "d[{row}][{col}]: {got} against {want}"
            );
        }
    }
}

#[test]
fn scale_bf16x8_moves_eight_bf16_per_access() {
    if !gxx_available() {
        return;
    }
    // 1000 = 125 · 8 full vectors over two blocks; 1003 adds a scalar tail.
    for n in [1000usize, 1003] {
        let x: Vec<f32> = uniform(n, 5)
            .iter()
            .map(|v| bf16::from_f32(*v).to_f32())
            .collect();
        let launch = Launch {
            kernel: print_samples::scale_bf16x8(),
            grid: [n.div_ceil(512) as u32, 1, 1],
            scalars: [("n", n as i64), ("scale", 3)].into(),
            inputs: [("x", bf16_bytes(&x))].into(),
            outputs: [("out", n)].into(),
        };
        let out = bf16_values(&run_on_host(&launch)["out"]);
        for (i, (got, v)) in out.iter().zip(&x).enumerate() {
            assert_eq!(*got, bf16::from_f32(v * 3.0).to_f32(), "n={n}, out[{i}]");
        }
    }
}
