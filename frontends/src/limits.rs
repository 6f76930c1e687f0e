//! Limits before allocation: the bounds on every size vl3c takes from a file or an argument, in
//! one place, and the helpers that read a file only when it is a regular file within its bound.
//!
//! A size read from config.json, a preprocessor config, a file's length or a flag is checked
//! against its bound *before* anything is allocated from it. Without the check a corrupt or
//! hostile value (10^9 layers, a hidden size of 2^62, a pixel budget of 10^12, `/dev/zero` as an
//! image) exhausts memory, overflows `usize` or hangs, instead of giving one line that names the
//! input.
//!
//! Every bound is generous: about ten times the largest real VideoLLaMA3 / Qwen2.5 value, rounded
//! up to a power of two, so no real checkpoint is refused. Products of bounded values (a weight's
//! element count, layers × heads × head_dim × positions of a KV cache) fit in `u64` with room to
//! spare.
//!
//! | quantity | bound | largest real value |
//! |---|---|---|
//! | LLM / vision `num_hidden_layers` | 1024 | 80 (Qwen2.5-72B), 27 (SigLIP-so400m) |
//! | `hidden_size` (LLM, vision) | 65536 | 8192 (Qwen2.5-72B), 1152 (SigLIP) |
//! | `intermediate_size` | 262144 | 29568 (Qwen2.5-72B), 4304 (SigLIP) |
//! | `vocab_size` | 2^21 = 2097152 | 152064 (Qwen2.5) |
//! | `num_attention_heads`, `num_key_value_heads` | 1024 | 64 (Qwen2.5-72B) |
//! | `head_dim` | 1024 | 128 (Qwen2.5), 72 (SigLIP) |
//! | `max_position_embeddings` | 2^21 = 2097152 | 131072 (Qwen2.5 with YaRN), 32768 native |
//! | vision `patch_size`, processor `patch_size` | 256 | 14 |
//! | vision `num_channels` | 16 | 3 |
//! | processor pixel counts (`min/max_pixels`, `size.*`, `min/max_tokens`·patch²) | 2^25 = 33554432 | 3211264 (DAMO `max_tokens` 16384 × 14²) |
//! | all frames of one video after resizing | 2^28 = 268435456 | 18063360 (180 frames × 128 tokens × 28²) |
//! | processor `merge_size`, `temporal_patch_size` | 16 | 2 |
//! | video frames (`min/max_frames`, `num_frames`, `--num-frames`) | 2048 | 180 |
//! | `--max-context`, `--max-new-tokens`, `bench --context/--decode-tokens` | the model's `max_position_embeddings` | |
//! | `--threads` | 1024 | the machine's cores |
//!
//! | file (read whole) | bound | typical size |
//! |---|---|---|
//! | config.json, preprocessor / generation / tokenizer configs | 16 MiB | 2 KB |
//! | `model.safetensors.index.json`, an engine's manifest.json | 64 MiB | 100 KB |
//! | tokenizer.json | 256 MiB | 7 MB (Qwen2.5), 35 MB (large multilingual vocabularies) |
//! | an image (PNG, JPEG) | 512 MiB | a few MB |
//! | an animated GIF (decoded from memory) | 2 GiB | a few MB |
//! | `eval --inputs` safetensors | 8 GiB | a few MB (pixels of a few images or one video) |
//! | one line of `chat`'s stdin | 1 MiB | a sentence |
//! | an engine's graphs.vir, plan.json, kernels.o, CUDA kernels and cubins | 1 GiB | 1 MB |
//! | an engine's weights.bin | the size its manifest lists | the checkpoint's size |
//!
//! Weights are memory-mapped, not read, so a checkpoint's safetensors files have no bound beyond
//! being regular files.

use std::io::{BufRead, Read};
use std::path::Path;

