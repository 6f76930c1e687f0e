#!/usr/bin/env python3
"""Build the tiny example checkpoint examples/tiny/ (real byte-level BPE tokenizer + tiny random
VideoLLaMA3) and the golden prompt fixture tests/fixtures/run/tiny_prompt.json.

Run (deterministic; a few seconds on CPU):
    /work/pyenv/bin/python tools/golden/make_tiny_example.py

Writes:
    examples/picture.png                 skimage.data.chelsea downscaled to 150x225 (a real photo)
    examples/tiny/                       config.json, model.safetensors, generation_config.json,
                                         tokenizer.json, tokenizer_config.json (with the chat
                                         template of spec §5), preprocessor_config.json,
                                         video_preprocessor_config.json
    tests/fixtures/run/tiny_prompt.json  transformers' input_ids for "What is in this picture?" with
                                         the picture, the image grid, greedy generate ids (12 new
                                         tokens), decoded text, plus tokenizer encode samples and
                                         Python `:.1f` renderings of tricky timestamps.

The tokenizer copies Qwen2's pipeline (NFC, the Qwen2 split regex + ByteLevel, ByteLevel decoder,
special tokens appended after the BPE vocabulary as in Qwen) so that the Rust `tokenizers` crate
loads it exactly like the real checkpoints' tokenizer.json.
"""

import json
import math
import os
import shutil

import numpy as np
import skimage.data
import torch
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

import transformers
from transformers.video_utils import VideoMetadata
from transformers import (
    PreTrainedTokenizerFast,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3Processor,
    VideoLlama3VideoProcessor,
)

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "examples", "tiny")
PICTURE = os.path.join(ROOT, "examples", "picture.png")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run", "tiny_prompt.json")
PROMPT = "What is in this picture?"
N_NEW = 12
# strong residual branches + an untied lm_head keep greedy decoding from repeating the last token
RESID_GAIN = float(os.environ.get("RESID_GAIN", 2.0))
TIED = os.environ.get("TIED", "0") == "1"

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>"]
BPE_VOCAB = 496  # + 5 specials = 501 tokens
# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2/Qwen2.5).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

# spec §5, HF port's template (literal-string revision); `add_system_prompt` adds the DAMO system line
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and add_system_prompt is defined and add_system_prompt and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are VideoLLaMA3 created by Alibaba DAMO Academy, a helpful assistant to help people understand images and videos.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'stream' -%}{%- set identifier = 'stream' -%}{%- else -%}{%- set identifier = 'im' -%}{%- endif -%}"
    "{{- '<|' + identifier + '_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'text' -%}{{- content['text'] -}}"
    "{%- elif content['type'] == 'image' -%}{{- '<|image_pad|>\\n' -}}"
    "{%- elif content['type'] == 'video' -%}{{- '<|video_pad|>\\n' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- if identifier == 'stream' -%}{{- '<|stream_end|>' -}}{%- else -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Training text, written for this example (no licence questions): English prose about pictures,
# cats and the model, so the prompt and likely answers tokenize into a few merged tokens.
CORPUS = """\
What is in this picture? The picture shows a cat. The cat is sitting on a wooden table near a window,
and the light of the afternoon falls on its fur. Its eyes are green and its ears are pointed. There is
a small plant in the corner of the picture, and a cup of coffee on the table. The image is a photo
taken with a camera; the colors are warm, brown, orange and grey.

Describe the image. This image captures a quiet scene in a house. A woman is reading a book in a chair,
while a dog sleeps on the floor. Outside the window, the street is busy: people walk, cars drive by,
and the city lights begin to shine in the evening. The scene is calm and the room is full of books.

VideoLLaMA3 is a model that understands images and videos. It reads a picture as a grid of patches,
turns each patch into a token, and answers questions in text. For a video it looks at the frames one
by one, keeps what changes and drops what stays the same. Time 0.0s: the first frame. Time 1.0s: the
second frame. Time 2.5s: the third frame, where the cat jumps off the table and runs to the door.

Questions and answers: What color is the cat? The cat is brown and grey with dark stripes. Where is the
cat? The cat is on the table. What is the cat doing? The cat is looking at the camera. How many cats are
in the picture? There is one cat in the picture. Is it day or night? It is day, the sun is shining.
Numbers like 12, 2025 and 3.14 appear in text too, as do quotes: "it's", "we're", "they'll" and 'I'd'.
The user asks and the assistant answers. The user sends a picture and a question; the assistant looks
at the picture and writes an answer. A good assistant is helpful, short and clear, and says when it is
not sure. The user may ask about a photo of a street, a kitchen, a garden, a beach or a mountain, about
animals like birds, horses, fish and cats, or about the people, their clothes and what they are doing.
A café in Zürich serves crème brûlée — naïve façades, 日本語 and emoji ☕ show that bytes still work.
"""

