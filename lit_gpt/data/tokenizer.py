"""One tokenizer interface over HF `tokenizer.json`, SentencePiece `.model` and hub ids, plus BPE training.

Why: the paper tokenizes with GPT-NeoX's tokenizer from the hub, CPU experiments need a small vocabulary
trained offline, and users bring their own SentencePiece models. Preprocessing and the probe set only
need encode/decode, the vocabulary size and the EOS/BOS ids, so that is all this exposes.
"""

from pathlib import Path
from typing import Iterable, Optional, Union

import sentencepiece
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lit_gpt.core.errors import UserError, one_line
from lit_gpt.core.files import write_atomic
from lit_gpt.data.hub import hub_reachable

# Checked in order against the tokenizer's vocabulary; GPT-NeoX uses <|endoftext|> for both roles.
EOS_TOKENS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
BOS_TOKENS = ("<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>")
# The only special token of a BPE trained here, so it gets id 0 and serves as EOS and BOS (as in NeoX).
TRAINED_SPECIAL = "<|endoftext|>"
BYTE_ALPHABET = 256
REASON_CHARS = 120


class TokenizerError(UserError, ValueError):
    """The tokenizer cannot be found or used; the message is one line naming it and the fix."""


class Tokenizer:
    """A loaded tokenizer file (`tokenizer.json` or SentencePiece `.model`) with a uniform interface.

    `encode`/`encode_batch` never add special tokens: preprocessing appends EOS itself so every
    tokenizer packs documents the same way.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        # One of the two backends, chosen by the file's kind.
        self._sp: Optional[sentencepiece.SentencePieceProcessor] = None
        self._hf: Optional[tokenizers.Tokenizer] = None
        if not self.path.is_file():
            raise TokenizerError(
                f"tokenizer file {self.path} does not exist; pass an existing tokenizer.json or .model"
            )
        if self.path.suffix == ".model":
            try:
                self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self.path))
            except (RuntimeError, OSError) as error:
                raise TokenizerError(
                    f"{self.path} is not a valid SentencePiece model ({_reason(error)}); pass a "
                    f"tokenizer.json or .model"
                ) from None
            self._hf = None
            self.vocab_size = self._sp.get_piece_size()
            eos_id = _optional_id(self._sp.eos_id())
            self.bos_id = _optional_id(self._sp.bos_id())
        else:
            try:
                self._hf = tokenizers.Tokenizer.from_file(str(self.path))
            except Exception as error:
                raise TokenizerError(
                    f"{self.path} is not a valid HF tokenizer.json ({_reason(error)}); pass a tokenizer.json or .model"
                ) from None
            self._sp = None
            self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
            eos_id = self._first_known(EOS_TOKENS)
            self.bos_id = self._first_known(BOS_TOKENS)
        if eos_id is None:
            raise TokenizerError(
                f"tokenizer {self.path} has no EOS token (tried {', '.join(EOS_TOKENS)}); documents cannot be separated"
            )
        self.eos_id: int = eos_id

    @property
    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        """The HF backend, for the methods that run when there is no SentencePiece model."""
        assert self._hf is not None, "a SentencePiece tokenizer has no HF backend"
        return self._hf

    def _first_known(self, candidates: Iterable[str]) -> Optional[int]:
        for token in candidates:
            token_id = self._hf_tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return None

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids for each text; HF tokenizers encode the batch on all cores. A tokenizer that cannot encode
        a text (a WordLevel or WordPiece model whose unknown token is missing from its vocabulary) is a
        `TokenizerError` naming the file."""
        if self._sp is not None:
            return self._sp.encode(texts)
        try:
            encodings = self._hf_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        except Exception as error:  # the library raises a bare Exception
            raise TokenizerError(
                f"tokenizer {self.path} cannot encode the text ({_reason(error)}); give its model an "
                f"unknown token that is in its vocabulary, or pass another tokenizer"
            ) from None
        return [encoding.ids for encoding in encodings]

    def token_id(self, token: str) -> Optional[int]:
        """The id of `token` in the vocabulary, or None when the vocabulary lacks it."""
        if self._sp is not None:
            token_id = self._sp.piece_to_id(token)
            return token_id if self._sp.id_to_piece(token_id) == token else None
        return self._hf_tokenizer.token_to_id(token)

    def token(self, token_id: int) -> Optional[str]:
        """The vocabulary entry of `token_id` (None outside the vocabulary): exported models name their BOS
        and EOS by it."""
        if self._sp is not None:
            return self._sp.id_to_piece(token_id) if 0 <= token_id < self.vocab_size else None
        return self._hf_tokenizer.id_to_token(token_id)

    def special_prefix(self) -> list[int]:
        """The ids the tokenizer's own post-processing puts before every text (LLaMA's BOS, for one).

        `encode` leaves them out; a caller that needs the model's view of a text (the probe of a model
        trained with a BOS) asks here. SentencePiece models add nothing by themselves.
        """
        if self._hf is None:
            return []
        plain = self._hf_tokenizer.encode("a", add_special_tokens=False).ids
        full = self._hf_tokenizer.encode("a", add_special_tokens=True).ids
        starts = [i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain]
        return full[: starts[0]] if starts else []

    def decode(self, ids: list[int]) -> str:
        if self._sp is not None:
            return self._sp.decode(ids)
        return self._hf_tokenizer.decode(ids, skip_special_tokens=False)

    @property
    def file_name(self) -> str:
        """The canonical name of this kind of tokenizer file, under which `save` writes it."""
        return "tokenizer.model" if self._sp is not None else "tokenizer.json"

    def save(self, directory: Path) -> Path:
        """Copy the tokenizer file into `directory` under its canonical name (atomically), so shards and
        exported models carry their tokenizer."""
        return write_atomic(Path(directory) / self.file_name, self.path.read_bytes())


