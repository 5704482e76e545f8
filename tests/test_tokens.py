"""Readable token text: the pieces of a character split over tokens show their bytes."""

from lmtt.engine.tokens import byte_texts, piece_bytes, readable_tokens, token_text

R = "\ufffd"


def test_byte_level_pieces_map_back_to_bytes():
    assert piece_bytes("ĠðŁĺ") == b" \xf0\x9f\x98"
    assert piece_bytes("Ģ") == b"\x80"
    assert piece_bytes("<0xE6>") == b"\xe6"  # SentencePiece byte fallback
    assert piece_bytes("") is None


def test_a_split_emoji_shows_its_bytes_then_the_character():
    texts = [" " + R, R, " ok"]
    pieces = [b" \xf0\x9f\x98", b"\x80", b" ok"]
    assert byte_texts(texts, pieces) == [" ⟨F0 9F 98⟩", "⟨80⟩😀", " ok"]


def test_a_character_over_three_tokens_and_whole_ones_beside_it():
    # 東 = E6 9D B1 over three tokens; 京 = E4 BA AC over two, 'a' whole in the last
    texts = [R, R, R, R, R + "a"]
    pieces = [b"\xe6", b"\x9d", b"\xb1", b"\xe4\xba", b"\xaca"]
    assert byte_texts(texts, pieces) == ["⟨E6⟩", "⟨9D⟩", "⟨B1⟩東", "⟨E4 BA⟩", "⟨AC⟩京a"]


def test_a_character_cut_short_stays_bytes_and_stray_bytes_show_as_bytes():
    texts = [R, "x", R]
    assert byte_texts(texts, [b"\xf0\x9f", b"x", b"\x80"]) == ["⟨F0 9F⟩", "x", "⟨80⟩"]


def test_tokens_without_replacement_characters_are_unchanged():
    assert byte_texts(["The", " cat"], [b"The", b" cat"]) == ["The", " cat"]


def test_readable_tokens_of_the_default_model(default_runner):
    import lmtt

    a = lmtt.analyze(default_runner, "I ❤️ 東京 😀")
    tokens = readable_tokens(a)
    assert R not in "".join(tokens)
    assert "⟨80⟩😀" in tokens and any(t.endswith("東") for t in tokens) and any(t.endswith("京") for t in tokens)


def test_a_predicted_piece_of_a_character_shows_its_bytes(default_runner):
    """A vocabulary token alone (a prediction, a lens entry, a route's top token) that holds part of a character:
    its bytes instead of `�`. The pieces of 😀, read in order, are its UTF-8 bytes; whole tokens keep their text."""
    ids = default_runner.tokenizer("😀", add_special_tokens=False)["input_ids"]
    texts = [token_text(default_runner, i) for i in ids]
    assert len(ids) > 1 and all(t.startswith("⟨") and t.endswith("⟩") for t in texts)
    assert bytes.fromhex(" ".join(t.strip("⟨⟩") for t in texts)) == "😀".encode()
    paris = default_runner.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert [token_text(default_runner, i) for i in paris] == [" Paris"]