TEXT_CFG = dict(
    model_type="qwen2", attention_dropout=0.0, hidden_act="silu", hidden_size=32,
    intermediate_size=37, max_position_embeddings=512, max_window_layers=3, num_attention_heads=4,
    num_hidden_layers=2, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
    sliding_window=None, tie_word_embeddings=TIED,
)
VISION_CFG = dict(
    model_type="video_llama_3_vision", attention_dropout=0.0, hidden_act="gelu_pytorch_tanh",
    hidden_size=32, intermediate_size=64, layer_norm_eps=1e-6, num_attention_heads=4, num_channels=3,
    num_hidden_layers=2, patch_size=14,
)
# 150x225 picture -> smart_resize 112x182 -> grid 8x13 = 104 patches (spec §3.1)
IMG_SIZE = {"shortest_edge": 14 * 14 * 4, "longest_edge": 14 * 14 * 120}
# The tiny model has 512 positions: a video's frames share 96 merged tokens (e.g. 4 frames of
# 8x12 patches, or 16 frames of 4x6), and no frame is scaled up past 4x4 patches.
VIDEO_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 96}


def build_tokenizer():
    tok = Tokenizer(models.BPE(byte_fallback=False, unk_token=None, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator([CORPUS], trainer=trainer)
    # specials after the BPE vocabulary, like Qwen's added tokens
    tok.add_special_tokens(SPECIALS)
    return tok


def build_model(cfg, seed):
    """Random init, then perturbed like tools/golden/make_model_fixtures.py so every weight matters
    and greedy decoding does not collapse onto one repeated token."""
    torch.manual_seed(seed)
    model = VideoLlama3ForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                gain = RESID_GAIN if ("o_proj" in name or "down_proj" in name) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    model.config._attn_implementation = "eager"
    return model.float().eval()


def video_prompt(proc):
    """A 4-frame video at 4 fps (timestamps 0, 0.25, 0.5, 0.75: two exact `:.1f` ties) whose
    frame 2 repeats frame 1, so pruning keeps 1 token there: the §4.4 layout with real numbers."""
    im = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((168, 112), Image.BICUBIC))
    base = torch.from_numpy(im.copy()).permute(2, 0, 1)
    frames = []
    for k in range(4):
        f = base.clone()
        f[:, 10 * k:10 * k + 20, 30:60] = 255 - f[:, 10 * k:10 * k + 20, 30:60]
        frames.append(f)
    frames[2] = frames[1].clone()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    md = VideoMetadata(total_num_frames=4, fps=4.0, frames_indices=[0, 1, 2, 3])
    out = proc(text=[text], videos=[torch.stack(frames)], return_tensors="pt",
               videos_kwargs=dict(size={"shortest_edge": 784, "longest_edge": 112 * 168 * 4}, video_metadata=[md]))
    return {
        "text": "What happens?",
        "timestamps": [float(t) for t in md.timestamps],
        "video_grid_thw": out["video_grid_thw"].tolist(),
        "video_compression_mask": out["video_compression_mask"].tolist(),
        "input_ids": out["input_ids"][0].tolist(),
    }


@torch.no_grad()
def manual_greedy(model, inputs, n_new):
    """argmax loop without cache and without logits processors (what the Rust runner does)."""
    ids = inputs["input_ids"]
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    new, margins = [], []
    for _ in range(n_new):
        last = model(input_ids=ids, **kw).logits[0, -1]
        top2 = last.topk(2).values
        margins.append((top2[0] - top2[1]).item())
        new.append(last.argmax().item())
        ids = torch.cat([ids, torch.tensor([[new[-1]]])], 1)
    return new, min(margins)


def main():
    # ---- picture: a real photo, small
    im = Image.fromarray(skimage.data.chelsea()).convert("RGB").resize((225, 150), Image.BICUBIC)
    im.save(PICTURE, optimize=True)

    # ---- tokenizer
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    raw = build_tokenizer()
    ids = {t: raw.token_to_id(t) for t in SPECIALS}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=32768, clean_up_tokenization_spaces=False,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    # keep the template inside tokenizer_config.json (the older, still-read layout)
    hf_tok.save_pretrained(OUT, save_jinja_files=False)
    VideoLlama3ImageProcessor(size=IMG_SIZE).save_pretrained(OUT)
    VideoLlama3VideoProcessor(size=VIDEO_SIZE).save_pretrained(OUT)

    # ---- model
    cfg = VideoLlama3Config(
        text_config=dict(TEXT_CFG, vocab_size=len(raw.get_vocab()), bos_token_id=None,
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(VISION_CFG),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        tie_word_embeddings=TIED,
    )

    # ---- processor, reloaded from the saved files (what a user of the checkpoint gets)
    tok = transformers.AutoTokenizer.from_pretrained(OUT)
    proc = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor.from_pretrained(OUT), tokenizer=tok,
        video_processor=VideoLlama3VideoProcessor.from_pretrained(OUT), chat_template=tok.chat_template,
    )
    messages = [{"role": "user", "content": [
        {"type": "image", "path": PICTURE}, {"type": "text", "text": PROMPT}]}]
    inputs = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                      return_dict=True, return_tensors="pt")
    prompt_text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    model_inputs = {k: inputs[k] for k in ("input_ids", "pixel_values", "image_grid_thw", "image_merge_sizes")}
    model_inputs["pixel_values"] = model_inputs["pixel_values"].float()

    special = set(ids.values())
    for seed in range(100):
        model = build_model(cfg, seed)
        with torch.no_grad():
            gen = model.generate(**model_inputs, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                                 do_sample=False, use_cache=True)
        new = gen[0, model_inputs["input_ids"].shape[1]:].tolist()
        if len(set(new)) < 4:
            print(f"seed {seed} rejected: degenerate {new}")
            continue
        manual, margin = manual_greedy(model, model_inputs, N_NEW)
        if manual == new and margin > 1e-2 and len(set(new)) >= 4 and not special & set(new):
            break
        print(f"seed {seed} rejected: {new} (manual {manual}, margin {margin:.3g})")
    else:
        raise SystemExit("no seed gave a usable model")
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = None
    model.save_pretrained(OUT)
    reloaded = VideoLlama3ForConditionalGeneration.from_pretrained(OUT, attn_implementation="eager").eval()
    with torch.no_grad():
        again = reloaded.generate(**model_inputs, max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False)
    assert again[0, model_inputs["input_ids"].shape[1]:].tolist() == new

    samples = ["Hello world!", "What is in this picture?", "  two  spaces\n\nnew lines\t tab",
               "café naïve 日本語 ☕ 🐈", "it's 2025, we'll see 3.14", "<|im_start|>user\nhi<|im_end|>"]
    fixture = {
        "description": "transformers' VideoLlama3Processor + greedy generate on examples/tiny",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "prompt": PROMPT,
        "image": "examples/picture.png",
        "model_seed": seed,
        "special_token_ids": ids,
        "vocab_size": len(raw.get_vocab()),
        "prompt_text": prompt_text,
        "input_ids": inputs["input_ids"][0].tolist(),
        "image_grid_thw": inputs["image_grid_thw"].tolist(),
        "max_new_tokens": N_NEW,
        "generated_ids": new,
        "min_top2_margin": margin,
        "generated_text": tok.decode(new, skip_special_tokens=True),
        "generated_text_with_special": tok.decode(new, skip_special_tokens=False),
        "video": video_prompt(proc),
        "encode_samples": [{"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]} for s in samples],
        "timestamp_format": [{"value": v, "python": f"{v:.1f}"} for v in
                             [0.25, 0.35, 2.45, 0.05, 0.15, 1.25, 0.45, 2.5, 3.0, 1 / 3, 10 / 3, 7 / 30,
                              6.65, 16.05, 100.25, 0.95, 9.95]],
    }
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    with open(FIXTURE, "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("seed", seed, "grid", fixture["image_grid_thw"], "prompt len", len(fixture["input_ids"]))
    print("generated", new, repr(fixture["generated_text"]))


if __name__ == "__main__":
    main()
