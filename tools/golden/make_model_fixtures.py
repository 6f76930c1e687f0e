#!/usr/bin/env python3
"""Generate golden *model* fixtures for vl3c with Hugging Face transformers as the oracle.

Run:
    /work/pyenv/bin/python tools/golden/make_model_fixtures.py --out tests/fixtures/models

Each fixture directory holds:
    config.json            what save_pretrained writes (or the original DAMO config for layout "damo")
    model.safetensors      (or model-0000N-of-00002.safetensors + model.safetensors.index.json)
    inputs.safetensors     forward() arguments (input_ids, pixel_values, image_grid_thw, ...)
    expected.safetensors   logits [1,L,V] f32, generated_ids [1,N] i64, image_features / video_features
    meta.json              description, weights dtype, max_new_tokens, layout, tied_lm_head, versions

Models are tiny random VideoLlama3ForConditionalGeneration instances built from config (nothing is
downloaded). Parameters are perturbed so that every weight / bias / norm matters and logits are O(1).
Pixel inputs come from the real VideoLlama3ImageProcessor / VideoLlama3VideoProcessor applied to
skimage.data photos. Everything is computed in float32 with eager attention.
"""

import argparse
import copy
import json
import math
import os
import shutil

import numpy as np
import torch
from PIL import Image
import skimage.data
from safetensors.torch import save_file, load_file

import transformers
from transformers import (
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3ImageProcessor,
    VideoLlama3VideoProcessor,
)

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

ATTN = "eager"
# scale of the random init: small embeddings + strong residual branches keep a tied lm_head from
# simply predicting the previous token again (E[x].E[x] dominates otherwise)
EMBED_STD = float(os.environ.get("EMBED_STD", 0.1))
RESID_GAIN = float(os.environ.get("RESID_GAIN", 1.0))

# --------------------------------------------------------------------------------------------
# configs

TEXT_TINY = dict(
    model_type="qwen2", attention_dropout=0.0, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    hidden_act="silu", hidden_size=32, intermediate_size=37, max_position_embeddings=512,
    max_window_layers=3, num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=2,
    rms_norm_eps=1e-6, rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=True,
    vocab_size=99,
)
VISION_TINY = dict(
    model_type="video_llama_3_vision", attention_dropout=0.0, hidden_act="gelu_pytorch_tanh",
    hidden_size=32, intermediate_size=64, layer_norm_eps=1e-6, num_attention_heads=4, num_channels=3,
    num_hidden_layers=2, patch_size=14,
)

IMG_SIZE = {"shortest_edge": 14 * 14 * 4, "longest_edge": 14 * 14 * 400}


