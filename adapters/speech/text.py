"""F5-TTS's text side: the front-end (text -> the tokens its ``vocab.txt`` indexes),
the vocabulary, and the reference transcript's ending.

F5-TTS 1.1 (``convert_char_to_pinyin``, used in training and in inference) segments
the text with jieba (the ``rjieba`` binding), then per segment:

- single-byte characters only (English, digits, ASCII punctuation): kept character by
  character, preceded by a space when the segment is longer than one character and
  the previous token is not one of `` :'"`` (so "Hello,world" reads "Hello, world");
- three-byte characters only (Chinese): each becomes its pinyin with the tone number
  (``pypinyin``, TONE3 style, tone sandhi on), each preceded by a space; a three-byte
  character outside the CJK range (full-width punctuation) stays itself;
- mixed: character by character by the same rules.

Before that, ``;`` becomes ``,`` and curly quotes straight ones. The released vocab has
the pinyin syllables as tokens, so Chinese and mixed text tokenise as it expects; an
English-only vocab (the tiny default's) sees the same characters it always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

_TRANSLATE = str.maketrans({";": ",", "“": '"', "”": '"', "‘": "'", "’": "'"})
_NO_SPACE_AFTER = " :'\""


def _is_chinese(c: str) -> bool:
    return "\u3100" <= c <= "\u9fff"  # F5-TTS's range: bopomofo to CJK unified ideographs


@lru_cache(maxsize=4096)
def f5_tokens(text: str) -> tuple[str, ...]:
    """The tokens of ``text`` as F5-TTS 1.1 makes them (see the module doc)."""
    import rjieba
    from pypinyin import Style, lazy_pinyin

    def pinyin(s: str) -> list[str]:
        return lazy_pinyin(s, style=Style.TONE3, tone_sandhi=True)

    tokens: list[str] = []
    for seg in rjieba.cut(text.translate(_TRANSLATE)):
        size = len(seg.encode("utf-8"))
        if size == len(seg):  # single-byte characters only
            if tokens and size > 1 and tokens[-1] not in _NO_SPACE_AFTER:
                tokens.append(" ")
            tokens.extend(seg)
        elif size == 3 * len(seg) and len(syllables := pinyin(seg)) == len(seg):
            for c, syllable in zip(seg, syllables):  # pinyin of the whole word: its tones
                if _is_chinese(c):
                    tokens.append(" ")
                tokens.append(syllable)
        else:  # mixed (or punctuation runs that pypinyin merges): one character at a time
            for c in seg:
                if ord(c) < 256:
                    tokens.append(c)
                elif _is_chinese(c):
                    tokens.append(" ")
                    tokens.extend(pinyin(c))
                else:
                    tokens.append(c)
    return tuple(tokens)


class CharVocab:
    """F5-TTS's character vocabulary (``vocab.txt``: one token per line, the line number
    is its id). Unknown characters map to id 0, as F5-TTS does."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def from_file(cls, path: str | Path) -> CharVocab:
        with open(path, encoding="utf-8") as f:
            return cls([line[:-1] if line.endswith("\n") else line for line in f])

    def save(self, path: str | Path) -> None:
        Path(path).write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (:func:`f5_tokens` of a text; a plain string is its
        characters)."""
        return [self.index.get(t, 0) for t in tokens]


def reference_text(text: str) -> str:
    """The reference transcript as F5-TTS 1.1's inference joins it to the text: ended
    with '. ' (``preprocess_ref_audio_text``: so that the generated text starts a new
    sentence; '.' gets a space, '。' is kept), then one more space when it ends with a
    single-byte character (``infer_batch_process``), so "Hi" -> "Hi.  " and "你好。" is
    unchanged. The transcript is not stripped, as F5-TTS does not."""
    if not text.endswith(". ") and not text.endswith("。"):
        text += " " if text.endswith(".") else ". "
    return text + " " if len(text[-1].encode("utf-8")) == 1 else text
