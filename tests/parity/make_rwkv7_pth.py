#!/usr/bin/env python3
"""Writes the test fixtures of `smoothread convert --from rwkv7-pth` (tests/data/rwkv7_pth/):

  tiny.pth           a torch.save-format zip (protocol-2 data.pkl + one file per storage) holding a
                     random RWKV-7 x070 state dict under BlinkDL's names and shapes: matrices in
                     bfloat16, vectors in float32, layer 0's unused v0/v1/v2 included, as in
                     BlinkDL's checkpoints
  expected.safetensors  the same weights in fla-hub names and orientation (fp32, the bf16 values
                     widened), the converter's expected output
  evil.pth           a data.pkl that calls os.system: the reader must refuse it, executing nothing

Needs numpy only (no torch): the pickle is produced by Python's own pickler with stand-in
`torch` / `torch._utils` modules, so its opcodes and globals are exactly those torch.save writes.
The BlinkDL <-> fla mapping is the one tests/parity/rwkv7_x070.py checks against BlinkDL's numpy
reference.

    python3 tests/parity/make_rwkv7_pth.py tests/data/rwkv7_pth
"""
import collections, importlib.util, json, os, pickle, struct, sys, types, zipfile

import numpy as np

V, C, L, N, F, DW, DA, DV, DG = 50, 32, 2, 16, 64, 8, 8, 8, 8
H = C // N


def fla_weights(rng):
    w = {"model.embeddings.weight": (V, C), "model.norm.weight": (C,), "model.norm.bias": (C,),
         "lm_head.weight": (V, C), "model.layers.0.pre_norm.weight": (C,), "model.layers.0.pre_norm.bias": (C,)}
    for i in range(L):
        p, a = f"model.layers.{i}.", f"model.layers.{i}.attn."
        for n in ["attn_norm", "ffn_norm"]:
            w[p + n + ".weight"], w[p + n + ".bias"] = (C,), (C,)
        for m in "rwkvag":
            w[a + f"x_{m}"] = (1, 1, C)
        w[a + "k_k"], w[a + "k_a"], w[a + "r_k"] = (C,), (C,), (H, N)
        for m in ["r_proj", "k_proj", "v_proj", "o_proj"]:
            w[a + m + ".weight"] = (C, C)
        for lora, r, bias in [("w_lora", DW, True), ("a_lora", DA, True), ("v_lora", DV, True), ("g_lora", DG, False)]:
            if lora == "v_lora" and i == 0:
                continue
            w[a + lora + ".lora.0.weight"], w[a + lora + ".lora.2.weight"] = (r, C), (C, r)
            if bias:
                w[a + lora + ".lora.2.bias"] = (C,)
        w[a + "g_norm.weight"], w[a + "g_norm.bias"] = (C,), (C,)
        w[p + "ffn.x_k"], w[p + "ffn.key.weight"], w[p + "ffn.value.weight"] = (C,), (F, C), (C, F)
    return {k: (rng.standard_normal(s) * 0.3).astype(np.float32) for k, s in w.items()}


def bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return u.astype(np.uint16)


def bf16_round(x):
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


# ---- stand-ins for the torch globals that torch.save's pickle names ----
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
torch._utils = torch_utils
sys.modules["torch"], sys.modules["torch._utils"] = torch, torch_utils
for name in ["FloatStorage", "BFloat16Storage"]:
    cls = type(name, (), {})
    cls.__module__ = "torch"
    setattr(torch, name, cls)


def _rebuild_tensor_v2(*args):
    raise RuntimeError("fixture only")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Storage:
    def __init__(self, cls, key, numel, payload):
        self.cls, self.key, self.numel, self.payload = cls, key, numel, payload


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce_ex__(self, proto):
        stride, s = [], 1
        for d in reversed(self.shape):
            stride.insert(0, s)
            s *= d
        return (_rebuild_tensor_v2, (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def write_pth(path, tensors):
    storages, sd = [], collections.OrderedDict()
    for name, arr in tensors.items():
        key = str(len(storages))
        if arr.ndim >= 2 and arr.shape[0] > 1 and arr.shape[-1] > 1:  # matrices in bf16, vectors in fp32
            st = Storage(torch.BFloat16Storage, key, arr.size, bf16_bits(arr).tobytes())
        else:
            st = Storage(torch.FloatStorage, key, arr.size, np.ascontiguousarray(arr, dtype="<f4").tobytes())
        storages.append(st)
        sd[name] = Tensor(st, arr.shape)
    buf = __import__("io").BytesIO()
    TorchPickler(buf, protocol=2).dump(sd)
    stem = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(stem + "/data.pkl", buf.getvalue())
        z.writestr(stem + "/byteorder", "little")
        for st in storages:
            z.writestr(stem + "/data/" + st.key, st.payload)
        z.writestr(stem + "/version", "3\n")


def write_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/rwkv7_pth"
    os.makedirs(out, exist_ok=True)
    spec = importlib.util.spec_from_file_location("x070", os.path.join(os.path.dirname(__file__), "rwkv7_x070.py"))
    x070 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(x070)
    fla = fla_weights(np.random.default_rng(7))
    blink = x070.blinkdl_weights(fla, L)  # BlinkDL names and orientation, squeezed, float64
    shaped = collections.OrderedDict()
    for k, v in blink.items():
        v = v.astype(np.float32)
        last = k.rsplit(".", 1)[-1]
        if last in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a"):
            v = v.reshape(1, 1, C)  # BlinkDL keeps these as [1, 1, C]
        shaped[k] = v
        if k == "blocks.0.att.g2":  # layer 0 carries v0/v1/v2 that x070 never uses
            shaped["blocks.0.att.v0"] = np.zeros((1, 1, C), np.float32)
            shaped["blocks.0.att.v1"] = np.zeros((C, DV), np.float32)
            shaped["blocks.0.att.v2"] = np.zeros((DV, C), np.float32)
    write_pth(os.path.join(out, "tiny.pth"), shaped)
    # what the converter must write: fla layout, with the bf16-stored tensors rounded as stored
    stored_bf16 = {k for k, v in shaped.items() if v.ndim >= 2 and v.shape[0] > 1 and v.shape[-1] > 1}
    inv = {}
    for k, v in fla.items():
        inv[k] = v
    # which fla tensors came from bf16 storage: map back by value identity through the x070 mapping
    back = x070.blinkdl_weights({k: np.arange(v.size, dtype=np.float64).reshape(v.shape) * 0 + i
                                 for i, (k, v) in enumerate(fla.items())}, L)
    names = list(fla)
    for bk, marker in back.items():
        if bk in stored_bf16:
            fk = names[int(np.asarray(marker).flat[0])]
            inv[fk] = bf16_round(fla[fk])
    write_safetensors(os.path.join(out, "expected.safetensors"), inv)
    # evil.pth: data.pkl = os.system("echo pwned")
    with zipfile.ZipFile(os.path.join(out, "evil.pth"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("evil/data.pkl", b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.")
    print("wrote", out, len(shaped), "tensors")


if __name__ == "__main__":
    main()