def make_config(text, vision, image_token_id, video_token_id):
    cfg = VideoLlama3Config(
        text_config=dict(text), vision_config=dict(vision),
        image_token_id=image_token_id, video_token_id=video_token_id,
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    return cfg


# --------------------------------------------------------------------------------------------
# images / videos from real photos

def photo(name):
    return {
        "astronaut": skimage.data.astronaut,
        "chelsea": skimage.data.chelsea,
        "coffee": skimage.data.coffee,
    }[name]()


def image_chw(name, box, size_hw):
    """Crop box=(left, top, right, bottom) of a skimage photo, resize to (h, w), return uint8 CHW."""
    im = Image.fromarray(photo(name)).convert("RGB").crop(box)
    im = im.resize((size_hw[1], size_hw[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


def process_images(images):
    proc = VideoLlama3ImageProcessor()
    out = proc(images=images, size=IMG_SIZE, return_tensors="pt")
    return {
        "pixel_values": out["pixel_values"].float().contiguous(),
        "image_grid_thw": out["image_grid_thw"].long().contiguous(),
        "image_merge_sizes": out["image_merge_sizes"].long().contiguous(),
    }


def moving_square_video():
    """5 frames, 120x180: static coffee-photo background with a small moving magenta square.
    Frame 2 is identical to frame 1 (so only merged token 0 survives pruning for it)."""
    bg = image_chw("coffee", (100, 50, 460, 290), (120, 180))
    positions = [(20, 20), (20, 60), (20, 60), (70, 100), (70, 140)]
    frames = []
    for (y, x) in positions:
        f = bg.clone()
        f[0, y:y + 16, x:x + 16] = 255
        f[1, y:y + 16, x:x + 16] = 0
        f[2, y:y + 16, x:x + 16] = 255
        frames.append(f)
    return torch.stack(frames)  # T C H W uint8


def process_video(video):
    t = video.shape[0]
    proc = VideoLlama3VideoProcessor()
    size = {"shortest_edge": 28 * 28, "longest_edge": 112 * 168 * t}  # -> grid 8x12 per frame
    out = proc(videos=[video], size=size, use_token_compression=True, return_tensors="pt")
    res = {
        "pixel_values_videos": out["pixel_values_videos"].float().contiguous(),
        "video_grid_thw": out["video_grid_thw"].long().contiguous(),
        "video_merge_sizes": out["video_merge_sizes"].long().contiguous(),
        "video_compression_mask": out["video_compression_mask"].bool().contiguous(),
    }
    thw = res["video_grid_thw"][0].tolist()
    m = int(res["video_merge_sizes"][0])
    per_frame = thw[1] * thw[2] // (m * m)
    mask = res["video_compression_mask"].view(thw[0], per_frame)
    rest = mask[1:]
    assert rest.any() and (~rest).any(), "pruning must be partial beyond frame 0"
    assert bool(mask[0].all()), "frame 0 must be fully kept"
    return res, mask


# --------------------------------------------------------------------------------------------
# input ids (processor-like layout without a tokenizer)

class Ids:
    def __init__(self, seed, vocab, special):
        self.g = torch.Generator().manual_seed(seed)
        self.allowed = torch.tensor([i for i in range(vocab) if i not in special])
        self.ids = []

    def text(self, n):
        idx = torch.randint(0, len(self.allowed), (n,), generator=self.g)
        self.ids += self.allowed[idx].tolist()
        return self

    def tok(self, t, n=1):
        self.ids += [int(t)] * n
        return self

    def image(self, grid_thw, merge, image_token_id):
        t, h, w = [int(v) for v in grid_thw]
        return self.tok(image_token_id, t * h * w // (merge * merge))

    def video(self, mask, video_token_id, time_tok, digit_toks, s_colon_tok, comma_tok):
        # "Time {t:.1f}s:" + <video_pad>*n_f, frames joined by ","  (fps=1 -> t = frame index)
        for f in range(mask.shape[0]):
            if f > 0:
                self.tok(comma_tok)
            self.tok(time_tok).tok(digit_toks[f % len(digit_toks)]).tok(s_colon_tok)
            self.tok(video_token_id, int(mask[f].sum()))
        return self

    def tensor(self):
        return torch.tensor([self.ids], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# model construction / perturbation

def build_model(cfg, seed):
    torch.manual_seed(seed)
    model = VideoLlama3ForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(shape, generator=g))
            elif p.ndim == 1:  # LayerNorm / RMSNorm weights
                p.copy_(1.0 + 0.2 * torch.randn(shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(EMBED_STD * torch.randn(shape, generator=g))
            else:  # linear / conv weights: unit-variance outputs
                fan_in = int(np.prod(shape[1:]))
                gain = RESID_GAIN if ("o_proj" in name or "down_proj" in name) else 1.0
                p.copy_(gain * torch.randn(shape, generator=g) / math.sqrt(fan_in))
    model.float().eval()
    model.config._attn_implementation = ATTN
    return model


def load_hf(path, dtype=torch.float32):
    m = VideoLlama3ForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=ATTN)
    return m.eval()


@torch.no_grad()
def run_all(model, inputs, n_new):
    out = model(**inputs)
    logits = out.logits.float()
    res = {"logits": logits.contiguous()}
    mm = model.model
    if "pixel_values" in inputs:
        f = mm.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"],
                                  inputs["image_merge_sizes"]).pooler_output
        res["image_features"] = torch.cat(f, 0).float().contiguous()
    if "pixel_values_videos" in inputs:
        f = mm.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                  inputs["video_merge_sizes"]).pooler_output
        res["video_features"] = torch.cat(f, 0).float().contiguous()
    L = inputs["input_ids"].shape[1]
    gen = model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                         use_cache=True)
    res["generated_ids"] = gen[:, L:].long().contiguous()
    return res


@torch.no_grad()
def manual_greedy(model, inputs, n_new):
    """Plain argmax loop without cache and without logits processors."""
    ids = inputs["input_ids"]
    kw = {k: v for k, v in inputs.items() if k != "input_ids"}
    new, margins = [], []
    for _ in range(n_new):
        last = model(input_ids=ids, **kw).logits[0, -1]
        top2 = last.topk(2).values
        margins.append((top2[0] - top2[1]).item())
        nxt = last.argmax().item()
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return new, min(margins)


@torch.no_grad()
def quality_ok(model, inputs, res, n_new, special, log):
    logits = res["logits"][0]
    std_min = logits.std(-1).min().item()
    gen = res["generated_ids"][0].tolist()
    manual, margin = manual_greedy(model, inputs, n_new)
    ok = True
    if margin < 1e-2:
        log(f"  reject: greedy top-1/top-2 margin {margin:.3g} too small (fragile argmax)")
        ok = False
    if std_min <= 0.1:
        log(f"  reject: logits std min {std_min:.3f}")
        ok = False
    if manual != gen:
        log(f"  reject: generate {gen} != plain argmax loop {manual}")
        ok = False
    if len(set(gen)) < 3:
        log(f"  reject: degenerate generation {gen}")
        ok = False
    if any(t in special for t in gen):
        log(f"  reject: special token generated {gen}")
        ok = False
    # vision must influence logits
    for pk in ("pixel_values", "pixel_values_videos"):
        if pk in inputs:
            alt = dict(inputs)
            alt[pk] = torch.zeros_like(inputs[pk])
            d = (model(**alt).logits[0] - logits).abs().max().item()
            if d < 0.1:
                log(f"  reject: {pk} barely influences logits (max diff {d:.3g})")
                ok = False
            elif ok:
                log(f"  zeroing {pk} changes logits by up to {d:.3g}")
    return ok, std_min


# --------------------------------------------------------------------------------------------
# saving

def write_common(d, inputs, expected, meta):
    save_file({k: v.contiguous() for k, v in inputs.items()}, os.path.join(d, "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(d, "expected.safetensors"))
    meta = dict(meta)
    meta["transformers_version"] = transformers.__version__
    meta["torch_version"] = torch.__version__
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def hf_to_damo(name):
    for a, b in (("model.vision_model.", "model.vision_encoder."),
                 ("model.projector.", "model.mm_projector."),
                 ("model.language_model.", "model.")):
        if name.startswith(a):
            return b + name[len(a):]
    assert name == "lm_head.weight", name
    return name


def damo_to_hf(name):
    for a, b in (("model.vision_encoder.", "model.vision_model."),
                 ("model.mm_projector.", "model.projector.")):
        if name.startswith(a):
            return b + name[len(a):]
    if name.startswith("model."):
        return "model.language_model." + name[len("model."):]
    return name


def damo_config(text, vision, image_token_index):
    return {
        "architectures": ["Videollama3Qwen2ForCausalLM"],
        "model_type": "videollama3_qwen2",
        "attention_dropout": 0.0,
        "bos_token_id": text["bos_token_id"],
        "eos_token_id": text["eos_token_id"],
        "hidden_act": text["hidden_act"],
        "hidden_size": text["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": text["intermediate_size"],
        "max_position_embeddings": text["max_position_embeddings"],
        "max_window_layers": text["max_window_layers"],
        "num_attention_heads": text["num_attention_heads"],
        "num_hidden_layers": text["num_hidden_layers"],
        "num_key_value_heads": text["num_key_value_heads"],
        "rms_norm_eps": text["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": text["rope_theta"],
        "sliding_window": None,
        "tie_word_embeddings": text["tie_word_embeddings"],
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": text["vocab_size"],
        "vision_encoder": "DAMO-NLP-SG/SigLIP-NaViT",
        "vision_encoder_config": {
            "hidden_size": vision["hidden_size"],
            "intermediate_size": vision["intermediate_size"],
            "num_hidden_layers": vision["num_hidden_layers"],
            "num_attention_heads": vision["num_attention_heads"],
            "num_channels": vision["num_channels"],
            "patch_size": vision["patch_size"],
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": vision["layer_norm_eps"],
            "attention_dropout": 0.0,
            "model_type": "videollama3_vision_encoder",
        },
        "image_token_index": image_token_index,
        "mm_projector_type": "mlp2x_gelu",
        "use_token_compression": True,
    }


def save_damo(model, d, text, vision, image_token_index):
    sd = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    if text["tie_word_embeddings"]:
        sd.pop("lm_head.weight", None)
    renamed = {hf_to_damo(k): v for k, v in sd.items()}
    f1, f2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    shard1 = {k: v for k, v in renamed.items() if not k.startswith("model.vision_encoder.")}
    shard2 = {k: v for k, v in renamed.items() if k.startswith("model.vision_encoder.")}
    save_file(shard1, os.path.join(d, f1), metadata={"format": "pt"})
    save_file(shard2, os.path.join(d, f2), metadata={"format": "pt"})
    total = sum(v.numel() * v.element_size() for v in renamed.values())
    index = {"metadata": {"total_size": total},
             "weight_map": {k: (f1 if k in shard1 else f2) for k in sorted(renamed)}}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(damo_config(text, vision, image_token_index), f, indent=2)
        f.write("\n")


def load_damo(d, cfg):
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f)
    sd = {}
    for fn in sorted(set(index["weight_map"].values())):
        sd.update(load_file(os.path.join(d, fn)))
    assert set(sd) == set(index["weight_map"])
    hf_sd = {damo_to_hf(k): v for k, v in sd.items()}
    torch.manual_seed(0)
    model = VideoLlama3ForConditionalGeneration(cfg)
    if cfg.tie_word_embeddings:
        hf_sd["lm_head.weight"] = hf_sd["model.language_model.embed_tokens.weight"]
    model.load_state_dict(hf_sd, strict=True)
    model.float().eval()
    model.config._attn_implementation = ATTN
    return model


# --------------------------------------------------------------------------------------------
# fixture driver

def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def make_fixture(out_root, name, *, cfg, text, vision, inputs, n_new, seed, description,
                 layout="transformers", bf16=False, log=print):
    d = os.path.join(out_root, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    special = {text["bos_token_id"], text["eos_token_id"], text["pad_token_id"],
               cfg.image_token_id, cfg.video_token_id}
    log(f"== {name}")

    # choose a model seed that gives non-degenerate outputs
    for attempt in range(50):
        s = seed + 17 * attempt
        model = build_model(cfg, s)
        if bf16:
            # oracle = f32 on the bf16-rounded weights
            # (round parameters only: casting the whole module would also round the rotary inv_freq buffers)
            with torch.no_grad():
                for prm in model.parameters():
                    prm.copy_(prm.to(torch.bfloat16).float())
        res = run_all(model, inputs, n_new)
        ok, std_min = quality_ok(model, inputs, res, n_new, special, log)
        if ok:
            break
    else:
        raise RuntimeError(f"{name}: no acceptable seed")
    log(f"  model seed {s}")

    # save weights
    if layout == "damo":
        save_damo(model, d, text, vision, cfg.image_token_id)
        re = load_damo(d, cfg)
    else:
        if bf16:
            copy.deepcopy(model).to(torch.bfloat16).save_pretrained(d)
        else:
            model.save_pretrained(d)
        re = load_hf(d, torch.float32)
        assert re.config._attn_implementation == ATTN

    # reload check: expected outputs are computed from the reloaded model
    exp = run_all(re, inputs, n_new)
    for k in res:
        if k == "generated_ids":
            assert torch.equal(res[k], exp[k]), (k, res[k], exp[k])
        else:
            dd = maxdiff(res[k], exp[k])
            assert dd <= 1e-6, (name, k, dd)
    # eager vs sdpa sanity
    if layout != "damo":
        sdpa = VideoLlama3ForConditionalGeneration.from_pretrained(
            d, dtype=torch.float32, attn_implementation="sdpa").eval()
        with torch.no_grad():
            d_sdpa = maxdiff(sdpa(**inputs).logits, exp["logits"])
        log(f"  eager vs sdpa logits max diff {d_sdpa:.3g}")

    stats = {}
    if bf16:
        m16 = load_hf(d, torch.bfloat16)
        assert next(m16.parameters()).dtype == torch.bfloat16
        with torch.no_grad():
            exp["logits_bf16"] = m16(**inputs).logits.float().contiguous()
        diff = (exp["logits_bf16"] - exp["logits"]).abs()
        stats["bf16_vs_f32_logits_max_abs"] = diff.max().item()
        stats["bf16_vs_f32_logits_mean_abs"] = diff.mean().item()
        log(f"  transformers bf16 vs f32(upcast): max {diff.max().item():.4g} mean {diff.mean().item():.4g}")

    L = inputs["input_ids"].shape[1]
    n_img = int((inputs["input_ids"] == cfg.image_token_id).sum())
    n_vid_after = int((inputs["input_ids"] == cfg.video_token_id).sum())
    n_vid_before = int(exp["video_features"].shape[0]) if "video_features" in exp else 0
    stats.update({"seq_len": L, "image_tokens": n_img, "video_tokens_before_pruning": n_vid_before,
                  "video_tokens_after_pruning": n_vid_after,
                  "logits_std_min": round(std_min, 4), "model_seed": s})
    log(f"  L={L} image_tokens={n_img} video_tokens before/after pruning={n_vid_before}/{n_vid_after}")
    log(f"  logits std(vocab) min={std_min:.3f} mean={exp['logits'][0].std(-1).mean().item():.3f}")
    log(f"  generated_ids={exp['generated_ids'][0].tolist()}")

    tied = bool(cfg.tie_word_embeddings)
    if layout == "transformers":
        keys = set(load_file(os.path.join(d, "model.safetensors")).keys())
        assert ("lm_head.weight" in keys) == (not tied)
    meta = {
        "description": description,
        "weights_dtype": "bfloat16" if bf16 else "float32",
        "max_new_tokens": n_new,
        "layout": layout,
        "tied_lm_head": tied,
        "image_token_id": cfg.image_token_id,
        "video_token_id": cfg.video_token_id,
        "attn_implementation": ATTN,
        "stats": stats,
    }
    write_common(d, inputs, exp, meta)
    sizes = {fn: os.path.getsize(os.path.join(d, fn)) for fn in sorted(os.listdir(d))}
    log("  files: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/models")
    ap.add_argument("--only", default=None, help="comma-separated fixture names")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None

    def want(n):
        return only is None or n in only

    # ---- 1. image_tied_f32: spec §6 tiny config, one image
    if want("image_tied_f32"):
        text, vision = dict(TEXT_TINY), dict(VISION_TINY)
        cfg = make_config(text, vision, 3, 4)
        img = process_images([image_chw("chelsea", (50, 0, 400, 280), (90, 115))])
        ids = Ids(11, text["vocab_size"], {0, 1, 2, 3, 4})
        ids.text(3).image(img["image_grid_thw"][0], 1, 3).text(9)
        inputs = {"input_ids": ids.tensor(), **img}
        make_fixture(args.out, "image_tied_f32", cfg=cfg, text=text, vision=vision, inputs=inputs,
                     n_new=8, seed=100,
                     description="spec §6 tiny config (text 32/4h/2kv/2L, vocab 99, tied lm_head; vision 32/4h/2L), "
                                 "one image (merge 1), float32 weights")

    # ---- 2. images_untied_gqa4: 3 images of different sizes, GQA 4, untied lm_head
    if want("images_untied_gqa4"):
        text = dict(TEXT_TINY, hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                    intermediate_size=96, num_hidden_layers=3, vocab_size=128, tie_word_embeddings=False)
        vision = dict(VISION_TINY, hidden_size=48, num_attention_heads=4, intermediate_size=80,
                      num_hidden_layers=3)
        cfg = make_config(text, vision, 3, 4)
        img = process_images([
            image_chw("astronaut", (100, 0, 400, 200), (100, 150)),
            image_chw("coffee", (150, 50, 450, 300), (120, 100)),
            image_chw("chelsea", (0, 0, 451, 300), (155, 200)),
        ])
        ids = Ids(22, text["vocab_size"], {0, 1, 2, 3, 4})
        ids.text(4)
        for i in range(3):
            ids.image(img["image_grid_thw"][i], 1, 3).text(3 + i)
        ids.text(6)
        inputs = {"input_ids": ids.tensor(), **img}
        make_fixture(args.out, "images_untied_gqa4", cfg=cfg, text=text, vision=vision, inputs=inputs,
                     n_new=8, seed=200,
                     description="three images of different sizes; text 64/4h/1kv (GQA 4, head_dim 16)/3L, "
                                 "vocab 128, untied lm_head; vision 48/4h (head_dim 12)/3L",)

    # ---- 3/4. video (partial DiffFP pruning) + image
    def video_fixture(name, seed, ids_seed, bf16, description):
        text, vision = dict(TEXT_TINY), dict(VISION_TINY)
        cfg = make_config(text, vision, 3, 4)
        vid, mask = process_video(moving_square_video())
        img = process_images([image_chw("astronaut", (150, 50, 450, 350), (84, 112))])
        ids = Ids(ids_seed, text["vocab_size"], {0, 1, 2, 3, 4})
        tok = ids.allowed[torch.randperm(len(ids.allowed), generator=ids.g)[:8]].tolist()
        time_tok, s_colon, comma, digits = tok[0], tok[1], tok[2], tok[3:8]
        ids.text(3).video(mask, 4, time_tok, digits, s_colon, comma).text(2)
        ids.image(img["image_grid_thw"][0], 1, 3).text(7)
        inputs = {"input_ids": ids.tensor(), **img, **vid}
        print(f"  [{name}] kept tokens per frame: {mask.sum(1).tolist()} of {mask.shape[1]}")
        make_fixture(args.out, name, cfg=cfg, text=text, vision=vision, inputs=inputs, n_new=6,
                     seed=seed, bf16=bf16, description=description)

    if want("video_pruned_f32"):
        video_fixture("video_pruned_f32", 300, 33, False,
                      "one 5-frame video (merge 2, grid 8x12/frame, partial DiffFP pruning incl. a repeated "
                      "frame that keeps only token 0) plus one image; spec §6 tiny config; float32 weights")
    if want("video_bf16"):
        video_fixture("video_bf16", 400, 44, True,
                      "same shapes as video_pruned_f32 (different seed); weights stored in bfloat16. expected "
                      "logits/generated_ids/features are transformers float32 on the upcast weights; "
                      "logits_bf16 = transformers' own bf16 forward cast to f32")

    # ---- 5. damo_layout: original DAMO-NLP-SG checkpoint layout, sharded
    if want("damo_layout"):
        image_token_index = 120
        text = dict(TEXT_TINY, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=96, vocab_size=128, tie_word_embeddings=False)
        vision = dict(VISION_TINY)
        cfg = make_config(text, vision, image_token_index, 121)
        img = process_images([
            image_chw("coffee", (0, 0, 600, 400), (90, 130)),
            image_chw("astronaut", (0, 0, 512, 512), (110, 100)),
        ])
        ids = Ids(55, text["vocab_size"], {0, 1, 2, image_token_index, 121})
        ids.text(3).image(img["image_grid_thw"][0], 1, image_token_index).text(2)
        ids.image(img["image_grid_thw"][1], 1, image_token_index).text(6)
        inputs = {"input_ids": ids.tensor(), **img}
        make_fixture(args.out, "damo_layout", cfg=cfg, text=text, vision=vision, inputs=inputs, n_new=6,
                     seed=500, layout="damo",
                     description="original DAMO-NLP-SG layout (videollama3_qwen2 config, model.vision_encoder / "
                                 "model.mm_projector / model.layers names, 2 shards + index); text 64/4h/2kv "
                                 "(head_dim 16)/2L, vocab 128, untied; image_token_index 120; two images")

    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total size of {args.out}: {total} bytes")


if __name__ == "__main__":
    main()
