"""Tokenization throughput on the embedded (standard-library) corpus.

Prints, per vocabulary size: HF batch encoding of all documents in one process (Rust threads on all
cores), and the whole `--source embedded` preprocessing run (corpus extraction, BPE training,
multiprocess tokenization into litdata shards). Run: `.venv/bin/python bench/preprocess.py`.
"""

import json
import tempfile
import time
from pathlib import Path

from lit_gpt.data.embedded import stdlib_documents, stdlib_root
from lit_gpt.data.prepare import prepare
from lit_gpt.data.tokenizer import train_bpe


def main(vocab_sizes: tuple[int, ...] = (512, 8192)) -> None:
    documents = [text for texts in stdlib_documents(stdlib_root()).values() for text in texts]
    megabytes = sum(len(text.encode()) for text in documents) / 1e6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for vocab_size in vocab_sizes:
            tokenizer = train_bpe(documents, vocab_size, Path(tmp) / f"bpe{vocab_size}.json")
            start = time.perf_counter()
            tokens = sum(map(len, tokenizer.encode_batch(documents)))
            encode_seconds = time.perf_counter() - start
            start = time.perf_counter()
            out = prepare(
                source="embedded",
                output_dir=Path(tmp) / f"embedded{vocab_size}",
                vocab_size=vocab_size,
                probe_path=Path(tmp) / "probe.jsonl",
            )
            pipeline_seconds = time.perf_counter() - start
            shard_tokens = sum(d["tokens"] for d in json.loads((out / "meta.json").read_text())["datasets"].values())
            rows.append(
                (
                    vocab_size,
                    tokens,
                    tokens / encode_seconds,
                    shard_tokens,
                    pipeline_seconds,
                    shard_tokens / pipeline_seconds,
                )
            )
    print(f"\nembedded corpus: {len(documents)} documents, {megabytes:.1f} MB")
    print("| vocab | tokens | encode_batch tok/s | shard tokens | full pipeline s | pipeline tok/s |")
    print("|---|---|---|---|---|---|")
    for vocab, tokens, rate, shard_tokens, seconds, pipeline_rate in rows:
        print(
            f"| {vocab} | {tokens:,} | {rate / 1e6:.2f}M | {shard_tokens:,} | {seconds:.1f} | {pipeline_rate / 1e6:.2f}M |"
        )


if __name__ == "__main__":
    main()
