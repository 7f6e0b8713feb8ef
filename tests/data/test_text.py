from bertpipe.data.text import clean_text, split_paragraphs, split_sentences


def test_clean_text_nfc_controls_and_spaces():
    raw = "Cafe\u0301\x00 and\u200b  tabs\tand\u00a0nbsp\x7f\nnext"
    assert clean_text(raw) == "Caf\u00e9 and tabs and nbsp\nnext"


def test_split_sentences_basic_and_wrapped_lines():
    para = "It was late. The Martians had\nlanded at Woking! Did anyone see?"
    assert split_sentences(para) == ["It was late.", "The Martians had landed at Woking!", "Did anyone see?"]


def test_overlong_sentence_is_cut_at_whitespace():
    words = ["word"] * 3000  # 14999 characters, no punctuation
    pieces = split_sentences(" ".join(words), max_sentence_chars=1000)
    assert all(len(p) <= 1000 for p in pieces)
    assert " ".join(pieces).split() == words  # nothing lost, no word broken


def test_split_paragraphs():
    assert split_paragraphs("a\nb\n\n \nc\n\n\n\nd") == ["a\nb", "c", "d"]


def test_ingested_sentences_are_a_fixed_point_of_berts_clean_text():
    import numpy as np
    from tokenizers.normalizers import BertNormalizer

    full = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    skip = BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    rng = np.random.default_rng(0)
    # controls, format chars, odd spaces, U+FFFD, private use, CJK, emoji, combining marks, letters
    pool = [*range(0, 0x250), 0x85, 0xA0, 0xAD, 0x1680, *range(0x2000, 0x2070), 0x3000, 0xFEFF, 0xFFFD,
            0xE000, 0xF8FF, 0x4E2D, 0x1F642, 0x0301, 0x0627, 0x05D0, 0xE0001, 0xE0041, 0xF0000]
    for _ in range(300):
        s = "".join(chr(int(c)) for c in rng.choice(pool, size=40))
        for sentence in split_sentences(clean_text(s)):  # what ingest stores
            assert full.normalize_str(sentence) == skip.normalize_str(sentence), repr(s)
