"""Minimal safetensors reading and writing in plain Python (numpy not needed), for the GPU check's
helpers: they must run wherever python3 does, the CPU machine that prepares the bundle included.

A tensor is returned as (dtype, shape, values): values a flat list of Python numbers (BF16 and
F16 decoded to float, BOOL to 0/1). Fixture tensors are small (the largest logits are 40k
values), so lists are fast enough.
"""

import array
import json
import struct
import sys

# safetensors dtype → (array typecode, bytes per element); BF16/F16/BOOL are decoded by hand.
_TYPECODES = {"F32": ("f", 4), "F64": ("d", 8), "I64": ("q", 8), "I32": ("i", 4), "U8": ("B", 1), "I8": ("b", 1)}
_SIZES = {"F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "I8": 1, "BF16": 2, "F16": 2, "BOOL": 1, "I16": 2, "U16": 2}


def read_header(path):
    """The header dict (tensor name → {dtype, shape, data_offsets}) and the data start offset."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, 8 + n


def read(path, names=None):
    """{name: (dtype, shape, values)} for every tensor (or only `names`)."""
    header, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if name == "__metadata__" or (names is not None and name not in names):
                continue
            begin, end = info["data_offsets"]
            f.seek(start + begin)
            raw = f.read(end - begin)
            out[name] = (info["dtype"], info["shape"], _decode(info["dtype"], raw))
    return out


def _decode(dtype, raw):
    if dtype in _TYPECODES:
        code, _ = _TYPECODES[dtype]
        a = array.array(code)
        a.frombytes(raw)
        if sys.byteorder != "little":
            a.byteswap()
        return a.tolist()
    if dtype == "BF16":
        halves = array.array("H")
        halves.frombytes(raw)
        if sys.byteorder != "little":
            halves.byteswap()
        words = array.array("I", (h << 16 for h in halves))
        return array.array("f", words.tobytes()).tolist()
    if dtype == "F16":
        return [struct.unpack("<e", raw[i : i + 2])[0] for i in range(0, len(raw), 2)]
    if dtype == "BOOL":
        return list(raw)
    raise ValueError(f"unsupported safetensors dtype {dtype}")


def write(path, tensors):
    """Writes {name: (dtype, shape, values)}; dtypes F32, I64, I32, BOOL."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        if dtype == "BOOL":
            blob = bytes(1 if v else 0 for v in values)
        else:
            code, _ = _TYPECODES[dtype]
            a = array.array(code, values)
            if sys.byteorder != "little":
                a.byteswap()
            blob = a.tobytes()
        count = 1
        for d in shape:
            count *= d
        if len(blob) != count * _SIZES[dtype]:
            raise ValueError(f"{name}: {len(values)} values for shape {shape}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)
