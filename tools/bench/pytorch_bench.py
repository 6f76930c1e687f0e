#!/usr/bin/env python3
"""PyTorch baseline for `vl3c bench`: the same three phases on the same shapes with transformers.

Builds VideoLlama3ForConditionalGeneration from a config.json with random weights (seeded, no
hub, no checkpoint), then times, with `--threads` torch threads:
  vision   get_image_features on one image_size² image (merge 1): vision encoder + projector;
  prefill  model(input_ids, logits_to_keep=1) over `context` random non-special text ids (the
           last position's logits, what generate() asks for and `vl3c bench` computes);
  decode   `decode_tokens` greedy steps in a bare loop over the prefill's KV cache, and, as a
           second figure, `generate(max_new_tokens=decode_tokens, do_sample=False)`.
Every figure is the median of --repeat runs after --warmup. Prints one JSON object with the keys
of `vl3c bench --json` (vision_s, prefill_s, decode_tok_s, peak_rss_bytes) plus extras.

    python tools/bench/pytorch_bench.py --config examples/configs/videollama3-2b/config.json \
        --dtype bf16 --image-size 448 --context 300 --decode-tokens 32

`--device cuda` runs the same phases on the GPU (the baseline of `vl3c bench --device cuda`): the
model is built on the device, attention is transformers' "sdpa" unless --attn says otherwise, and
every timed phase is bracketed by torch.cuda.synchronize(), so a figure is the GPU's work and not
only the launches. Adds peak_gpu_bytes (torch.cuda.max_memory_allocated) and the GPU's name.
The default stays the CPU, as tools/bench/compare.sh uses it.
"""

import argparse
import inspect
import json
import resource
import statistics
import sys
import time

import torch
import transformers
from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

# Qwen2's special tokens start here; `vl3c bench` draws its random ids below the same bound.
FIRST_SPECIAL_ID = 151643


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="examples/configs/videollama3-2b/config.json")
    p.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--context", type=int, default=300)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-generate", action="store_true", help="skip the generate() decode figure")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument(
        "--attn",
        help='attn_implementation ("sdpa", "eager", …); default: "sdpa" on CUDA, transformers\' own choice on the CPU',
    )
    a = p.parse_args()
    if a.device != "cpu" and not a.device.startswith("cuda"):
        p.error("--device must be cpu, cuda or cuda:N")
    for name in ["image_size", "context", "decode_tokens", "threads", "repeat"]:
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    return a


def build_model(config_path, dtype, seed, device="cpu", attn=None):
    cfg = VideoLlama3Config.from_json_file(config_path)
    torch.manual_seed(seed)
    kwargs = {"dtype": dtype}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    # The config's own initializers (normal, std initializer_range): realistic magnitudes, no
    # denormals or NaNs that an uninitialized tensor could hold and that would skew timings.
    # On a GPU the parameters are created (and initialized) there: seconds instead of a minute.
    with torch.device(device):
        try:
            model = VideoLlama3ForConditionalGeneration._from_config(cfg, **kwargs)
        except TypeError:
            if attn is None:
                raise
            # A transformers whose _from_config takes no attn_implementation: set it on the config.
            cfg._attn_implementation = attn
            model = VideoLlama3ForConditionalGeneration._from_config(cfg, dtype=dtype)
    return model.to(device).eval(), cfg


def random_ids(cfg, n, gen):
    text = cfg.text_config
    special = {cfg.image_token_id, getattr(cfg, "video_token_id", None), text.bos_token_id, text.pad_token_id}
    eos = text.eos_token_id
    special.update(eos if isinstance(eos, list) else [eos])
    hi = min(text.vocab_size, FIRST_SPECIAL_ID)
    ids = []
    while len(ids) < n:
        ids += [i for i in torch.randint(0, hi, (n,), generator=gen).tolist() if i not in special]
    return torch.tensor([ids[:n]], dtype=torch.long)


