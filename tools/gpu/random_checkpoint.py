#!/usr/bin/env python3
"""A VideoLLaMA3 checkpoint with random bf16 weights at the shapes of a config, for machines with
Python but no Rust toolchain (the GPU machine): what `cargo run --example random_checkpoint`
writes, with the same tensor names, shapes, order and value ranges (norm weights 1 ± 0.1,
everything else ± 0.035, uniform) but another generator, so the values differ.

    python3 tools/gpu/random_checkpoint.py --out /tmp/vl3-2b            # the 2B config
    python3 tools/gpu/random_checkpoint.py --config tests/fixtures/models/image_tied_f32/config.json --out /tmp/small

Writes config.json (copied as is), model.safetensors (streamed, one tensor at a time) and
examples/tiny's tokenizer with its special tokens moved to the Qwen2.5 ids, as the Rust example
does, so `vl3c run` works on the checkpoint. Values come from torch (on CUDA when there is a GPU:
the 2B checkpoint in a few seconds) or, without torch, numpy; one of them is needed.
"""

import argparse
import json
import os
import struct
import sys
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_CONFIG = os.path.join(ROOT, "examples", "configs", "videollama3-2b", "config.json")
TINY = os.path.join(ROOT, "examples", "tiny")

QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}


def expected_weights(cfg):
    """(name, shape) of every tensor, in frontends/src/names.rs `expected_weights` order."""
    v, t = cfg["vision_config"], cfg["text_config"]
    f, fi = v["hidden_size"], v["intermediate_size"]
    out = [
        ("model.vision_model.embeddings.patch_embedding.weight", [f, v.get("num_channels", 3), v["patch_size"], v["patch_size"]]),
        ("model.vision_model.embeddings.patch_embedding.bias", [f]),
    ]
    for i in range(v["num_hidden_layers"]):
        p = f"model.vision_model.encoder.layers.{i}."
        for ln in ["layer_norm1", "layer_norm2"]:
            out += [(f"{p}{ln}.weight", [f]), (f"{p}{ln}.bias", [f])]
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            out += [(f"{p}self_attn.{proj}.weight", [f, f]), (f"{p}self_attn.{proj}.bias", [f])]
        out += [(f"{p}mlp.fc1.weight", [fi, f]), (f"{p}mlp.fc1.bias", [fi]), (f"{p}mlp.fc2.weight", [f, fi]), (f"{p}mlp.fc2.bias", [f])]
    out += [("model.vision_model.post_layernorm.weight", [f]), ("model.vision_model.post_layernorm.bias", [f])]

    h, ti, vocab = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    out += [
        ("model.projector.readout.0.weight", [h, f]),
        ("model.projector.readout.0.bias", [h]),
        ("model.projector.readout.2.weight", [h, h]),
        ("model.projector.readout.2.bias", [h]),
    ]
    head_dim = t.get("head_dim") or h // t["num_attention_heads"]
    q, kv = t["num_attention_heads"] * head_dim, t["num_key_value_heads"] * head_dim
    out.append(("model.language_model.embed_tokens.weight", [vocab, h]))
    for i in range(t["num_hidden_layers"]):
        p = f"model.language_model.layers.{i}."
        out += [
            (f"{p}input_layernorm.weight", [h]),
            (f"{p}self_attn.q_proj.weight", [q, h]),
            (f"{p}self_attn.q_proj.bias", [q]),
            (f"{p}self_attn.k_proj.weight", [kv, h]),
            (f"{p}self_attn.k_proj.bias", [kv]),
            (f"{p}self_attn.v_proj.weight", [kv, h]),
            (f"{p}self_attn.v_proj.bias", [kv]),
            (f"{p}self_attn.o_proj.weight", [h, q]),
            (f"{p}post_attention_layernorm.weight", [h]),
            (f"{p}mlp.gate_proj.weight", [ti, h]),
            (f"{p}mlp.up_proj.weight", [ti, h]),
            (f"{p}mlp.down_proj.weight", [h, ti]),
        ]
    out.append(("model.language_model.norm.weight", [h]))
    tied = cfg.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
    if not tied:
        out.append(("lm_head.weight", [vocab, h]))
    return out


def bf16_bytes_fn(seed):
    """A function (count, is_norm) → little-endian bf16 bytes, from torch (CUDA if present) or numpy."""
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        gen = torch.Generator(device=device).manual_seed(seed)

        def make(n, is_norm):
            x = torch.empty(n, dtype=torch.float32, device=device).uniform_(-1.0, 1.0, generator=gen)
            x = 1.0 + 0.1 * x if is_norm else 0.035 * x
            return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()

        return make, f"torch {torch.__version__} on {device}"
    except ImportError:
        pass
    import numpy as np

    rng = np.random.default_rng(seed)

    def make(n, is_norm):
        x = rng.random(n, dtype=np.float32) * 2.0 - 1.0
        x = 1.0 + 0.1 * x if is_norm else 0.035 * x
        # Round to nearest even bf16 (random values: no NaN/inf to care about).
        bits = x.astype(np.float32).view(np.uint32)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.astype("<u2").tobytes()

    return make, f"numpy {np.__version__}"


def write_tokenizer(out):
    tok = json.load(open(os.path.join(TINY, "tokenizer.json")))
    for added in tok["added_tokens"]:
        if added["content"] not in QWEN_SPECIAL_IDS:
            raise SystemExit(f"error: unexpected special token {added['content']} in examples/tiny")
        added["id"] = QWEN_SPECIAL_IDS[added["content"]]
    # `tokenizers` renumbers added tokens after the model's vocabulary unless the model holds them.
    tok["model"]["vocab"].update(QWEN_SPECIAL_IDS)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(TINY, "tokenizer_config.json"), "rb") as src, open(os.path.join(out, "tokenizer_config.json"), "wb") as dst:
        dst.write(src.read())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config.json (default: the 2B one in examples/configs)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tokenizer", action="store_true", help="skip the tokenizer (when the config's ids are not Qwen2.5's)")
    a = p.parse_args()

    start = time.perf_counter()
    text = open(a.config).read()
    cfg = json.loads(text)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        f.write(text)
    if not a.no_tokenizer:
        write_tokenizer(a.out)

    weights = expected_weights(cfg)
    header, offset = {}, 0
    for name, shape in weights:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    make, source = bf16_bytes_fn(a.seed)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in weights:
            n = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            f.write(make(n // 2, "norm" in name))
    seconds = time.perf_counter() - start
    print(
        json.dumps({"tensors": len(weights), "bytes": offset, "values_from": source, "seconds": round(seconds, 2), "out": a.out}),
    )
    print(f"wrote {len(weights)} tensors, {offset / 1e9:.2f} GB, to {a.out} in {seconds:.1f} s ({source})", file=sys.stderr)


if __name__ == "__main__":
    main()
