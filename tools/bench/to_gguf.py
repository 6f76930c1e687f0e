#!/usr/bin/env python3
"""The LLM half of a VideoLLaMA3 checkpoint (transformers layout) as a `qwen2` GGUF, so that
llama.cpp's llama-bench can run the same Qwen2 decoder with the same weights beside vl3c
(tools/bench/compare.sh).

    to_gguf.py --model DIR --out FILE.gguf [--type bf16|q8_0]

Weights keep the checkpoint's bf16 values (`bf16`), or are quantized to Q8_0 by the gguf package's
reference quantizer (`q8_0`); norms stay f32, as llama.cpp's own converter writes them. The
vocabulary is a placeholder of the right size (`<|v{i}|>` tokens, no merges, Qwen2's special ids):
llama-bench feeds random token ids and never tokenizes text, so this GGUF is for benchmarks only,
not for chat. Needs `pip install gguf safetensors numpy` (no torch).
"""
import argparse
import json
import os

import gguf
import numpy as np

PREFIX = "model.language_model."
# transformers Qwen2 name (after `model.language_model.layers.N.`) → GGUF block tensor name.
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def checkpoint_files(model):
    index = os.path.join(model, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted({os.path.join(model, v) for v in json.load(f)["weight_map"].values()})
    return [os.path.join(model, "model.safetensors")]


def load_bf16(path, name):
    """(uint16 bits, shape) of bf16 tensor `name` read straight from the safetensors file."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        meta = header[name]
        if meta["dtype"] != "BF16":
            raise SystemExit(f"{name}: stored as {meta['dtype']}; this converter reads bf16 checkpoints")
        start, end = meta["data_offsets"]
        fh.seek(8 + n + start)
        bits = np.frombuffer(fh.read(end - start), np.uint16)
    return bits.reshape(meta["shape"]), meta["shape"]


def to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", choices=["bf16", "q8_0"], default="bf16")
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    t = cfg.get("text_config", cfg)
    where = {}
    for path in checkpoint_files(args.model):
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            for name in json.loads(fh.read(n)):
                if name != "__metadata__":
                    where[name] = path

    w = gguf.GGUFWriter(args.out, "qwen2")
    w.add_name("VideoLLaMA3 LLM half (vl3c benchmark)")
    w.add_context_length(t["max_position_embeddings"])
    w.add_embedding_length(t["hidden_size"])
    w.add_block_count(t["num_hidden_layers"])
    w.add_feed_forward_length(t["intermediate_size"])
    w.add_head_count(t["num_attention_heads"])
    w.add_head_count_kv(t["num_key_value_heads"])
    w.add_layer_norm_rms_eps(t["rms_norm_eps"])
    # transformers 5 writes rope_parameters.rope_theta; older configs rope_theta.
    w.add_rope_freq_base(t.get("rope_theta") or (t.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if args.type == "bf16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    vocab = t["vocab_size"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list([f"<|v{i}|>" for i in range(vocab)])
    w.add_token_types([gguf.TokenType.NORMAL] * vocab)
    w.add_token_merges(["a b"])  # llama.cpp requires the key; no text is ever tokenized
    w.add_bos_token_id(t.get("bos_token_id", 151643))
    w.add_eos_token_id(t.get("eos_token_id", 151645))

    def add(gguf_name, hf_name, quantize):
        bits, shape = load_bf16(where[hf_name], hf_name)
        if not quantize or len(shape) == 1:
            w.add_tensor(gguf_name, to_f32(bits))  # norms and biases in f32
        elif args.type == "bf16":
            w.add_tensor(gguf_name, bits, raw_dtype=gguf.GGMLQuantizationType.BF16)
        elif shape[-1] % 32:
            # Q8_0 blocks are 32 wide; a row that is not whole blocks stays bf16, as
            # llama.cpp's own converter does.
            w.add_tensor(gguf_name, bits, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            q = gguf.quants.quantize(to_f32(bits), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    add("token_embd.weight", PREFIX + "embed_tokens.weight", True)
    for i in range(t["num_hidden_layers"]):
        for hf, gg in LAYER.items():
            add(f"blk.{i}.{gg}", f"{PREFIX}layers.{i}.{hf}", True)
    add("output_norm.weight", PREFIX + "norm.weight", False)
    if not cfg.get("tie_word_embeddings", t.get("tie_word_embeddings", False)):
        add("output.weight", "lm_head.weight", True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    print(f"{args.out}: {os.path.getsize(args.out) / 1e9:.2f} GB, {args.type}")


if __name__ == "__main__":
    main()
