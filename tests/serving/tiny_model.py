"""Builds a tiny Qwen2 chat model locally: random weights, a byte-level BPE tokenizer trained here,
and a ChatML template. Nothing is downloaded. Runs in the serving virtualenv (torch, transformers)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WORDS = "the a model serves answers image text token cache kernel tensor parallel shard node gpu ray".split()


def training_lines(count: int = 600, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(count)]


def build(target: Path, hidden: int = 256, layers: int = 2) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_lines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)

    torch.manual_seed(0)
    # head_dim 64: vLLM's CPU attention rejects 16 (measured in shared/reference/local-vllm.md).
    config = Qwen2Config(
        vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"), torch_dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    # Token ids that show nothing on their own get zero embeddings: special tokens, whitespace, ids the
    # trained vocabulary left unused, and single bytes that are not UTF-8 by themselves (vLLM's detokenizer
    # holds those back). The embeddings are tied, so their logits are 0, below the largest of the random
    # others: greedy decoding never picks them, and a smoke check of a random model sees content (it once
    # answered 32 such tokens, an empty string).
    def shows_nothing(token_id: int) -> bool:
        text = fast.decode([token_id], skip_special_tokens=True)
        return not text.strip() or "\ufffd" in text

    blank = [i for i in range(config.vocab_size) if shows_nothing(i)]
    with torch.no_grad():
        model.get_input_embeddings().weight[blank] = 0
    model.save_pretrained(target, safe_serialization=True)
    # top_k 1: vLLM takes the checkpoint's generation config as the default sampling parameters (a request
    # that names no top_k gets it), so every request is greedy whatever its temperature, and greedy never
    # picks the zero-logit tokens above, EOS among them: each answer is max_tokens of visible text, by
    # construction. With sampling (the smoke burst asks temperature 0.7) one request of many could draw
    # EOS first and stream nothing.
    generation = {"eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id, "max_new_tokens": 64,
                  "top_k": 1}
    (target / "generation_config.json").write_text(json.dumps(generation))
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
