"""The DARTS search space in one import: supernet, genotypes and the discrete networks.

    from sdarts.darts import DartsSupernet, GENOTYPES, build_network
    net = build_network(GENOTYPES["DARTS_V2"], dataset="cifar10")   # 3.35M parameters

(The code lives in ``sdarts/spaces/darts/``; model-size counters in ``sdarts.train``.)
"""

from .spaces.darts import *  # noqa: F401,F403
from .spaces.darts import __all__  # noqa: F401
