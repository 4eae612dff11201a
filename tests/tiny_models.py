"""The one recipe for the tiny random-init Llamas the tests build (conftest.py holds the shared
ones): a byte-level BPE trained on a few lines of code, and a Llama sized by the few knobs its
callers need. Random weights are enough wherever a test compares the code under test with a
reference computed on the same model; tests of the real base model use collapse_ray.base_model."""
from __future__ import annotations

import torch

LINES = [
    "def add(a, b):\n    return a + b\n",
    "def sub(a, b):\n    return a - b\n",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    print(i * i)\n",
    '"""Return the sum of two numbers."""\n',
]


def tiny_tokenizer(texts=LINES, vocab_size: int = 300, byte_alphabet: bool = True, adds_bos_and_eos: bool = False):
    """A byte-level BPE trained on ``texts`` with ``<pad>``, ``<eos>`` and ``<bos>`` special tokens.

    ``byte_alphabet``: all 256 byte symbols are in the vocabulary, so any text encodes; without it
    only the bytes of ``texts`` are, so every token of an ASCII corpus decodes to valid text (what
    a comparison of decoded generations needs). ``adds_bos_and_eos``: every encoding is wrapped in
    ``<bos> ... <eos>``, as many hub tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_alphabet else []
    bpe.train_from_iterator(list(texts) * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>"], initial_alphabet=alphabet))
    extra = {}
    if adds_bos_and_eos:
        bos, eos = bpe.token_to_id("<bos>"), bpe.token_to_id("<eos>")
        bpe.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                           special_tokens=[("<bos>", bos), ("<eos>", eos)])
        extra["bos_token"] = "<bos>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>", **extra)


def save_tiny_llama(path, tokenizer=None, *, seed: int = 0, hidden_size: int = 32, layers: int = 1,
                    head_dim: int | None = None, tied: bool = False, initializer_range: float = 0.02) -> str:
    """A random-init Llama (4 heads, MLP twice the hidden size) with ``tokenizer`` (default
    ``tiny_tokenizer()``), both saved in HF format at ``path``; returns ``str(path)``.

    ``head_dim``: vLLM's CPU attention needs at least 32; ``initializer_range``: larger values give
    peaked logits, so greedy decoding has no near-ties for two implementations to break apart."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         head_dim=head_dim or hidden_size // 4, max_position_embeddings=512,
                         initializer_range=initializer_range, tie_word_embeddings=tied,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def reference_score(model, context_ids, target_ids, special_ids):
    """(mean NLL, mean entropy, scored ids) of ``target_ids`` given ``context_ids``: one forward
    pass, log_softmax, the prompt positions and special tokens masked."""
    ids = list(context_ids) + list(target_ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    positions = [j for j in range(len(context_ids), len(ids)) if ids[j] not in special_ids]
    nll = [-logp[j - 1, ids[j]].item() for j in positions]
    entropy = [-(logp[j - 1].exp() * logp[j - 1]).sum().item() for j in positions]
    return sum(nll) / len(nll), sum(entropy) / len(entropy), [ids[j] for j in positions]


def llama_and_qwen3_configs():
    """Two small configs whose parameters the size estimates must count as transformers builds
    them: a Llama with grouped-query attention and untied embeddings, and a Qwen3 (q/k norms, a
    head_dim other than hidden / heads) with tied ones."""
    from transformers import LlamaConfig, Qwen3Config

    return (LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
            Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True))
