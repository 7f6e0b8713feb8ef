from bertpipe.text import clean_text, split_paragraphs, split_sentences


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
