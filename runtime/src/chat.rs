//! The chat prompt exactly as transformers' `VideoLlama3Processor` builds it (spec §5, §4.4):
//! the chat template renders messages with one `<|image_pad|>` / `<|video_pad|>` placeholder
//! per image / video, then the processor expands each placeholder (images into gh·gw/m² pads,
//! videos into the timestamped per-frame layout) and the tokenizer encodes the whole string.

use crate::tokenizer::{TextTokenizer, TokenizerError, IMAGE_PAD, VIDEO_PAD};

/// The system line the HF chat template adds when `add_system_prompt` is set.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help people understand images and videos.";

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("the prompt has {found} {token} placeholder(s) but {given} {what} given")]
    PlaceholderCount {
        token: &'static str,
        found: usize,
        given: usize,
        what: &'static str,
    },
    #[error("video {index}: {msg}")]
    Video { index: usize, msg: String },
    #[error("image {index}: {msg}")]
    Image { index: usize, msg: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

type Result<T> = std::result::Result<T, ChatError>;

/// One content item of a message, rendered in order by the template.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Image,
    Video,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: Vec<Content>,
}

impl Message {
    /// A user turn with the images first, then the text: what
    /// `{"role": "user", "content": [{"type": "image"}…, {"type": "text", …}]}` renders to.
    pub fn user_with_images(n_images: usize, text: &str) -> Message {
        let mut content = vec![Content::Image; n_images];
        content.push(Content::Text(text.to_string()));
        Message {
            role: "user".into(),
            content,
        }
    }

    pub fn text(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            content: vec![Content::Text(text.into())],
        }
    }
}

/// Renders the HF chat template (spec §5): optional DAMO system line (only before a first
/// message that is not itself a system message), then per message
/// `<|im_start|>{role}\n` + items (text verbatim, image `<|image_pad|>\n`, video
/// `<|video_pad|>\n`) + `<|im_end|>\n`; role "stream" uses `<|stream_start|>`/`<|stream_end|>`
/// and no newline. The generation prompt is `<|im_start|>assistant\n`.
pub fn render_chat(
    messages: &[Message],
    add_system_prompt: bool,
    add_generation_prompt: bool,
) -> String {
    let mut s = String::new();
    for (i, m) in messages.iter().enumerate() {
        if i == 0 && add_system_prompt && m.role != "system" {
            s.push_str("<|im_start|>system\n");
            s.push_str(DEFAULT_SYSTEM_PROMPT);
            s.push_str("<|im_end|>\n");
        }
        let id = if m.role == "stream" { "stream" } else { "im" };
        s.push_str(&format!("<|{id}_start|>{}\n", m.role));
        for c in &m.content {
            match c {
                Content::Text(t) => s.push_str(t),
                Content::Image => s.push_str("<|image_pad|>\n"),
                Content::Video => s.push_str("<|video_pad|>\n"),
            }
        }
        s.push_str(if id == "stream" {
            "<|stream_end|>"
        } else {
            "<|im_end|>\n"
        });
    }
    if add_generation_prompt {
        s.push_str("<|im_start|>assistant\n");
    }
    s
}

/// What the processor knows of one image: its grid and merge size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTokens {
    pub grid_thw: [i64; 3],
    pub merge_size: i64,
}

impl ImageTokens {
    /// LLM tokens of the image: t·gh·gw / m² (`replace_image_token`, integer division as in
    /// transformers).
    pub fn count(&self) -> Result<usize> {
        let [t, h, w] = self.grid_thw;
        let m = self.merge_size;
        if t < 1 || h < 1 || w < 1 || m < 1 {
            return Err(ChatError::Image {
                index: 0,
                msg: format!("bad grid {:?} / merge size {m}", self.grid_thw),
            });
        }
        Ok((t * h * w / (m * m)) as usize)
    }
}

/// What the processor knows of one video: per sampled frame its timestamp in seconds and how
/// many merged tokens survived pruning.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTokens {
    pub timestamps: Vec<f64>,
    pub kept_per_frame: Vec<usize>,
}

impl VideoTokens {
    /// Splits a video's compression mask (Σ over frames of gh·gw/m² merged tokens, frame-major)
    /// into equal per-frame chunks and counts the kept tokens, as `replace_video_token` does.
    pub fn from_mask(
        timestamps: Vec<f64>,
        mask: &[bool],
    ) -> std::result::Result<VideoTokens, String> {
        let t = timestamps.len();
        if t == 0 || !mask.len().is_multiple_of(t) {
            return Err(format!(
                "compression mask of {} entries does not split into {t} frames",
                mask.len()
            ));
        }
        let kept_per_frame = mask
            .chunks(mask.len() / t)
            .map(|f| f.iter().filter(|&&k| k).count())
            .collect();
        Ok(VideoTokens {
            timestamps,
            kept_per_frame,
        })
    }

