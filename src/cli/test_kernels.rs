//! `vl3c test-kernels`: every CUDA kernel template at the real and odd sizes, on a backend (the
//! emulator or a GPU, through one code path), against the reference executor (see
//! `vl3c_cuda::check`).

use anyhow::{bail, Result};
use vl3c_cuda::check::{try_run_all, Backend, Filter};
use vl3c_cuda::templates::cases;

#[derive(clap::Args)]
pub struct Args {
    /// Where the kernels run: `emu` (the kernel-IR emulator, with its memory, race and barrier
    /// checks), or `cuda` / `cuda:N` (a GPU; the selected cases' kernels are compiled with NVRTC
    /// for it first).
    #[arg(long, short = 'b', default_value = "emu")]
    backend: String,
    /// Only these op families (repeat, or separate with commas): rms_norm, attention_decode, …
    #[arg(long = "op", short = 'o', value_delimiter = ',')]
    ops: Vec<String>,
    /// Only cases whose label contains this text, e.g. `hidden=1536` or `dtype=bf16`.
    #[arg(long = "pattern", short = 'p')]
    pattern: Option<String>,
    /// List the cases instead of running them.
    #[arg(long)]
    list: bool,
    /// Print the reports as JSON on stdout (the table still goes to stderr).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let backend = Backend::parse(&args.backend).map_err(anyhow::Error::msg)?;
    let filter = Filter {
        ops: args.ops,
        pattern: args.pattern,
    };
    let all = cases();
    let known: std::collections::BTreeSet<&str> = all.iter().map(|c| c.template.op()).collect();
    if let Some(unknown) = filter.ops.iter().find(|o| !known.contains(o.as_str())) {
        bail!(
            "no op family `{unknown}` (known: {})",
            known.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if args.list {
        for c in all.iter().filter(|c| filter.accepts(c)) {
            println!("{}", c.label());
        }
        return Ok(());
    }
    if !all.iter().any(|c| filter.accepts(c)) {
        bail!("no case matches the filter");
    }
    let summary = try_run_all(&all, &filter, backend, &mut |note| eprintln!("{note}"))
        .map_err(anyhow::Error::msg)?;
    for r in &summary.reports {
        eprintln!("{}", r.line());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    eprintln!("{}", summary.closing_line());
    if summary.failed() > 0 {
        bail!(
            "{} of {} cases failed",
            summary.failed(),
            summary.reports.len()
        );
    }
    Ok(())
}
