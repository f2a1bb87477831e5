"""k-nearest-neighbour search over an embedding column: ``ApproximateNearestNeighbors``."""

from synapseml_ext.nn.model import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel

__all__ = ["ApproximateNearestNeighbors", "ApproximateNearestNeighborsModel"]