# transformers ≥ 5.2x names the KV cache `cache` (in and out); older releases `past_key_values`.
CACHE_ARG = "cache" if "cache" in inspect.signature(VideoLlama3ForConditionalGeneration.forward).parameters else "past_key_values"


def cache_of(out):
    return getattr(out, CACHE_ARG)


def sync():
    """Waits for the GPU's queued work (nothing to wait for on the CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
    cuda = a.device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda, but torch sees no GPU")
        if ":" in a.device:
            torch.cuda.set_device(torch.device(a.device))
        torch.cuda.init()
    attn = a.attn or ("sdpa" if cuda else None)
    model, cfg = build_model(a.config, dtype, a.seed, a.device, attn)
    vc = cfg.vision_config
    patch = vc.patch_size
    if a.image_size % patch:
        sys.exit(f"error: --image-size {a.image_size} must be a multiple of the patch size {patch}")
    side = a.image_size // patch
    gen = torch.Generator().manual_seed(a.seed + 1)
    # Normalized pixels lie in [-1, 1]; rows are channels·patch² values, merge-1 patch order.
    pixels = (torch.rand(side * side, vc.num_channels * patch * patch, generator=gen) * 2 - 1).to(dtype)
    grid = torch.tensor([[1, side, side]])
    merge = torch.tensor([1])
    ids = random_ids(cfg, a.context, gen)
    # Drawn on the CPU (same values whatever the device), then moved.
    pixels, grid, merge, ids = (t.to(a.device) for t in (pixels, grid, merge, ids))

    def one_run():
        _, vision_s = timed(lambda: model.model.get_image_features(pixels, grid, merge))
        out, prefill_s = timed(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1))
        past = cache_of(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        start = time.perf_counter()
        for _ in range(a.decode_tokens):
            out = model(input_ids=nxt, use_cache=True, **{CACHE_ARG: past})
            past = cache_of(out)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        decode_s = time.perf_counter() - start
        generate_s = None
        if not a.no_generate:
            _, generate_s = timed(
                lambda: model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=a.decode_tokens,
                    min_new_tokens=a.decode_tokens,
                    do_sample=False,
                )
            )
        return dict(vision_s=vision_s, prefill_s=prefill_s, decode_s=decode_s, generate_s=generate_s)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = []
    with torch.inference_mode():
        for i in range(a.warmup + a.repeat):
            r = one_run()
            if i >= a.warmup:
                runs.append(r)

    med = lambda k: statistics.median(r[k] for r in runs)
    result = {
        "vision_s": med("vision_s"),
        "prefill_s": med("prefill_s"),
        "decode_tok_s": a.decode_tokens / med("decode_s"),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if cuda:
        result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    if not a.no_generate:
        # generate() = one prefill (yielding the first token) + decode_tokens-1 decode steps.
        gen_s = med("generate_s")
        decode_part = gen_s - result["prefill_s"]
        result["generate_s"] = gen_s
        result["generate_decode_tok_s"] = (a.decode_tokens - 1) / decode_part if a.decode_tokens > 1 and decode_part > 0 else None
    result["runs"] = {
        "vision_s": [r["vision_s"] for r in runs],
        "prefill_s": [r["prefill_s"] for r in runs],
        "decode_tok_s": [a.decode_tokens / r["decode_s"] for r in runs],
    }
    result["config"] = {
        "backend": f"pytorch {a.dtype}" + (f" {a.device}" if cuda else ""),
        "device": a.device,
        "source": a.config,
        "dtype": a.dtype,
        "image_size": a.image_size,
        "patches": side * side,
        "context": a.context,
        "decode_tokens": a.decode_tokens,
        "threads": a.threads,
        "warmup": a.warmup,
        "repeat": a.repeat,
        "attn_implementation": model.config._attn_implementation,
        "vision_attn_implementation": getattr(model.config.vision_config, "_attn_implementation", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if cuda:
        result["config"]["gpu"] = torch.cuda.get_device_name()
        result["config"]["cuda"] = torch.version.cuda
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