/// `num_hidden_layers` of the LLM and of the vision encoder.
pub const MAX_LAYERS: usize = 1 << 10;
/// `hidden_size` of the LLM and of the vision encoder.
pub const MAX_HIDDEN: usize = 1 << 16;
/// `intermediate_size` of the LLM's and the vision encoder's MLPs.
pub const MAX_INTERMEDIATE: usize = 1 << 18;
/// `vocab_size`.
pub const MAX_VOCAB: usize = 1 << 21;
/// `num_attention_heads` and `num_key_value_heads`.
pub const MAX_HEADS: usize = 1 << 10;
/// `head_dim` (given, or hidden_size / num_attention_heads).
pub const MAX_HEAD_DIM: usize = 1 << 10;
/// `max_position_embeddings`: the most positions any context may hold.
pub const MAX_POSITIONS: usize = 1 << 21;
/// Spatial patch size of the vision encoder and of the processors.
pub const MAX_PATCH: usize = 1 << 8;
/// Image channels of the vision encoder.
pub const MAX_CHANNELS: usize = 16;
/// Any pixel count of a processor config: an image's budget, a video's whole budget, a frame's
/// minimum.
pub const MAX_PIXELS: usize = 1 << 25;
/// The pixels of all of one video's frames after resizing (each frame keeps at least the
/// config's minimum, so they can pass the shared budget): 2^28, about 15 times the 18.1M of 180
/// frames at the default 128-token minimum.
pub const MAX_VIDEO_PIXELS: usize = 1 << 28;
/// `merge_size` and `temporal_patch_size` of the processors.
pub const MAX_MERGE: usize = 16;
/// Frames one video may contribute.
pub const MAX_FRAMES: usize = 2048;

/// `--threads`: each thread costs a stack, so a typo (10^9) must not start them all.
pub const MAX_THREADS: usize = 1024;

const MIB: u64 = 1 << 20;
/// config.json, preprocessor_config.json, video_preprocessor_config.json, generation_config.json.
pub const MAX_CONFIG_BYTES: u64 = 16 * MIB;
/// model.safetensors.index.json and an engine's manifest.json.
pub const MAX_INDEX_BYTES: u64 = 64 * MIB;
/// tokenizer.json.
pub const MAX_TOKENIZER_BYTES: u64 = 256 * MIB;
/// An image file.
pub const MAX_IMAGE_BYTES: u64 = 512 * MIB;
/// Pixels of one decoded image, checked on the header's size before decoding: Pillow's
/// `DecompressionBombError` bound (`2 * Image.MAX_IMAGE_PIXELS`, about 179 Mpx), so a file that
/// transformers' `load_image` opens is never refused and a small file claiming a huge size is.
pub const MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;
/// An animated GIF, which is decoded from memory.
pub const MAX_GIF_BYTES: u64 = 2048 * MIB;
/// The safetensors file of `eval --inputs`.
pub const MAX_INPUTS_BYTES: u64 = 8192 * MIB;
/// One line (one user turn) of `chat`'s stdin.
pub const MAX_LINE_BYTES: u64 = MIB;
/// An engine's file other than its weights: graphs.vir, plan.json, kernels.o, the CUDA
/// kernels and cubins (a 2B engine's largest, graphs.vir, is about 1 MB). An engine's
/// `weights.bin` is bounded by the size its manifest lists, checked before it is read.
pub const MAX_ENGINE_FILE_BYTES: u64 = 1024 * MIB;

/// `value` of `field` within `[1, max]`, or a message that names the field, the bound and why.
pub fn check_size(field: &str, value: usize, max: usize) -> Result<(), String> {
    if value > max {
        return Err(format!(
            "{field} is {value}, more than vl3c accepts (at most {max}, about ten times the largest real VideoLLaMA3/Qwen2.5 value)"
        ));
    }
    Ok(())
}

/// A byte count for messages: "12.0 GiB", "512 MiB", "300 bytes".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

