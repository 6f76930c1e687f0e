"""Wrap `vl3c preprocess` output into `vl3c eval` inputs with VideoLLaMA3's chat layout.

    python tools/bench/prompt_with_image.py PIXELS.safetensors OUT.safetensors

input_ids = <|im_start|>user\\n + <|image_pad|> × tokens + \\nDescribe the image.<|im_end|>\\n
<|im_start|>assistant\\n, with Qwen2.5 ids (spec §5). Needs numpy and safetensors only.
"""
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

IMAGE_PAD = 151655
PREFIX = [151644, 872, 198]
SUFFIX = [198, 74785, 279, 2168, 13, 151645, 198, 151644, 77091, 198]

pixels = load_file(sys.argv[1])
grid = pixels["image_grid_thw"]
merge = pixels["image_merge_sizes"]
tokens = int(sum(int(t * h * w) // int(m * m) for (t, h, w), m in zip(grid, merge)))
ids = np.array([PREFIX + [IMAGE_PAD] * tokens + SUFFIX], dtype=np.int64)
save_file({**pixels, "input_ids": ids}, sys.argv[2])
print(f"{tokens} image tokens, {ids.shape[1]} positions")
