#!/usr/bin/env python3
"""GPU probe that needs nothing but the driver: through libcuda (ctypes), reports the driver's CUDA
version and device 0 (name, SM, memory, multiprocessors), then loads each engine's cubin
(`cuda/sm_XX.cubin`) and looks up every kernel its ptxas report names, comparing the register
count the driver reports with ptxas'. With --ptx, also JIT-loads the first engine's PTX
(`cuda/compute_XX.ptx`), which works only if the driver is at least as new as NVRTC.

Independent of vl3c's own runtime: when `vl3c eval --device cuda` fails, this tells whether the
cubins themselves load. Prints one JSON object; exit 0 when every cubin and kernel loaded, 1 when
something did not, 3 when there is no driver (a CPU machine: the dry run).

    python3 tools/gpu/probe.py --ptx ENGINE [ENGINE ...]
"""

import argparse
import ctypes
import glob
import json
import os
import sys
import time

ATTR_CC_MAJOR, ATTR_CC_MINOR, ATTR_SM_COUNT = 75, 76, 16
FUNC_ATTR_NUM_REGS = 4


class Cuda:
    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")

    def call(self, name, *args):
        rc = getattr(self.lib, name)(*args)
        if rc != 0:
            raise RuntimeError(f"{name}: {self.error_name(rc)}")

    def error_name(self, rc):
        s = ctypes.c_char_p()
        try:
            self.lib.cuGetErrorName(rc, ctypes.byref(s))
            return f"{s.value.decode()} ({rc})" if s.value else f"error {rc}"
        except AttributeError:
            return f"error {rc}"


def device_info(cu):
    cu.call("cuInit", 0)
    version = ctypes.c_int()
    cu.call("cuDriverGetVersion", ctypes.byref(version))
    count = ctypes.c_int()
    cu.call("cuDeviceGetCount", ctypes.byref(count))
    dev = ctypes.c_int()
    cu.call("cuDeviceGet", ctypes.byref(dev), 0)
    name = ctypes.create_string_buffer(256)
    cu.call("cuDeviceGetName", name, 256, dev)

    def attr(a):
        v = ctypes.c_int()
        cu.call("cuDeviceGetAttribute", ctypes.byref(v), a, dev)
        return v.value

    mem = ctypes.c_size_t()
    cu.call("cuDeviceTotalMem_v2", ctypes.byref(mem), dev)
    info = {
        "driver_cuda_version": f"{version.value // 1000}.{version.value % 1000 // 10}",
        "devices": count.value,
        "name": name.value.decode(),
        "sm": f"{attr(ATTR_CC_MAJOR)}{attr(ATTR_CC_MINOR)}",
        "multiprocessors": attr(ATTR_SM_COUNT),
        "memory_bytes": mem.value,
    }
    return dev, info


def load_module(cu, image):
    module = ctypes.c_void_p()
    cu.call("cuModuleLoadData", ctypes.byref(module), image)
    return module


def check_engine(cu, engine, sm, ptx):
    """Loads the engine's cubin for `sm` and every kernel ptxas reported; optionally its PTX."""
    out = {"engine": engine}
    cubin = os.path.join(engine, "cuda", f"sm_{sm}.cubin")
    if not os.path.isfile(cubin):
        found = sorted(glob.glob(os.path.join(engine, "cuda", "sm_*.cubin")))
        out["error"] = f"no sm_{sm}.cubin (engine has {[os.path.basename(f) for f in found]})"
        return out, False
    report_path = os.path.join(engine, "cuda", f"ptxas_sm_{sm}.json")
    report = json.load(open(report_path)) if os.path.isfile(report_path) else []
    data = open(cubin, "rb").read()
    start = time.perf_counter()
    try:
        module = load_module(cu, data)
    except RuntimeError as e:
        out["error"] = f"cubin: {e}"
        return out, False
    out["cubin_bytes"] = len(data)
    out["cubin_load_s"] = round(time.perf_counter() - start, 4)
    missing, register_mismatch = [], []
    for k in report:
        f = ctypes.c_void_p()
        try:
            cu.call("cuModuleGetFunction", ctypes.byref(f), module, k["kernel"].encode())
        except RuntimeError as e:
            missing.append(f"{k['kernel']}: {e}")
            continue
        regs = ctypes.c_int()
        cu.call("cuFuncGetAttribute", ctypes.byref(regs), FUNC_ATTR_NUM_REGS, f)
        if regs.value != k["registers"]:
            register_mismatch.append(f"{k['kernel']}: driver {regs.value}, ptxas {k['registers']}")
    cu.call("cuModuleUnload", module)
    out["kernels"] = len(report)
    out["kernels_missing"] = missing
    out["register_mismatch"] = register_mismatch
    ok = not missing
    if ptx:
        ptx_path = os.path.join(engine, "cuda", f"compute_{sm}.ptx")
        start = time.perf_counter()
        try:
            module = load_module(cu, open(ptx_path, "rb").read() + b"\0")
            cu.call("cuModuleUnload", module)
            out["ptx_jit"] = "loaded"
        except (OSError, RuntimeError) as e:
            # Informational: the cubin is what runs; PTX is the fallback for other GPUs.
            out["ptx_jit"] = f"failed: {e}"
        out["ptx_jit_s"] = round(time.perf_counter() - start, 3)
    return out, ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("engines", nargs="*", help="engine directories written by `vl3c compile --target cuda`")
    p.add_argument("--ptx", action="store_true", help="also JIT-load the first engine's PTX")
    a = p.parse_args()

    result = {}
    try:
        cu = Cuda()
    except OSError as e:
        result["driver"] = f"not available: {e}"
        print(json.dumps(result))
        return 3
    try:
        dev, info = device_info(cu)
        result.update(info)
        ctx = ctypes.c_void_p()
        cu.call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        cu.call("cuCtxSetCurrent", ctx)
    except RuntimeError as e:
        result["driver"] = f"error: {e}"
        print(json.dumps(result))
        return 1

    ok = True
    result["engines"] = []
    engines = list(dict.fromkeys(os.path.normpath(e) for e in a.engines))
    for i, engine in enumerate(engines):
        r, good = check_engine(cu, engine, info["sm"], a.ptx and i == 0)
        result["engines"].append(r)
        ok = ok and good
    result["all_cubins_loaded"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
