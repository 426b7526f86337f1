"""Our CLIP BPE tokenizer against the official one (``sam3==0.1.4`` in ``.oracle``), and our reader of
Hugging Face ``vocab.json`` + ``merges.txt`` files against our reader of the original merge list."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sam3.modeling.text.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
BPE = ROOT / "sam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz"

STRINGS = [
    # plain prompts and casing
    "a red cat",
    "visual",
    "person",
    "a photo of a dog",
    "the person in the white space suit",
    "A Red CAT",
    "ALL CAPS SENTENCE",
    "MiXeD cAsE wOrDs",
    "a",
    # empty and white space only / runs
    "",
    " ",
    "   \t\n  ",
    "two  spaces",
    "tab\tseparated",
    "new\nline\r\nbreaks",
    "trailing   ",
    "   leading",
    "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space",
    "zero\u200bwidth",
    # accents and other Latin / Greek / Cyrillic letters
    "café",
    "naïve résumé",
    "déjà vu",
    "Ångström",
    "straße",
    "İstanbul",
    "ΣΊΣΥΦΟΣ",
    "Москва зимой",
    "e\u0301 decomposed",
    "ﬁ ligature",
    "Ｆｕｌｌｗｉｄｔｈ",
    # CJK and other scripts
    "東京タワー",
    "北京大学的图书馆",
    "한국어 텍스트",
    "日本語とEnglish混在",
    "ภาษาไทย",
    "العربية",
    "עברית",
    "हिन्दी",
    # emoji
    "😀",
    "dog 🐶 and cat 🐱",
    "👨‍👩‍👧‍👦 family",
    "🇫🇷 flag",
    "❤️ heart",
    "thumbs 👍🏽 up",
    # punctuation and symbols
    "hello, world!",
    "what?!?!",
    "...",
    "---",
    "(parenthesised) [bracketed] {braced}",
    "a/b\\c",
    "email@example.com",
    "https://example.com/path?q=1&r=2",
    "#hashtag @mention",
    "snake_case_name",
    "kebab-case-name",
    "C++ and C#",
    "$100.00",
    "50% off",
    "½ ¾ ²",
    "™ © ®",
    "«quotes» „low“ ‘single’",
    # numbers
    "123456",
    "3.14159",
    "1,000,000",
    "2nd 3rd 4th",
    "Ⅻ roman",
    "٣ arabic digit",
    "１２３ fullwidth",
    # HTML entities (unescaped twice) and tags
    "&amp;",
    "&amp;amp;",
    "&amp;amp;amp;",
    "&lt;b&gt;bold&lt;/b&gt;",
    "Tom &amp; Jerry",
    "&quot;quoted&quot;",
    "&#39;apos&#39;",
    "&nbsp;space",
    "&copy; 2024",
    "<b>tags</b>",
    # with a tag present ftfy leaves entities alone, so only the double unescape decodes these
    "<b>x</b> &amp;amp; y",
    "1 < 2 &amp;amp; 3 > 2",
    # clitics
    "it's",
    "don't",
    "they're",
    "we've",
    "I'm",
    "you'll",
    "he'd",
    "IT'S LOUD",
    "rock'n'roll",
    # mojibake that ftfy repairs, control characters
    "cafÃ©",
    "Ã¼ber",
    "bell\x07char",
    "null\x00byte",
    # the special strings typed in the text
    "<start_of_text>",
    "a <end_of_text> b",
    "<|endoftext|>",
    # longer than the 32-token context
    " ".join(["word"] * 40),
    "supercalifragilisticexpialidocious " * 5,
    "antidisestablishmentarianism",
    "北京大学的图书馆里有很多很多的书，每天都有很多学生来这里学习和阅读各种各样的书籍",
    "a very long description of a scene in which a small brown dog chases a red ball across a green "
    "park while children play on the swings and their parents sit on wooden benches under tall trees",
]

_ORACLE_SCRIPT = """
import json, sys
from sam3.model.tokenizer_ve import SimpleTokenizer
tok = SimpleTokenizer(bpe_path=sys.argv[1])
texts = json.load(sys.stdin)
print(json.dumps({"encode": [tok.encode(t) for t in texts], "ids": tok(texts, context_length=32).tolist()}))
"""


def _official(texts: list[str], oracle_dir) -> dict:
    env = dict(os.environ, PYTHONPATH=str(oracle_dir))
    proc = subprocess.run(
        [sys.executable, "-P", "-c", _ORACLE_SCRIPT, str(BPE)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(bpe_path=BPE)


def test_enough_varied_strings():
    assert len(STRINGS) >= 60 and len(set(STRINGS)) == len(STRINGS)


def test_ids_match_official_tokenizer(tokenizer, oracle):
    ref = _official(STRINGS, oracle)
    ours = tokenizer(STRINGS)
    assert ours.tolist() == ref["ids"]
    for text, ids in zip(STRINGS, ref["encode"]):
        assert tokenizer.encode(text) == ids, text
    # the over-long cases really were cut, with the end token kept last
    assert any(len(e) > 30 for e in ref["encode"])


@pytest.mark.parametrize(
    "text, head",
    [("a red cat", [49406, 320, 736, 2368, 49407]), ("visual", [49406, 7195, 49407]), ("", [49406, 49407])],
)
def test_reference_vectors(tokenizer, text, head):
    ids = tokenizer([text])
    assert ids.shape == (1, 32)
    assert ids[0].tolist() == head + [0] * (32 - len(head))


def _byte_stand_ins() -> list[str]:
    """The byte -> printable character table of byte-level BPE, in vocabulary order (written out
    independently of the package, since it is part of the file format)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


def _write_hf_files(directory: Path) -> tuple[Path, Path]:
    """vocab.json (token -> id) and merges.txt ("#version" header, one "a b" merge per line), laid out as
    the Hugging Face CLIP tokenizer files are, generated from the original gzipped merge list."""
    with gzip.open(BPE, "rt", encoding="utf-8") as fh:
        merges = fh.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = _byte_stand_ins()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def test_hf_vocab_and_merges_give_identical_ids(tokenizer, tmp_path):
    vocab_path, merges_path = _write_hf_files(tmp_path)
    hf = Tokenizer.from_hf_files(vocab_path, merges_path)
    assert hf.vocab_size == tokenizer.vocab_size == 49408
    assert (hf.sot_id, hf.eot_id) == (49406, 49407)
    assert hf(STRINGS).tolist() == tokenizer(STRINGS).tolist()


def test_generated_hf_files_are_readable_by_transformers(tokenizer, tmp_path):
    """The generated pair really has the Hugging Face layout: transformers' CLIP tokenizer reads it and
    agrees on text without HTML entities (which it does not unescape)."""
    transformers = pytest.importorskip("transformers")
    _write_hf_files(tmp_path)
    hf = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    for text in ["a red cat", "visual", "Hello, World! 123 café", "naïve résumé 東京 😀", "it's    DON'T"]:
        ids = hf(text)["input_ids"]
        assert tokenizer([text])[0, : len(ids)].tolist() == ids, text
