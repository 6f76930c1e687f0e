//! `vl3c bench`: times the three phases a user waits on (vision encoder on one image, prefill of a
//! text context, greedy decode) on random inputs of the model's shapes, and sets each beside the
//! physical limit of this machine (compute bound for vision and prefill, memory-bandwidth bound
//! for decode), so a number says how far from the hardware it is, not only how fast it is.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use vl3c_runtime::bench::{self as b, SplitMix, Work};
use vl3c_runtime::engine::{DeviceSpec, Engine};
use vl3c_runtime::exec::Tensor;
use vl3c_runtime::generate::StepModel;
use vl3c_runtime::model::{Model, NamedTensors};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory, run on the reference executor (optionally with --opt graphs).
    #[arg(long, required_unless_present = "engine", conflicts_with = "engine")]
    model: Option<PathBuf>,
    /// Engine directory written by `vl3c compile`.
    #[arg(long)]
    engine: Option<PathBuf>,
    /// Side of the square random image, in pixels (a multiple of the patch size).
    #[arg(long, default_value_t = 448)]
    image_size: usize,
    /// Text tokens in the prefill (random non-special ids, no image).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    context: u64,
    /// Greedy decode steps after the prefill; tok/s is over these steps only.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    decode_tokens: u64,
    /// Threads for the kernels and the probes (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where a CUDA engine runs: `cuda` (the first GPU, the default), `cuda:N`, or `emu` (the
    /// kernel-IR emulator with every check on: slow, for tests and machines without a GPU).
    #[arg(long, requires = "engine")]
    device: Option<DeviceSpec>,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs; every figure is their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repeat: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// With --model: run the optimized graphs (as `vl3c opt` produces them).
    #[arg(long, conflicts_with = "engine")]
    opt: bool,
    /// Cost model for --opt: cpu, cuda or tensorrt.
    #[arg(long, default_value = "cpu", requires = "opt")]
    target: String,
    /// Memory read bandwidth in GB/s for the decode bound (default: measured with independent
    /// vector accumulators on every thread: for a CPU engine, between every 4 decode steps
    /// over the first 1 GiB of the weights decode streams, best of 3 passes each, each stretch of
    /// steps set against the mean of the probes on its two sides; otherwise over a 1 GiB buffer
    /// after all runs, best of 5).
    #[arg(long)]
    bandwidth_gbs: Option<f64>,
    /// Peak GFLOP/s for the vision and prefill bounds (default: measured with the instruction the
    /// engine's GEMMs issue on this CPU: AMX `tdpbf16ps`, zmm `vdpbf16ps` or f32 FMA; the
    /// reference executor's: f32 FMA).
    #[arg(long)]
    peak_gflops: Option<f64>,
}

/// What the bench ran: the model and a label for the report.
struct Bench<'m> {
    model: &'m Model,
    /// The CPU engine behind `model`, whose weights the bandwidth probe reads between decode
    /// steps; `None` where nothing is probed (no engine, or `--bandwidth-gbs` given).
    probed: Option<&'m Engine>,
    backend: &'static str,
    /// Stored dtype of each weight, for the bytes a decode step reads.
    dtype_of: Box<dyn Fn(&str) -> vl3c_ir::DType + 'm>,
}

/// Seconds of one vision, one prefill and the decode steps of one run.
struct Run {
    vision_s: f64,
    prefill_s: f64,
    decode_s: f64,
    /// Read bandwidth over the decode steps (GB/s), where the engine can measure it: what
    /// the steps would have taken at the bandwidth probed beside each stretch of them,
    /// expressed as one rate (steps ÷ Σ stretch steps ÷ its bandwidth, so a slow spell
    /// weighs by the steps it held).
    read_gbs: Option<f64>,
}

