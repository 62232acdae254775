"""Analysis of trained models: layer-wise hidden-state and gradient similarity of parallel inputs,
the logit lens by layer, and language-specific neurons (LAPE)."""

from xlt.analysis.lens import (LensProbe, LensResult, TunedLens, final_norm_and_head, lens_log_probs, lens_metrics,
                               load_tuned_lens, probes_from_pairs, read_probes, run_lens)
from xlt.analysis.neurons import (ActivationSite, NeuronSelection, activation_probability, activation_sites,
                                  deactivate_neurons, greedy_generate, lape, line_perplexity, nearest_rank,
                                  positive_counts, select_neurons)

from xlt.analysis.similarity import (SimilarityResult, analyze_parallel, clone_embedding_similarity,
                                     gradient_cosine,
                                     hidden_similarity, layer_states, linear_cka,
                                     max_weight_matching, pack_parallel, pooled_cosine)

__all__ = ["SimilarityResult", "analyze_parallel", "clone_embedding_similarity", "gradient_cosine", "hidden_similarity",
           "layer_states", "linear_cka", "max_weight_matching", "pack_parallel", "pooled_cosine",
           "LensProbe", "LensResult", "TunedLens", "final_norm_and_head", "lens_log_probs", "lens_metrics",
           "load_tuned_lens",
           "probes_from_pairs", "read_probes", "run_lens",
           "ActivationSite", "NeuronSelection", "activation_probability", "activation_sites", "deactivate_neurons",
           "greedy_generate", "lape", "line_perplexity", "nearest_rank", "positive_counts", "select_neurons"]