def _reason(error: Exception) -> str:
    """The library's complaint, folded to one short line (they can span lines and repeat the path)."""
    return one_line(error)[:REASON_CHARS]


def _optional_id(token_id: int) -> Optional[int]:
    return token_id if token_id >= 0 else None


def load_tokenizer(spec: Union[str, Path], cache_dir: Optional[Path] = None) -> Tokenizer:
    """Load a tokenizer from a `tokenizer.json`, a `.model`, a directory holding either, or a hub id.

    A spec that exists on disk, ends in `.json`/`.model` or starts with `/`, `.` or `~` is a path; anything
    else of the form `owner/name` is a hub repository whose `tokenizer.json` is fetched (from the local
    hub cache first, so a previously downloaded tokenizer works offline).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (path / name).is_file():
                return Tokenizer(path / name)
        raise TokenizerError(f"tokenizer directory {path} holds neither tokenizer.json nor tokenizer.model")
    if not is_hub_id(spec):
        if not path.is_file():
            raise TokenizerError(
                f"tokenizer path {path} does not exist; pass an existing tokenizer.json or .model file"
            )
        return Tokenizer(path)
    return Tokenizer(_download_hub_tokenizer(str(spec), cache_dir))


def is_hub_id(spec: Union[str, Path]) -> bool:
    """Whether `load_tokenizer` treats `spec` as a hub repository rather than a local path."""
    text = str(spec)
    looks_like_path = (
        Path(text).expanduser().exists() or text.endswith((".json", ".model")) or text.startswith(("/", ".", "~"))
    )
    return not looks_like_path and text.count("/") == 1


def _download_hub_tokenizer(repo_id: str, cache_dir: Optional[Path]) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            huggingface_hub.hf_hub_download(repo_id, "tokenizer.json", cache_dir=cache_dir, local_files_only=True)
        )
    except LocalEntryNotFoundError:
        pass
    if not hub_reachable():
        raise TokenizerError(
            f"tokenizer '{repo_id}' is not cached and the Hugging Face hub is unreachable; "
            "pass a local tokenizer.json/.model path, or omit --tokenizer to train a BPE"
        )
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, "tokenizer.json", cache_dir=cache_dir, etag_timeout=5))
    except (HfHubHTTPError, OSError) as error:
        raise TokenizerError(
            f"could not download tokenizer.json of '{repo_id}' from the hub ({type(error).__name__}); check the id or pass a local file"
        ) from None


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path) -> Tokenizer:
    """Train a byte-level BPE with `vocab_size` entries (including the EOS token) and save it to `path`.

    Byte-level means every input encodes without unknown tokens, whatever the text. The model later pads
    the vocabulary to a multiple of 64; the tokenizer itself keeps exactly `vocab_size` entries.
    """
    if vocab_size <= BYTE_ALPHABET:
        raise TokenizerError(f"BPE vocab size {vocab_size} must exceed the {BYTE_ALPHABET} byte symbols; use e.g. 512")
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[TRAINED_SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.save(str(path))
    return Tokenizer(path)
