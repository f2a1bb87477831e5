"""synapseml-ext: sentence embeddings and nearest-neighbour search on Apache Spark.

Stages: :class:`synapseml_ext.hf.HuggingFaceSentenceEmbedder` and
:class:`synapseml_ext.nn.ApproximateNearestNeighbors`. The Spark-free encoder lives in
:mod:`synapseml_ext.engine`.
"""

__version__ = "0.1.0"
