"""What this project adds to vLLM's worker (engine argument ``worker_extension_cls``): an in-place
weight reload that also works for models with tied embeddings.

vLLM 0.32's ``reload_weights`` re-creates parameters layer by layer, so an output layer that
shared its weight with the input embedding keeps the old tensor while the embedding gets the
new one (the weight probe measured a mean log-prob error of 1.17). Small models tie them
(Qwen3-0.6B, Llama-3.2-1B/3B, the tiny model), and rebuilding their engine at every generation
costs an engine start-up each time, and on GPU would throw away a sleeping colocated engine.
After the reload the output layer is tied again the way the model's constructor ties it, and
processed again as loading processes it (vLLM's CPU build packs its weight for the GEMM: re-tied
but not re-packed, it served the old weights, log-prob error 1.4-2.1 in a grid). The methods run
inside vLLM's worker process (``collective_rpc`` by name), so they import only what it has.
"""
from __future__ import annotations

RELOAD_METHOD = "collapse_ray_reload_weights"
QUALNAME = f"{__name__}.WeightReload"


class WeightReload:
    """Mixed into vLLM's worker class by vLLM; ``self`` is the worker."""

    def collapse_ray_reload_weights(self, weights_path: str, tied: bool) -> bool:
        """Reload the weights at ``weights_path`` in place; with ``tied``, tie the output layer
        to the input embedding again. False where this model's layout is not one that can be
        re-tied (the caller then rebuilds the engine)."""
        self.reload_weights(weights_path=weights_path)
        return retie_word_embeddings(self.get_model()) if tied else True


def retie_word_embeddings(model) -> bool:
    """Point the output layer at the input embedding's weight, as vLLM's Llama and Qwen3
    constructors do (``lm_head.tie_weights(model.embed_tokens)``), and process it again as
    loading does (vLLM's CPU build packs the output layer's weight for its GEMM: the old one
    stays packed otherwise; on GPU this is a no-op). Whether the output layer now serves the
    embedding's weight; False for a layout or a quantized output layer this does not know."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    head = getattr(model, "lm_head", None)
    if embed is None or head is None or not isinstance(getattr(head, "quant_method", None), UnquantizedEmbeddingMethod):
        return False
    head.tie_weights(embed)
    head.quant_method.process_weights_after_loading(head)
    return head.weight is embed.weight