/// What the probes between a CPU engine's decode steps read of its decode weights, and how
/// many passes each keeps the best of: a third of a 2B decode step's 3.1 GB, about 0.1 s.
const PROBE_BYTES: usize = 1 << 30;
const PROBE_PASSES: usize = 3;
/// Decode steps between two probes. Bandwidth on a shared VM moves by a third within the
/// seconds of one run's decode, so a probe on each side of the whole decode can miss a spell
/// by tens of percent; a 2B stretch of 4 steps is about 0.35 s.
const PROBE_EVERY: usize = 4;

pub fn run(args: Args) -> Result<()> {
    for (flag, v) in [
        ("--bandwidth-gbs", args.bandwidth_gbs),
        ("--peak-gflops", args.peak_gflops),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            bail!("{flag} must be a positive number");
        }
    }
    let threads = super::limits::threads(args.threads)?;
    // Read by rayon's global pool (the reference executor's matmuls), which nothing has started yet.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    // The prefill and the decode steps must fit the model's positions: checked (in u128, so no
    // sum of two u64 flags wraps) before the ids, the engine or its KV cache are allocated.
    let dir = args
        .engine
        .as_ref()
        .or(args.model.as_ref())
        .expect("clap requires --model or --engine");
    if let Some(engine) = &args.engine {
        super::limits::check_engine_dir(engine)?;
    }
    let positions = super::limits::model_positions(dir)?;
    let needed = args.context as u128 + args.decode_tokens as u128;
    if needed > positions as u128 {
        bail!(
            "--context {} and --decode-tokens {} need {needed} positions, more than the model's {positions} (max_position_embeddings)",
            args.context,
            args.decode_tokens
        );
    }
    let (context, decode_tokens) = (args.context as usize, args.decode_tokens as usize);

    let engine = match &args.engine {
        // The cache holds the prompt and the decoded tokens (one spare position where it fits).
        Some(dir) => Some(
            Engine::load_on(
                dir,
                (context + decode_tokens + 1).min(positions),
                threads,
                args.device.unwrap_or_default(),
                &mut |_, _, _| {},
            )
            .with_context(|| format!("cannot load engine {}", dir.display()))?,
        ),
        None => None,
    };
    let opened;
    let bench = match &engine {
        Some(engine) => {
            // A CUDA engine stores its weights as the graphs compute them, in f32 (see its plan).
            let declared = if engine.manifest().target == "cuda" {
                vl3c_ir::DType::F32
            } else {
                engine.model().config().declared_dtype
            };
            Bench {
                model: engine.model(),
                probed: Some(engine).filter(|_| args.bandwidth_gbs.is_none()),
                backend: "engine",
                dtype_of: Box::new(move |_| declared),
            }
        }
        None => {
            opened = open_model(&args)?;
            let declared = opened.config().declared_dtype;
            let ckpt = opened
                .checkpoint()
                .expect("a model opened from a checkpoint has one");
            Bench {
                model: &opened,
                probed: None,
                backend: if args.opt {
                    "reference executor, optimized graphs"
                } else {
                    "reference executor"
                },
                dtype_of: Box::new(move |n| ckpt.weight_dtype(n).unwrap_or(declared)),
            }
        }
    };
    let cfg = bench.model.config();
    let mut rng = SplitMix::new(0x5eed);
    // The image's patches are bounded before its pixels are allocated.
    let side = args.image_size / cfg.vision.patch_size;
    let max_patches = cfg.vision_limits.image_max_patches;
    if max_patches > 0
        && side
            .checked_mul(side)
            .is_none_or(|patches| patches > max_patches)
    {
        bail!(
            "--image-size {} gives {side}x{side} patches, more than the model's {max_patches} (its processor's max_pixels)",
            args.image_size
        );
    }
    let (pixels, grid) =
        b::random_image(cfg, args.image_size, &mut rng).map_err(anyhow::Error::msg)?;
    let patches = pixels.shape[0];
    let ids = b::random_ids(cfg, context, &mut rng);

    let mut runs = Vec::new();
    for i in 0..args.warmup + args.repeat as usize {
        let r = once(&bench, &pixels, &grid, &ids, decode_tokens)?;
        if i >= args.warmup {
            runs.push(r);
        }
    }
    let med = |f: fn(&Run) -> f64| b::median(&runs.iter().map(f).collect::<Vec<_>>());
    let (vision_s, prefill_s, decode_s) = (
        med(|r| r.vision_s),
        med(|r| r.prefill_s),
        med(|r| r.decode_s),
    );
    let decode_tok_s = decode_tokens as f64 / decode_s;
    let peak_rss = b::peak_rss_bytes().unwrap_or(0);
    if vl3c_runtime::exec::profile::enabled() {
        eprint!(
            "per-op time over all {} runs (VL3C_PROFILE):\n{}",
            runs.len() + args.warmup,
            vl3c_runtime::exec::profile::report()
        );
    }

    // A CUDA engine's limits are its device's: measured there, or none on the emulator.
    let device = engine_device(&engine)?;
    let measured_on = match &device {
        Some((name, _)) => format!("measured on {name}"),
        None => "measured".into(),
    };
    let device_limits = device.as_ref().map(|(_, l)| l.clone());
    let per_run_gbs = runs
        .iter()
        .map(|r| r.read_gbs)
        .collect::<Option<Vec<f64>>>()
        .filter(|p| !p.is_empty());
    // Probes run after the model so their buffer does not count in the model's peak RSS.
    let (bandwidth, bw_source) = match (args.bandwidth_gbs, &device_limits) {
        (Some(v), _) => (v, "given".to_string()),
        (None, Some(Some(l))) => (
            l.bandwidth_gbs,
            format!("device-to-device copy, {measured_on}"),
        ),
        (None, Some(None)) => (f64::NAN, "not measured on the emulator".into()),
        // Bandwidth on a shared VM drifts by half between seconds, so a CPU engine's bound is
        // measured beside its decode: between its steps, over the weights they stream.
        (None, None) => match per_run_gbs {
            Some(ref probes) => (
                b::median(probes),
                format!(
                    "{measured_on} between every {PROBE_EVERY} decode steps over the first {} MiB of decode weights, best of {PROBE_PASSES} passes; median of runs",
                    PROBE_BYTES >> 20
                ),
            ),
            _ => (
                b::measure_bandwidth_gbs(1 << 30, threads),
                measured_on.clone(),
            ),
        },
    };
    // The engine's bf16 GEMMs run on AMX where the CPU has it, so that is their peak; the
    // reference executor's matmuls are f32.
    let (peak, peak_source, peak_kind) =
        match (args.peak_gflops, &device_limits, args.engine.is_some()) {
            (Some(v), _, _) => (v, "given".to_string(), "matmul"),
            (None, Some(Some(l)), _) => (l.peak_gflops, measured_on.clone(), l.peak_kind),
            (None, Some(None), _) => (f64::NAN, "not measured on the emulator".into(), "matmul"),
            (None, None, true) => {
                let (g, kind) = b::measure_matmul_peak_gflops(threads);
                (g, measured_on.clone(), kind)
            }
            (None, None, false) => {
                let (g, kind) = b::measure_peak_gflops(threads);
                (g, measured_on.clone(), kind)
            }
        };
    let work = Work::of(cfg, patches, context, &*bench.dtype_of);
    let bounds = Bounds {
        vision_s: work.vision_flops / (peak * 1e9),
        prefill_s: work.prefill_flops / (peak * 1e9),
        decode_tok_s: bandwidth * 1e9 / work.decode_bytes_per_token,
    };
    // Decode against bandwidth probed beside it is paired run by run: a ratio of two medians
    // would set one run's decode against another run's spell of bandwidth.
    let decode_of_bound_runs: Option<Vec<f64>> = per_run_gbs.map(|probes| {
        runs.iter()
            .zip(probes)
            .map(|(r, gbs)| {
                decode_tokens as f64 * work.decode_bytes_per_token / (gbs * 1e9) / r.decode_s
            })
            .collect()
    });
    let decode_of_bound = decode_of_bound_runs
        .as_deref()
        .map_or(decode_tok_s / bounds.decode_tok_s, b::median);
    let source = args
        .engine
        .as_ref()
        .or(args.model.as_ref())
        .expect("clap requires one");

    if args.json {
        let all = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
        let out = json!({
            "vision_s": vision_s,
            "prefill_s": prefill_s,
            "decode_tok_s": decode_tok_s,
            "peak_rss_bytes": peak_rss,
            "runs": {
                "vision_s": all(|r| r.vision_s),
                "prefill_s": all(|r| r.prefill_s),
                "decode_tok_s": runs.iter().map(|r| decode_tokens as f64 / r.decode_s).collect::<Vec<_>>(),
                "bandwidth_gbs": runs.iter().map(|r| r.read_gbs).collect::<Vec<_>>(),
                "decode_of_bound": decode_of_bound_runs,
            },
            "decode_of_bound": decode_of_bound,
            "limits": {
                "bandwidth_gbs": bandwidth,
                "bandwidth_source": bw_source,
                "peak_gflops": peak,
                "peak_gflops_source": peak_source,
                "peak_gflops_kind": peak_kind,
                "vision_flops": work.vision_flops,
                "prefill_flops": work.prefill_flops,
                "decode_bytes_per_token": work.decode_bytes_per_token,
                "vision_s_bound": bounds.vision_s,
                "prefill_s_bound": bounds.prefill_s,
                "decode_tok_s_bound": bounds.decode_tok_s,
            },
            "config": {
                "backend": bench.backend,
                "device": device.as_ref().map(|(name, _)| name.clone()).unwrap_or_else(|| format!("cpu ({threads} threads)")),
                "source": source.display().to_string(),
                "image_size": args.image_size,
                "patches": patches,
                "context": context,
                "decode_tokens": decode_tokens,
                "threads": threads,
                "warmup": args.warmup,
                "repeat": args.repeat,
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let on = device
        .as_ref()
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| format!("{threads} threads"));
    println!(
        "bench: {} ({}), {on}, median of {} after {} warmup",
        bench.backend,
        source.display(),
        args.repeat,
        args.warmup
    );
    println!(
        "{:<8} {:>15} {:>15} {:>9}  work",
        "phase", "measured", "bound", "of bound"
    );
    let pct = |x: f64| {
        if x.is_finite() {
            format!("{:.1}%", 100.0 * x)
        } else {
            "n/a".into()
        }
    };
    println!(
        "{:<8} {:>15} {:>15} {:>9}  {patches} patches ({}²), {:.2} GFLOP",
        "vision",
        secs(vision_s),
        secs(bounds.vision_s),
        pct(bounds.vision_s / vision_s),
        args.image_size,
        work.vision_flops / 1e9
    );
    println!(
        "{:<8} {:>15} {:>15} {:>9}  {context} tokens, {:.2} GFLOP",
        "prefill",
        secs(prefill_s),
        secs(bounds.prefill_s),
        pct(bounds.prefill_s / prefill_s),
        work.prefill_flops / 1e9
    );
    println!(
        "{:<8} {:>15} {:>15} {:>9}  {decode_tokens} tokens, {:.1} MB read per token",
        "decode",
        format!("{decode_tok_s:.2} tok/s"),
        if bounds.decode_tok_s.is_finite() {
            format!("{:.2} tok/s", bounds.decode_tok_s)
        } else {
            "n/a".into()
        },
        pct(decode_of_bound),
        work.decode_bytes_per_token / 1e6
    );
    if decode_of_bound_runs.is_some() {
        println!(
            "decode's % of bound: median over runs of each run's decode against the bandwidth probed beside its steps"
        );
    }
    println!("peak RSS {:.1} MB", peak_rss as f64 / 1e6);
    if bandwidth.is_finite() && peak.is_finite() {
        println!(
            "limits: {bandwidth:.1} GB/s read bandwidth ({bw_source}), {peak:.1} GFLOP/s {peak_kind} peak ({peak_source}), {on}"
        );
    } else {
        println!("limits: not measured on the emulator (its time says nothing about a GPU's)");
    }
    Ok(())
}

/// Seconds with a unit that keeps three significant digits for tiny and real models alike.
fn secs(x: f64) -> String {
    match x {
        x if !x.is_finite() => "n/a".into(),
        x if x >= 1.0 => format!("{x:.3} s"),
        x if x >= 1e-3 => format!("{:.2} ms", x * 1e3),
        x => format!("{:.1} µs", x * 1e6),
    }
}

/// A CUDA engine's device and its limits (`None` inside: the emulator); `None` for CPU runs.
fn engine_device(
    engine: &Option<Engine>,
) -> Result<Option<(String, Option<vl3c_cuda::run::DeviceLimits>)>> {
    let Some(engine) = engine else {
        return Ok(None);
    };
    match engine.device_limits() {
        None => Ok(None),
        Some(Ok(limits)) => Ok(Some((engine.device().to_string(), limits))),
        Some(Err(e)) => bail!("measuring {}: {e}", engine.device()),
    }
}

struct Bounds {
    vision_s: f64,
    prefill_s: f64,
    decode_tok_s: f64,
}

/// One timed run: vision + projector on the image, prefill of `ids`, then `decode_tokens` greedy
/// steps (the first token comes from the prefill's logits, so every timed step is a decode).
fn once(
    bench: &Bench,
    pixels: &Tensor,
    grid: &Tensor,
    ids: &[i64],
    decode_tokens: usize,
) -> Result<Run> {
    let merge = Tensor::i64(vec![1], vec![1]);
    let start = Instant::now();
    let embeds = b::image_embed(bench.model, pixels, grid, Some(&merge))?;
    let vision_s = start.elapsed().as_secs_f64();
    std::hint::black_box(embeds);

    let inputs: NamedTensors = [(
        "input_ids".to_string(),
        Tensor::i64(vec![1, ids.len()], ids.to_vec()),
    )]
    .into();
    let start = Instant::now();
    let (last, mut state) = StepModel::prefill(bench.model, &inputs)?;
    let prefill_s = start.elapsed().as_secs_f64();

    let mut next = argmax(&last);
    let probe = || {
        bench
            .probed
            .and_then(|e| e.weights_read_gbs(PROBE_BYTES, PROBE_PASSES))
    };
    let mut before = probe();
    let (mut decode_s, mut steps_over_gbs) = (0.0, Some(0.0));
    let mut left = decode_tokens;
    while left > 0 {
        let steps = left.min(PROBE_EVERY);
        let start = Instant::now();
        for _ in 0..steps {
            next = argmax(&StepModel::decode_step(bench.model, &mut state, next)?);
        }
        decode_s += start.elapsed().as_secs_f64();
        left -= steps;
        let after = probe();
        let gbs = before.zip(after).map(|(a, b)| (a + b) / 2.0);
        steps_over_gbs = steps_over_gbs
            .zip(gbs)
            .map(|(sum, g)| sum + steps as f64 / g);
        before = after;
    }
    let read_gbs = steps_over_gbs.map(|s| decode_tokens as f64 / s);
    Ok(Run {
        vision_s,
        prefill_s,
        decode_s,
        read_gbs,
    })
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn open_model(args: &Args) -> Result<Model> {
    let dir = args
        .model
        .as_ref()
        .expect("clap requires --model or --engine");
    let mut model = Model::open(dir)?;
    if args.opt {
        let target = super::opt::target(&args.target)?;
        let mut graphs = model.graphs().clone();
        let names = ["vision_m1", "vision_m2", "projector", "prefill", "decode"];
        super::opt::optimize_model(&mut graphs, &names, &target)?;
        model.set_graphs(graphs);
    }
    Ok(model)
}
