"""Bytes one MixedOp edge saves for backward: plain sum(w*op(x)), fused, fused + recompute.

The count bench/mixed_op.py makes in its `edge` case (its `saved MB` column):
sdarts.diagnostics.saved_bytes (unique storages, module parameters excluded) around one
forward + backward of a seeded MixedOp, without bench/mixed_op.py's timing, and with the
recompute settings, which bench/mixed_op.py does not cover.  Deterministic; no timing.
Run from the repository root: python bench/edge_saved_bytes.py OUT.json
"""
import sys

import torch

sys.path.insert(0, "bench")
from common import MB, machine_info, saved_bytes, set_threads, uncommitted_changes, write_json

import sdarts
from sdarts.primitives import DARTS, NB201

set_threads(2)
SIZE = (64, 16, 32, 32)
EDGES = {"nb201": (NB201, 1), "darts_normal": (DARTS, 1), "darts_reduction": (DARTS, 2)}
VARIANTS = {  # name: (fused, recompute)
    "plain": (False, False),
    "fused": (True, False),
    "fused_recompute_1x1": (True, ("nor_conv_1x1",)),
    "fused_recompute_sepconvs": (True, ("sep_conv_3x3", "sep_conv_5x5")),
    "fused_recompute_edge": (True, True),
}
rows = []
for edge, (primitives, stride) in EDGES.items():
    torch.manual_seed(0)
    x = torch.randn(SIZE).requires_grad_()
    w = torch.rand(len(primitives)).requires_grad_()
    for variant, (fused, recompute) in VARIANTS.items():
        if isinstance(recompute, tuple) and not set(recompute) <= set(primitives.names):
            continue
        for backend in (("cpu", "reference") if fused else ("reference",)):
            torch.manual_seed(0)  # as bench/mixed_op.py's build_edge
            module = sdarts.MixedOp(SIZE[1], stride, primitives, backend=backend, fused=fused, recompute=recompute)
            params = [p for p in module.parameters() if p.requires_grad]

            def run():
                out = module(x, w)
                torch.autograd.grad(out, [x, w, *params], torch.ones_like(out))
                return out

            kept = saved_bytes(run, ignore=list(module.parameters()))
            rows.append({"edge": edge, "stride": stride, "size": "x".join(map(str, SIZE)), "K": len(primitives),
                         "variant": variant, "backend": backend, "recompute": recompute,
                         "saved_bytes": kept["bytes"], "saved_mb": kept["bytes"] / MB, "saved_tensors": kept["tensors"]})
            print(f"{edge:16s} {variant:25s} {backend:9s} {kept['bytes'] / MB:8.3f} MB ({kept['tensors']} storages)", flush=True)
for row in rows:
    plain = next(r for r in rows if r["edge"] == row["edge"] and r["variant"] == "plain")
    row["vs_plain"] = row["saved_bytes"] / plain["saved_bytes"]
write_json(sys.argv[1], {
    "command": f"python {sys.argv[0]} {sys.argv[1]}",
    "machine": machine_info(torch.device("cpu")),
    "uncommitted_changes": uncommitted_changes(),
    "note": "float32, batch 64, training mode; x and relu(x) of 64x16x32x32 float32 are 2 x 4.194 MB = 8.389 MB",
    "rows": rows,
})