fn limit_error(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// What a path is when it is not a regular file, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Checks, from its metadata alone (nothing is opened, so a named pipe cannot block), that `path`
/// is a regular file (symbolic links followed) of at most `max_bytes`; returns its length.
/// `what` says what a valid input is ("an image (PNG or JPEG)", "tokenizer.json"). The error is
/// an io error whose message says what is wrong and what would be valid, for the caller to
/// prefix with the path as its other io errors are.
pub fn check_file(path: &Path, max_bytes: u64, what: &str) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let kind = kind_of(&meta);
        let kind = if kind.starts_with("not") {
            kind.to_string()
        } else {
            format!("{kind}, not a regular file")
        };
        return Err(limit_error(format!("{kind}; expected {what}")));
    }
    let len = meta.len();
    if len > max_bytes {
        let size = if len >= 1024 {
            format!("{} ({len} bytes)", human_bytes(len))
        } else {
            human_bytes(len)
        };
        return Err(limit_error(format!(
            "{size}, too large for {what}: vl3c reads at most {}",
            human_bytes(max_bytes)
        )));
    }
    Ok(len)
}

/// The whole of `path`, a regular file of at most `max_bytes` (see [`check_file`]). The read
/// stops one byte past the bound, so a file that grows meanwhile or under-reports its length
/// (files in /proc) cannot exhaust memory either.
pub fn read_bounded(path: &Path, max_bytes: u64, what: &str) -> std::io::Result<Vec<u8>> {
    let len = check_file(path, max_bytes, what)?;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(limit_error(format!(
            "more than {} while being read, too large for {what}",
            human_bytes(max_bytes)
        )));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_bounded_to_string(path: &Path, max_bytes: u64, what: &str) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max_bytes, what)?)
        .map_err(|_| limit_error(format!("not UTF-8 text; expected {what}")))
}

/// The next line of `reader` without its line ending (`\n` or `\r\n`), `None` at the end of
/// input. A line longer than `max_bytes` is an error once `max_bytes + 1` bytes have been read,
/// so input without newlines (`/dev/zero`) cannot exhaust memory.
pub fn read_line_bounded(
    reader: &mut impl BufRead,
    max_bytes: u64,
    what: &str,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(max_bytes.saturating_add(1))
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() as u64 > max_bytes {
        return Err(limit_error(format!(
            "a line longer than {}, the most one {what} may be",
            human_bytes(max_bytes)
        )));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| limit_error(format!("{what} is not UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_bound_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_bounded(&p, 2, "a config").unwrap(), b"{}");
        let e = read_bounded(&p, 1, "a config").unwrap_err().to_string();
        assert_eq!(
            e,
            "2 bytes, too large for a config: vl3c reads at most 1 bytes"
        );
    }

    #[test]
    fn devices_and_directories_are_refused_unopened() {
        let e = read_bounded(Path::new("/dev/zero"), 10, "an image")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "a character device, not a regular file; expected an image"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = check_file(dir.path(), 10, "an image")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "a directory, not a regular file; expected an image");
    }

    #[test]
    fn proc_files_that_report_no_length_are_still_bounded() {
        let p = Path::new("/proc/self/status");
        if p.exists() {
            assert!(read_bounded(p, 4, "a status").is_err());
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = std::io::Cursor::new(b"hello\r\nworld\n\nxxxxxxxx".to_vec());
        assert_eq!(
            read_line_bounded(&mut r, 7, "a message")
                .unwrap()
                .as_deref(),
            Some("hello")
        );
        assert_eq!(
            read_line_bounded(&mut r, 7, "a message")
                .unwrap()
                .as_deref(),
            Some("world")
        );
        assert_eq!(
            read_line_bounded(&mut r, 7, "a message")
                .unwrap()
                .as_deref(),
            Some("")
        );
        assert!(read_line_bounded(&mut r, 7, "a message").is_err());
        let mut zeros = std::io::repeat(0).take(1 << 30);
        let mut zeros = std::io::BufReader::new(&mut zeros);
        assert!(read_line_bounded(&mut zeros, 1024, "a message").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(300), "300 bytes");
    }
}