    /// Timestamps when the frames are `frame_idx / fps` (`VideoMetadata.timestamps`); with
    /// pre-decoded frames the processor assumes fps = 1.
    pub fn timestamps_from_indices(indices: &[usize], fps: f64) -> Vec<f64> {
        indices.iter().map(|&i| i as f64 / fps).collect()
    }
}

/// Python's `f"{t:.1f}"`. Rust's `{:.1}` formats the exact binary value and breaks exact ties
/// to even, which is what Python does (0.25 → "0.2", 0.35 → "0.3" since 0.35 is below .35,
/// 2.45 → "2.5" since 2.45 is above); pinned against Python in runtime/tests/text.rs.
pub fn format_timestamp(t: f64) -> String {
    format!("{t:.1}")
}

/// The text that replaces one `<|video_pad|>` (spec §4.4):
/// `Time {t:.1f}s:` + `<|video_pad|>`·n per frame, joined by ",".
pub fn video_placeholder(video: &VideoTokens) -> String {
    video
        .timestamps
        .iter()
        .zip(&video.kept_per_frame)
        .map(|(&t, &n)| format!("Time {}s:{}", format_timestamp(t), VIDEO_PAD.repeat(n)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Expands placeholders in a rendered prompt like the processor: the k-th `<|image_pad|>` into
/// its image's token count of pads, the k-th `<|video_pad|>` into its video's layout. Counts must
/// match; transformers also counts placeholders the user typed into the text.
pub fn expand_placeholders(
    prompt: &str,
    images: &[ImageTokens],
    videos: &[VideoTokens],
) -> Result<String> {
    let found_images = prompt.matches(IMAGE_PAD).count();
    if found_images != images.len() {
        let (given, what) = (images.len(), "image(s)");
        return Err(ChatError::PlaceholderCount {
            token: IMAGE_PAD,
            found: found_images,
            given,
            what,
        });
    }
    let found_videos = prompt.matches(VIDEO_PAD).count();
    if found_videos != videos.len() {
        let (given, what) = (videos.len(), "video(s)");
        return Err(ChatError::PlaceholderCount {
            token: VIDEO_PAD,
            found: found_videos,
            given,
            what,
        });
    }
    for (index, v) in videos.iter().enumerate() {
        if v.timestamps.len() != v.kept_per_frame.len() || v.timestamps.is_empty() {
            let msg = format!(
                "{} timestamps for {} frames",
                v.timestamps.len(),
                v.kept_per_frame.len()
            );
            return Err(ChatError::Video { index, msg });
        }
    }
    let mut out = String::with_capacity(prompt.len());
    let (mut rest, mut next_image, mut next_video) = (prompt, 0, 0);
    loop {
        let i = rest.find(IMAGE_PAD);
        let v = rest.find(VIDEO_PAD);
        match (i, v) {
            (Some(i), v) if v.is_none_or(|v| i < v) => {
                out.push_str(&rest[..i]);
                let n = images[next_image].count().map_err(|e| match e {
                    ChatError::Image { msg, .. } => ChatError::Image {
                        index: next_image,
                        msg,
                    },
                    e => e,
                })?;
                out.push_str(&IMAGE_PAD.repeat(n));
                next_image += 1;
                rest = &rest[i + IMAGE_PAD.len()..];
            }
            (_, Some(v)) => {
                out.push_str(&rest[..v]);
                out.push_str(&video_placeholder(&videos[next_video]));
                next_video += 1;
                rest = &rest[v + VIDEO_PAD.len()..];
            }
            _ => break,
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The prompt ids transformers' processor returns for `messages` with these images and videos:
/// render, expand, encode without extra special tokens (as `apply_chat_template` does).
/// Encoding the expanded string (not splicing ids) keeps the text around the video pads, e.g.
/// `,Time 1.0s:`, tokenized as one piece, exactly as in transformers.
pub fn prompt_ids(
    tokenizer: &TextTokenizer,
    messages: &[Message],
    add_system_prompt: bool,
    images: &[ImageTokens],
    videos: &[VideoTokens],
) -> Result<Vec<u32>> {
    if !images.is_empty() {
        tokenizer.require_token(IMAGE_PAD)?;
    }
    if !videos.is_empty() {
        tokenizer.require_token(VIDEO_PAD)?;
    }
    let text = expand_placeholders(
        &render_chat(messages, add_system_prompt, true),
        images,
        videos,
    )?;
    Ok(tokenizer.encode(&text, false)?)
}
