"""Everything NAS-Bench-201 in one import: the search space, its cells, the networks the
benchmark trained, and its accuracy table.

    from sdarts.nb201 import NB201Supernet, NB201Cell, NB201Table, build_network

(The code lives in ``sdarts/spaces/nb201/``.)
"""

from .spaces.nb201 import *  # noqa: F401,F403
from .spaces.nb201 import __all__  # noqa: F401
