//! The text tokenizer of a checkpoint: its `tokenizer.json` loaded with the `tokenizers` crate
//! (the same Rust code transformers' fast tokenizers run, so ids match transformers exactly),
//! the chat special tokens by name, and the end-of-sequence ids.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vl3c_frontends::limits;

/// Chat special tokens of Qwen2 / VideoLLaMA3 (spec §5).
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";
pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const VIDEO_PAD: &str = "<|video_pad|>";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("no tokenizer.json in {}: the runtime needs the fast-tokenizer file of the checkpoint", dir.display())]
    Missing { dir: PathBuf },
    #[error("cannot load tokenizer {}: {msg}", path.display())]
    Load { path: PathBuf, msg: String },
    #[error("invalid {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("tokenizer {} has no token {token}", path.display())]
    MissingToken { path: PathBuf, token: String },
    #[error("cannot encode text: {0}")]
    Encode(String),
    #[error("cannot decode token ids: {0}")]
    Decode(String),
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// Ids of the special tokens the runtime uses; `None` where the vocabulary lacks the token
/// (the DAMO layout, for example, has `<image>` instead of `<|image_pad|>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    pub im_start: Option<u32>,
    pub im_end: Option<u32>,
    pub end_of_text: Option<u32>,
    pub image_pad: Option<u32>,
    pub video_pad: Option<u32>,
}

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    special: SpecialTokens,
    eos_ids: Vec<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("special", &self.special)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, and the eos ids from `dir/config.json` and
    /// `dir/generation_config.json` where present.
    pub fn from_dir(dir: &Path) -> Result<TextTokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(TokenizerError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let load = |msg: String| TokenizerError::Load {
            path: path.clone(),
            msg,
        };
        let bytes = limits::read_bounded(&path, limits::MAX_TOKENIZER_BYTES, "tokenizer.json")
            .map_err(|e| load(e.to_string()))?;
        let inner = crate::guard::catch_quietly(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .map_err(|panic| load(format!("malformed ({panic})")))?
            .map_err(|e| load(e.to_string()))?;
        drop(bytes);
        let mut tok = TextTokenizer::from_tokenizer(inner, path);
        // generation_config first: it is what transformers' `generate` stops on; the model
        // config's eos follows (it seeds generation_config when that file is absent).
        let mut eos = Vec::new();
        for (file, pointers) in [
            ("generation_config.json", &["/eos_token_id"][..]),
            (
                "config.json",
                &["/text_config/eos_token_id", "/eos_token_id"][..],
            ),
        ] {
            let p = dir.join(file);
            if p.exists() {
                eos.extend(read_eos_ids(&p, pointers, tok.vocab_size())?);
            }
        }
        tok.add_eos_ids(&eos);
        Ok(tok)
    }

    /// Wraps an already loaded tokenizer; `path` names it in errors. Eos ids start as
    /// `<|im_end|>` alone (chat models stop at the end of the assistant turn).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: PathBuf) -> TextTokenizer {
        let id = |t: &str| inner.token_to_id(t);
        let special = SpecialTokens {
            im_start: id(IM_START),
            im_end: id(IM_END),
            end_of_text: id(END_OF_TEXT),
            image_pad: id(IMAGE_PAD),
            video_pad: id(VIDEO_PAD),
        };
        let eos_ids = special.im_end.into_iter().collect();
        TextTokenizer {
            inner,
            path,
            special,
            eos_ids,
        }
    }

    /// Appends eos ids, keeping the first occurrence of each.
    pub fn add_eos_ids(&mut self, ids: &[u32]) {
        for &id in ids {
            if !self.eos_ids.contains(&id) {
                self.eos_ids.push(id);
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// Token ids that end generation: `<|im_end|>` (if in the vocabulary), then
    /// generation_config.json's and config.json's `eos_token_id`, deduplicated.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Vocabulary size including added tokens.
    /// One past the largest id, special tokens included (ids need not be dense: a checkpoint
    /// may place its special tokens far above the BPE vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of `token`, or an error naming the tokenizer file.
    pub fn require_token(&self, token: &str) -> Result<u32> {
        self.token_id(token)
            .ok_or_else(|| TokenizerError::MissingToken {
                path: self.path.clone(),
                token: token.to_string(),
            })
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes `text`; special tokens written in the text (`<|im_start|>`, …) become their ids.
    /// `add_special_tokens` runs the post-processor (BOS etc.); chat prompts pass `false`, as
    /// transformers' `apply_chat_template` does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text; invalid UTF-8 (a character split off mid-sequence) becomes U+FFFD,
    /// and ids the tokenizer has no token for (the model's vocabulary is often padded past the
    /// tokenizer's) decode to nothing, both as in transformers' `decode`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }
}

/// `eos_token_id` at the first of `pointers` present in a JSON file: an int, a list of ints or
/// null. Ids outside the vocabulary are an error (they could never stop generation).
fn read_eos_ids(path: &Path, pointers: &[&str], vocab: usize) -> Result<Vec<u32>> {
    let err = |msg: String| TokenizerError::Config {
        path: path.to_path_buf(),
        msg,
    };
    let name = path
        .file_name()
        .map_or("a JSON config".into(), |n| n.to_string_lossy());
    let text = limits::read_bounded_to_string(path, limits::MAX_CONFIG_BYTES, &name)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let Some((pointer, value)) = pointers.iter().find_map(|p| v.pointer(p).map(|x| (*p, x))) else {
        return Ok(Vec::new());
    };
    let field = pointer.trim_start_matches('/').replace('/', ".");
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a.iter().collect(),
        x => vec![x],
    };
    items
        .into_iter()
        .map(|x| match x.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            Some(id) => Err(err(format!(
                "`{field}` {id} is outside the vocabulary ({vocab} tokens)"
            ))),
            None => Err(err(format!(
                "`{field}` must be an integer or a list of integers, got {x}"
            ))),
        })
        .collect()
}
