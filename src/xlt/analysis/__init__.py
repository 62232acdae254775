"""Analysis of trained models: layer-wise hidden-state and gradient similarity of parallel inputs."""

from xlt.analysis.similarity import (SimilarityResult, analyze_parallel, clone_embedding_similarity,
                                     gradient_cosine,
                                     hidden_similarity, layer_states, linear_cka,
                                     max_weight_matching, pack_parallel, pooled_cosine)

__all__ = ["SimilarityResult", "analyze_parallel", "clone_embedding_similarity", "gradient_cosine", "hidden_similarity",
           "layer_states", "linear_cka", "max_weight_matching", "pack_parallel", "pooled_cosine"]
