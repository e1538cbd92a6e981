"""StreamingLLM-style evaluation: perplexity on long validation text with a KV cache of the last W tokens,
with and without keeping the first n tokens (attention-sink cache), against full attention. As in
StreamingLLM, the bounded caches number positions inside the cache (`lit_gpt.measurement.streaming`).

    python pretrain/eval_streaming.py --load_from '[out/softmax/iter-020000-ckpt.pth, out/sigmoid/iter-020000-ckpt.pth]' \
        --text datasets/probe_valid.jsonl --length 4096 --window 256 --n_sink 4
"""

from pathlib import Path
from typing import Optional, Union

from lit_gpt.core.errors import run_cli
from lit_gpt.core.flags import run_function


def compare_caches(
    load_from: Union[Path, list[Path]],
    text: Path = Path("datasets/probe_valid.jsonl"),
    length: int = 1024,
    window: int = 64,
    n_sink: int = 4,
    tokenizer: Optional[str] = None,
    json: Optional[Path] = None,
    attn_backend: str = "auto",
) -> list[dict]:
    """Print full / window / sink perplexities per checkpoint.

    Args:
        load_from: Training checkpoint (.pth), or a list `[a.pth, b.pth]` to compare.
        text: Document file (.jsonl, .jsonl.zst or .parquet with a `text` field), packed back to back with EOS.
        length: Tokens of text to score.
        window: Recent tokens the bounded caches keep (the current token included).
        n_sink: First tokens the attention-sink cache keeps in addition.
        tokenizer: Tokenizer file or folder (default: each checkpoint's own).
        json: Write the results as JSON to this file.
        attn_backend: Attention kernel, `auto | eager | sdpa | flex | flash | xformers`: a run-time choice
            that changes speed, never what is computed.
    """
    from lit_gpt.core.files import write_json
    from lit_gpt.data.documents import iter_texts
    from lit_gpt.data.vocab import check_token_ids
    from lit_gpt.measurement.evaluation import tokenizer_for, train_args
    from lit_gpt.measurement.streaming import StreamingError, long_text, streaming_perplexities
    from lit_gpt.model.attention import AttentionRuntime
    from lit_gpt.training.checkpoint import load_model

    runtime = AttentionRuntime(attn_backend)
    results = []
    paths = load_from if isinstance(load_from, list) else [load_from]
    if not paths:
        raise StreamingError("--load_from names no checkpoint; pass a .pth file or a list [a.pth, b.pth]")
    if length < 2 or window < 1 or n_sink < 0:
        raise StreamingError(f"need --length >= 2, --window >= 1 and --n_sink >= 0; got {length}, {window}, {n_sink}")
    print(f"{'checkpoint':<40} {'variant':<28} {'full':>9} {'window':>9} {'sink':>9}")
    for path in paths:
        model, ckpt = load_model(path)
        model.set_attention_runtime(runtime)
        tok = tokenizer_for(train_args(ckpt), tokenizer)
        tokens = check_token_ids(
            long_text(iter_texts(text), tok, length), model.config.vocab_size, f"{text} tokenized with {tok.path}"
        )
        result = streaming_perplexities(model, tokens, window, n_sink)
        result.update(checkpoint=str(path), variant=model.config.variant_summary())
        results.append(result)
        ppl = result["perplexity"]
        print(
            f"{str(path)[-40:]:<40} {result['variant'][:28]:<28} {ppl['full']:>9.2f} {ppl['window']:>9.2f} "
            f"{ppl['sink']:>9.2f}"
        )
    if json is not None:
        write_json(json, results)
        print(f"wrote {json}")
    return results


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: parse the command line (`argv`, default sys.argv) and run `compare_caches`."""
    run_cli(lambda: run_function(compare_caches, argv))
