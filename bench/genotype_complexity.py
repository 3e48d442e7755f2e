"""Parameters and multiply-adds of the README's genotypes, as sdarts-train prints them.

The same path as sdarts-train's "parameters ...M (auxiliary head excluded), multiply-adds ...M"
line: make_config (the dataset's recipe) -> sdarts.train.loop.network_for -> describe_model
(sdarts/train/complexity.py: count_parameters, count_macs).  Deterministic; no data needed.
Run from the repository root: python bench/genotype_complexity.py OUT.json
"""
import sys

import torch

sys.path.insert(0, "bench")
from common import machine_info, uncommitted_changes, write_json  # bench/common.py

from sdarts.spaces.darts.genotype import GENOTYPES, genotype_to_json, parse_genotype
from sdarts.train.loop import describe_model, network_for
from sdarts.train.recipes import make_config

SETTINGS = {"cifar10": ((3, 32, 32), 10), "imagenet": ((3, 224, 224), 1000)}
rows = []
for name in ("DARTS_V1", "DARTS_V2", "PC_DARTS", "PDARTS"):
    genotype = genotype_to_json(parse_genotype(name))
    for dataset, (input_size, classes) in SETTINGS.items():
        config = make_config(genotype, dataset)
        torch.manual_seed(0)
        size = describe_model(network_for(config, classes), input_size)
        rows.append({"genotype": name, "dataset": dataset, "layers": config.layers, "init_channels": config.init_channels,
                     "auxiliary": config.auxiliary_weight > 0, "num_classes": classes, "input_size": list(input_size), **size})
        print(f"{name:9s} {dataset:9s} parameters {size['params_m']:.3f}M multiply-adds {size['macs_m']:.1f}M", flush=True)
write_json(sys.argv[1], {
    "command": f"python {sys.argv[0]} {sys.argv[1]}",
    "machine": machine_info(torch.device("cpu")),
    "uncommitted_changes": uncommitted_changes(),
    "note": "params_m: parameters / 1e6, auxiliary head excluded; macs_m: Conv2d + Linear multiply-adds of one image / 1e6 "
            "(eval-mode forward, so the auxiliary head is not counted); recipe: make_config defaults of each dataset",
    "rows": rows,
})
