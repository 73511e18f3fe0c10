"""Tokenizers built offline for the tiny models (tests, toy experiments, smoke
benchmarks) of every modality: real transformers tokenizer classes over a small
vocabulary, with no download."""

from __future__ import annotations

CHARS = [chr(c) for c in range(33, 127)]
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def clip_tokenizer(max_length: int = 32):
    """A byte-level-BPE ``CLIPTokenizer`` over printable ASCII (no merges)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
    for c in CHARS:
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer():
    """A unigram ``T5Tokenizer`` over letters (with and without the word-start mark)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -1.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [
        (c, -2.5) for c in CHARS
    ]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def word_tokenizer(words: list[str], max_tokens: int):
    """A word-level ``PreTrainedTokenizerFast`` over ``words`` (punctuation split off),
    built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + tuple(sorted(set(words))))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=max_tokens,
    )


QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def qwen_tokenizer():
    """A byte-level-BPE ``Qwen2Tokenizer`` over the 256 byte symbols (no merges) with
    Qwen2.5-VL's chat and vision special tokens."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=list(QWEN_SPECIALS[1:]),
    )
