//! `vl3c`: compile and run VideoLLaMA3 checkpoints.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "vl3c", version, about = "A compiler toolkit for VideoLLaMA3 (image and video LLM)", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask a checkpoint about images and videos: the answer streams to stdout, a summary goes to
    /// stderr. Several --prompt run the vision encoder once.
    Run(cli::run::Args),
    /// Chat about images and videos: one user turn per line of stdin, answers on stdout; the
    /// vision inputs are encoded once for the whole conversation.
    Chat(cli::chat::Args),
    /// Run transformers' forward pass on the reference executor: logits for every position,
    /// and optionally greedy generation.
    Eval(cli::eval::Args),
    /// Turn images or a video into the model's vision inputs, named as transformers names them
    /// (pixel_values…, or pixel_values_videos, video_grid_thw, video_merge_sizes, video_compression_mask).
    Preprocess(cli::preprocess::Args),
    /// Describe a checkpoint: layout, configuration, parameters by part, dtypes and IR op counts.
    Inspect(cli::inspect::Args),
    /// Compile a checkpoint into an engine directory (optimized graphs, plan, packed weights, manifest).
    Compile(cli::compile::Args),
    /// Export the optimized graphs as ONNX (vision, embedding and decoder graphs in
    /// onnxruntime-genai's split, weights as external data, genai_config.json).
    ///
    /// Writes, from the optimized IR, the graphs onnxruntime-genai, optimum and transformers.js
    /// split a vision-language model into, with one data file for every weight:
    ///
    ///   vision_m1.onnx, vision_m2.onnx  pixel_values [patches, 3·14·14], grid_thw [1, 3],
    ///                                   merge_sizes [1] → features [tokens, hidden] (vision encoder
    ///                                   and projector; merge size 1 for images, 2 for videos; _m2
    ///                                   also gives keep_mask [tokens], Differential Frame Pruning).
    ///                                   One image or one video per call.
    ///   embedding.onnx                  input_ids [1, seq], image_features, video_features,
    ///                                   video_compression_mask → inputs_embeds [1, seq, hidden]
    ///   decoder.onnx                    inputs_embeds, attention_mask [1, past + seq],
    ///                                   position_ids [1, seq], past_key_values.N.key/value
    ///                                   [1, kv_heads, past, head_dim] → logits [1, seq, vocab],
    ///                                   present.N.key/value
    ///   model.onnx.data                 the weights (ONNX external data, shared by all graphs)
    ///   genai_config.json               file and tensor names, head counts, token ids, every
    ///                                   graph's shapes with their symbol bounds, processor settings
    ///
    /// plus the tokenizer and processor configs, the optimized IR (graphs.vir) and manifest.json.
    /// Dynamic axes are named after the IR's symbols. Run them with onnxruntime:
    /// `tools/export/check_onnxruntime.py --export-dir OUT --fixture MODEL` is a complete
    /// generation loop; or build TensorRT engines with `vl3c compile --target tensorrt`.
    #[command(verbatim_doc_comment)]
    Export(cli::export::Args),
    /// Optimize the model's graphs (e-graph rewriting, per-layer scheduling) and report what changed.
    Opt(cli::opt::Args),
    /// Time the vision encoder, a prefill and greedy decoding on random inputs of the model's
    /// shapes, beside this machine's compute and memory-bandwidth limits.
    Bench(cli::bench::Args),
    /// Run every CUDA kernel template at the 2B/7B and odd sizes on a backend (the emulator,
    /// `--backend emu`, or a GPU, `--backend cuda[:N]`) against the reference executor, as
    /// llama.cpp's test-backend-ops does.
    TestKernels(cli::test_kernels::Args),
}

/// A closed stdout (`vl3c inspect … | head`) ends the process quietly, as it does for every Unix
/// tool; Rust's runtime ignores SIGPIPE, which turns the next `println!` into a panic.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, not clap's usage block: scripts read the first line of stderr.
            let rendered = e.to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see `vl3c --help`)", message.join(" "));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(a) => cli::run::run(a),
        Command::Chat(a) => cli::chat::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Preprocess(a) => cli::preprocess::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Opt(a) => cli::opt::run(a),
        Command::Compile(a) => cli::compile::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::TestKernels(a) => cli::test_kernels::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
