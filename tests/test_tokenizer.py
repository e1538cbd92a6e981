import time

import pytest
import sentencepiece
import tokenizers
from data_fixtures import refused, sentences
from tokenizers import processors

import lit_gpt.data.tokenizer
from lit_gpt.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer, train_bpe

TEXTS = sentences(0, 200) + ["def f(x):\n    return x  # ünïcode ✓\n"]


def test_trained_bpe_round_trips_and_is_deterministic(tmp_path):
    first = train_bpe(TEXTS, 300, tmp_path / "a.json")
    second = train_bpe(TEXTS, 300, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert first.vocab_size == 300 and first.eos_id == first.bos_id == 0
    for text in TEXTS[-3:] + ["never seen: 日本語 \x00 tabs\t"]:
        assert first.decode(first.encode(text)) == text
    assert first.encode_batch(TEXTS[:3]) == [first.encode(text) for text in TEXTS[:3]]
    assert second.encode(TEXTS[0]) == first.encode(TEXTS[0])


def test_bpe_vocab_must_exceed_bytes(tmp_path):
    with pytest.raises(TokenizerError, match="512"):
        train_bpe(TEXTS, 256, tmp_path / "t.json")


def test_load_from_file_and_directory(tmp_path):
    train_bpe(TEXTS, 300, tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path).path == tmp_path / "tokenizer.json"
    assert load_tokenizer(str(tmp_path / "tokenizer.json")).vocab_size == 300
    (tmp_path / "copy").mkdir()
    copy = load_tokenizer(tmp_path).save(tmp_path / "copy")
    assert copy.read_bytes() == (tmp_path / "tokenizer.json").read_bytes()


def test_unknown_tokenizer_path_names_it(tmp_path):
    for spec, culprit in (
        (tmp_path / "missing.json", "missing.json"),
        ("./nowhere/tokenizer.model", "nowhere"),
        ("no/such/dir/tokenizer.json", "no/such/dir"),
        (tmp_path, tmp_path),
    ):
        with refused(culprit, "does not exist|neither", TokenizerError):
            load_tokenizer(spec)


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("tokenizer.json", lambda good: b"", "not a valid HF tokenizer.json"),
        ("tokenizer.json", lambda good: good[: len(good) // 2], "not a valid HF tokenizer.json"),
        ("tokenizer.json", lambda good: b"{}", "not a valid HF tokenizer.json"),
        ("tokenizer.json", lambda good: b"\xff\xfe" + good, "not a valid HF tokenizer.json"),
        ("tokenizer.json", lambda good: good.replace(b'"vocab"', b'"vocabulary"'), "not a valid HF tokenizer.json"),
        ("tokenizer.model", lambda good: bytes(range(256)) * 8, "not a valid SentencePiece model"),
        ("tokenizer.model", lambda good: b"", "not a valid SentencePiece model"),
    ],
)
def test_damaged_tokenizer_files_name_the_file(tmp_path, name, damage, message):
    good = train_bpe(TEXTS, 300, tmp_path / "good.json").path.read_bytes()
    (tmp_path / "folder").mkdir()
    path = tmp_path / "folder" / name
    path.write_bytes(damage(good))
    for spec in (path, tmp_path / "folder"):  # given as the file, or as the folder holding it
        with refused(path, message, TokenizerError):
            load_tokenizer(spec)


def test_sentencepiece_model(tmp_path):
    (tmp_path / "text.txt").write_text("\n".join(TEXTS))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "text.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=60, minloglevel=2
    )
    tokenizer = load_tokenizer(tmp_path / "sp.model")
    assert tokenizer.vocab_size == 60 and tokenizer.eos_id is not None
    assert tokenizer.decode(tokenizer.encode(TEXTS[0])) == TEXTS[0]
    assert tokenizer.save(tmp_path).name == "tokenizer.model"
    assert tokenizer.token_id("</s>") == tokenizer.eos_id and tokenizer.token_id("never-a-piece") is None
    assert tokenizer.special_prefix() == []


def test_the_tokens_a_post_processor_puts_first_are_found(tmp_path):
    plain = train_bpe(TEXTS, 300, tmp_path / "plain.json")
    templated = tokenizers.Tokenizer.from_file(str(tmp_path / "plain.json"))
    templated.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    templated.save(str(tmp_path / "bos.json"))
    with_bos = load_tokenizer(tmp_path / "bos.json")
    assert plain.special_prefix() == [] and with_bos.special_prefix() == [0]
    assert with_bos.encode(TEXTS[0]) == plain.encode(TEXTS[0])  # encode still adds nothing
    assert plain.token_id("<|endoftext|>") == 0 and plain.token_id("<s>") is None


def test_unreachable_hub_id_fails_fast_naming_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(lit_gpt.data.tokenizer, "hub_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(TokenizerError, match="unreachable.*local tokenizer"):
        load_tokenizer("EleutherAI/gpt-neox-20b", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5


def test_tokenizer_without_eos_is_rejected(tmp_path):
    import tokenizers
    from tokenizers import models

    bare = tokenizers.Tokenizer(models.BPE())
    bare.save(str(tmp_path / "bare.json"))
    with pytest.raises(TokenizerError, match="no EOS"):
        Tokenizer(tmp_path / "bare.json")
