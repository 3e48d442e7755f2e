"""The DARTS search space (quark0/darts): the supernet searched over, its genotype type, and
the discrete networks a genotype is retrained as.  ``sdarts.darts`` is its public face."""

from .genotype import GENOTYPES, Genotype, derive_genotype, genotype_from_json, genotype_to_json, parse_genotype
from .network import NUM_CLASSES, NetworkCIFAR, NetworkImageNet, build_network
from .supernet import DartsSupernet

__all__ = [
    "DartsSupernet", "GENOTYPES", "Genotype", "NUM_CLASSES", "NetworkCIFAR", "NetworkImageNet", "build_network",
    "derive_genotype", "genotype_from_json", "genotype_to_json", "parse_genotype",
]
