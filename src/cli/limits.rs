//! The CLI's side of "limits before allocation" (the bounds themselves are in
//! `vl3c_frontends::limits`): flags that size the KV cache, the generation or the thread pool
//! are checked against the model's `max_position_embeddings` and the bounds, with checked
//! arithmetic, before an engine is loaded or anything is allocated from them; and an engine
//! directory's files are checked to be regular files of the sizes its manifest records before
//! the engine loader reads them whole.

use anyhow::{bail, Context, Result};
use std::path::Path;
use vl3c_frontends::limits::{self, MAX_FRAMES, MAX_THREADS};
use vl3c_frontends::ModelConfig;

/// `max_position_embeddings` of the checkpoint or engine in `dir` (an engine carries a copy of
/// config.json): the most positions any context may hold.
pub fn model_positions(dir: &Path) -> Result<usize> {
    Ok(ModelConfig::from_dir(dir)?.text.max_position_embeddings)
}

/// Positions a prompt of `prompt` tokens and `new_tokens` generated tokens occupy: the last
/// generated token is sampled, never fed back, so it takes no position.
pub fn positions_needed(prompt: usize, new_tokens: usize) -> Option<usize> {
    prompt.checked_add(new_tokens.saturating_sub(1))
}

/// `--max-new-tokens N` after a prompt of `prompt` tokens (`None`: the prompt's length is not
/// known exactly yet) within the model's `positions`.
pub fn check_new_tokens(new_tokens: usize, prompt: Option<usize>, positions: usize) -> Result<()> {
    let limit = "max_position_embeddings";
    if new_tokens > positions {
        bail!("--max-new-tokens {new_tokens} is more than the model's {positions} positions ({limit})");
    }
    let Some(prompt) = prompt else { return Ok(()) };
    if prompt > positions {
        bail!("the prompt is {prompt} tokens, more than the model's {positions} positions ({limit}); a shorter prompt or fewer images and frames would fit");
    }
    match positions_needed(prompt, new_tokens) {
        Some(needed) if needed <= positions => Ok(()),
        _ => bail!(
            "--max-new-tokens {new_tokens}: a prompt of {prompt} tokens and {new_tokens} new tokens need {} positions, more than the model's {positions} ({limit}); at most {} new tokens fit",
            prompt as u128 + new_tokens as u128 - 1,
            positions - prompt + 1
        ),
    }
}

/// The KV cache's positions: `--max-context` when given (at most the model's `positions`), else
/// `wanted` (computed by the caller with saturating arithmetic) capped at `positions`.
pub fn context(max_context: Option<usize>, wanted: usize, positions: usize) -> Result<usize> {
    match max_context {
        Some(0) => bail!("--max-context 0 holds no position; give at least 1 (at most the model's {positions}, max_position_embeddings)"),
        Some(c) if c > positions => {
            bail!("--max-context {c} is more than the model's {positions} positions (max_position_embeddings); give at most {positions}")
        }
        Some(c) => Ok(c),
        None => Ok(wanted.clamp(1, positions)),
    }
}

/// `--threads`: 0 means every core; more than [`MAX_THREADS`] is refused before any is started.
pub fn threads(flag: usize) -> Result<usize> {
    if flag > MAX_THREADS {
        bail!("--threads {flag} is more threads than vl3c starts (at most {MAX_THREADS}; 0 uses every core)");
    }
    Ok(if flag > 0 {
        flag
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    })
}

/// `--num-frames`, bounded before any frame is chosen.
pub fn check_num_frames(num_frames: Option<usize>) -> Result<()> {
    match num_frames {
        Some(0) => bail!("--num-frames 0 samples nothing; give 1 to {MAX_FRAMES} frames"),
        Some(n) if n > MAX_FRAMES => bail!(
            "--num-frames {n} is more frames than vl3c takes from one video (at most {MAX_FRAMES})"
        ),
        _ => Ok(()),
    }
}

/// The engine in `dir` before the loader reads its files whole: manifest.json a regular file
/// within [`limits::MAX_INDEX_BYTES`], and every file it lists a regular file no longer than
/// the manifest records (a device or a pipe in place of plan.json would never end; a file
/// longer than recorded is corrupt, and reading it first would only allocate it). Anything
/// else wrong with the engine is the loader's to report.
pub fn check_engine_dir(dir: &Path) -> Result<()> {
    let manifest = dir.join(vl3c_engine::MANIFEST);
    if !manifest.exists() {
        return Ok(()); // the loader says the directory is not an engine
    }
    let bytes = limits::read_bounded(
        &manifest,
        limits::MAX_INDEX_BYTES,
        "an engine manifest (JSON)",
    )
    .with_context(|| format!("{}: cannot read", manifest.display()))?;
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(());
    };
    let Some(files) = value.get("files").and_then(|f| f.as_object()) else {
        return Ok(());
    };
    for (name, entry) in files {
        let Some(recorded) = entry.get("bytes").and_then(|b| b.as_u64()) else {
            continue;
        };
        if let Err(why) = vl3c_engine::check_relative(name) {
            bail!("{}: lists file `{name}`, which {why}", manifest.display());
        }
        let path = dir.join(name);
        if !path.exists() {
            continue; // the loader names a missing file
        }
        limits::check_file(&path, u64::MAX, "an engine file written by `vl3c compile`")
            .with_context(|| format!("{}", path.display()))?;
        let len = std::fs::metadata(&path)
            .with_context(|| format!("{}", path.display()))?
            .len();
        if len > recorded {
            bail!(
                "{}: has {len} bytes, the manifest says {recorded} (engine corrupted)",
                path.display()
            );
        }
    }
    Ok(())
}
