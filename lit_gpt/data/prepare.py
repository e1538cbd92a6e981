"""Preprocessing: one pipeline from any source to token shards, a tokenizer, `meta.json` and the probe set.

Every source becomes a folder of document files first: `hub` downloads sail/regmix-data-sample (which
has `train/` and `valid/` subfolders), `embedded` writes the standard-library corpus, `jsonl` is the
user's folder. A folder with `train/` (and `valid/`) subfolders keeps that split; a flat folder is split
per document by content hash (`valid_fraction`). Each split of each domain becomes the litdata dataset
`<split>_<prefix><domain>`. Everything is built in a temporary sibling folder that replaces
`output_dir` only on success, so a failed run leaves no half-written data.

Only folders this pipeline wrote are ever replaced: its `meta.json` carries `"written_by":
"lit_gpt.data.prepare"` (folders written before the marker are recognised by their meta.json). An
existing non-empty folder without it, or a file, at `output_dir` is refused before any work starts, and
the temporary siblings get fresh unique names, so no user file is ever removed.
"""

import itertools
import json
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Literal, Optional

from tqdm import tqdm

from lit_gpt.data import embedded, shards
from lit_gpt.data.documents import document_files, domain_of, iter_texts
from lit_gpt.data.errors import DataError
from lit_gpt.data.probe import PROBE_COUNT, select_probe_texts, write_probe
from lit_gpt.hub import hub_reachable
from lit_gpt.tokenizer import Tokenizer, TokenizerError, is_hub_id, load_tokenizer, train_bpe

HUB_DATASET = "sail/regmix-data-sample"
HUB_TOKENIZER = "EleutherAI/gpt-neox-20b"
HUB_LOCAL_DIR = Path("preprocess") / HUB_DATASET
HUB_PREFIX = "the_pile_"
# The mark in meta.json of every folder this pipeline wrote; only such folders are ever replaced.
WRITTEN_BY = "lit_gpt.data.prepare"
# Enough text for a good small-vocabulary BPE while keeping training to seconds.
BPE_TRAIN_CHARS = 24_000_000

Source = Literal["hub", "jsonl", "embedded"]
Plan = dict[tuple[str, str], list[Path]]


def fetch_hub_dataset(local_dir: Path) -> Path:
    """Download sail/regmix-data-sample into `local_dir`, failing within seconds when offline."""
    if not hub_reachable():
        raise DataError(
            f"the Hugging Face hub is unreachable, so {HUB_DATASET} cannot be downloaded; "
            "use --source embedded (offline corpus) or --source jsonl --input_dir <folder of .jsonl files>"
        )
    import huggingface_hub

    huggingface_hub.snapshot_download(HUB_DATASET, repo_type="dataset", local_dir=local_dir, etag_timeout=10)
    return local_dir


def written_here(folder: Path) -> bool:
    """Whether `folder` is a dataset folder this pipeline wrote (so it may be replaced by a rebuild)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("written_by") == WRITTEN_BY or {"tokenizer", "datasets"} <= set(meta))


def check_destination(output_dir: Path, probe_path: Path) -> None:
    """Refuse, before any work, destinations a build would have to delete or cannot write."""
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"--output_dir {output_dir} is a file; choose a folder path")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not written_here(output_dir):
        raise DataError(f"--output_dir {output_dir} holds files preprocessing did not write (no meta.json of ours); "
                        f"choose another folder, or empty it yourself: it is never deleted")
    if probe_path.is_dir():
        raise DataError(f"--probe_path {probe_path} is a folder; give a .jsonl file path")


def plan_datasets(input_dir: Path) -> tuple[Plan, bool]:
    """(split, domain) -> files, in a fixed order, and whether the split is per document by hash."""
    if (input_dir / "train").is_dir():
        splits = {split: document_files(input_dir / split) for split in ("train", "valid") if (input_dir / split).is_dir()}
        hashed = False
    else:
        files = document_files(input_dir)
        splits = {"train": files, "valid": files}
        hashed = True
    plan: Plan = defaultdict(list)
    for split, files in splits.items():
        for path in files:
            plan[(split, domain_of(path))].append(path)
    return dict(plan), hashed


def _split_texts(files: list[Path], split: str, valid_fraction: Optional[float]) -> Iterator[str]:
    return itertools.chain.from_iterable(iter_texts(path, split, valid_fraction) for path in files)


def _bpe_texts(plan: Plan, valid_fraction: Optional[float]) -> Iterator[str]:
    """Train-split texts, an equal character budget per domain so no domain dominates the merges."""
    domains = [files for (split, _), files in plan.items() if split == "train"]
    budget = BPE_TRAIN_CHARS // max(1, len(domains))
    for files in domains:
        used = 0
        for text in _split_texts(files, "train", valid_fraction):
            if used >= budget:
                break
            used += len(text)
            yield text


def _tokenizer(source: Source, spec: Optional[str], vocab_size: int, plan: Plan, valid_fraction: Optional[float], build: Path) -> tuple[Tokenizer, str]:
    """The tokenizer, saved into `build`, and a description for meta.json."""
    spec = spec or (HUB_TOKENIZER if source == "hub" else None)
    if spec is not None:
        try:
            tokenizer = load_tokenizer(spec)
            return Tokenizer(tokenizer.save(build)), str(spec)
        except TokenizerError as error:
            if source != "embedded" or not is_hub_id(spec):
                raise
            print(f"{error}; training a byte-level BPE instead")
    print(f"training a byte-level BPE tokenizer with {vocab_size} entries")
    return train_bpe(_bpe_texts(plan, valid_fraction), vocab_size, build / "tokenizer.json"), f"byte-level BPE, {vocab_size} entries, trained on the train split"


def prepare(
    source: Source = "hub",
    input_dir: Optional[Path] = None,
    output_dir: Optional[Path] = None,
    tokenizer: Optional[str] = None,
    vocab_size: int = 8192,
    name_prefix: Optional[str] = None,
    valid_fraction: float = 0.05,
    dtype: Optional[str] = None,
    num_workers: int = 2,
    probe_path: Path = Path("datasets/probe_valid.jsonl"),
    probe_count: int = PROBE_COUNT,
) -> Path:
    """Build token shards from documents; returns the output folder.

    Args:
        source: "hub" downloads sail/regmix-data-sample (as upstream), "jsonl" reads `input_dir`,
            "embedded" builds the offline Python standard-library corpus.
        input_dir: folder of .jsonl/.jsonl.zst/.parquet files, with or without train/ and valid/
            subfolders; default for "hub" is preprocess/sail/regmix-data-sample.
        output_dir: where the datasets go; default datasets/<source>.
        tokenizer: tokenizer.json, SentencePiece .model, a folder holding one, or a hub id. Default:
            EleutherAI/gpt-neox-20b for "hub", a byte-level BPE trained on the train split otherwise
            (also for "embedded" when a hub id is unreachable).
        vocab_size: entries of the trained BPE (e.g. 512 for CPU experiments).
        name_prefix: inserted between split and domain in dataset names; default "the_pile_" for "hub"
            (upstream's YAML names, e.g. train_the_pile_arxiv), "" otherwise.
        valid_fraction: share of documents held out for validation when the folder has no train/ and
            valid/ subfolders.
        dtype: shard token dtype; default uint16 when the vocabulary fits, else uint32.
        num_workers: tokenization processes.
        probe_path: where the held-out probe texts for the sink metric go.
        probe_count: number of probe texts.
    """
    if source == "jsonl" and input_dir is None:
        raise DataError("--source jsonl needs --input_dir <folder of .jsonl/.jsonl.zst/.parquet files>")
    output_dir = Path(output_dir or Path("datasets") / source)
    probe_path = Path(probe_path)
    check_destination(output_dir, probe_path)
    if source == "hub":
        input_dir = fetch_hub_dataset(input_dir or HUB_LOCAL_DIR)
    prefix = name_prefix if name_prefix is not None else (HUB_PREFIX if source == "hub" else "")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    try:
        meta = _build(source, input_dir, build, tokenizer, vocab_size, prefix, valid_fraction, dtype, num_workers, probe_path, probe_count)
        _swap_into_place(build, output_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    if meta["probe_records"]:
        write_probe(meta["probe_records"], probe_path)
    return output_dir


def _swap_into_place(build: Path, output_dir: Path) -> None:
    """Replace `output_dir` (absent, empty, or written here: see `check_destination`) by `build`."""
    if output_dir.is_dir() and any(output_dir.iterdir()):
        previous = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".previous", dir=output_dir.parent))
        output_dir.replace(previous)
        build.replace(output_dir)
        shutil.rmtree(previous)
    else:
        if output_dir.is_dir():
            output_dir.rmdir()
        build.replace(output_dir)


def _build(source, input_dir, build, tokenizer_spec, vocab_size, prefix, valid_fraction, dtype, num_workers, probe_path, probe_count) -> dict:
    meta: dict = {"source": source}
    if source == "embedded":
        input_dir = build / "corpus"
        embedded.write_embedded_corpus(input_dir, processes=num_workers)
        meta["text"] = f"Python {embedded.python_version()} standard library at {embedded.stdlib_root()}"
    else:
        meta["text"] = str(input_dir)
    plan, hashed = plan_datasets(Path(input_dir))
    fraction = valid_fraction if hashed else None
    tokenizer, description = _tokenizer(source, tokenizer_spec, vocab_size, plan, fraction, build)
    token_dtype = shards.token_dtype(tokenizer.vocab_size, dtype, tokenizer.path)
    meta["tokenizer"] = {
        "source": description,
        "file": tokenizer.path.name,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "bos_id": tokenizer.bos_id,
    }
    meta["dtype"] = token_dtype.name
    meta["datasets"] = {}
    total_bytes = sum(path.stat().st_size for files in plan.values() for path in files)
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing") as progress:
        for (split, domain), files in plan.items():
            name = f"{split}_{prefix}{domain}"
            work = shards.TokenizeFile(str(tokenizer.path), token_dtype.name, split, fraction, str(build))
            tokens = shards.write_dataset(files, build / name, work, num_workers)
            if tokens:
                meta["datasets"][name] = {"split": split, "domain": domain, "tokens": tokens}
            else:
                shutil.rmtree(build / name)
            progress.write(f"{name}: {tokens:,} tokens" if tokens else f"{name}: no documents, skipped")
            progress.update(sum(path.stat().st_size for path in files))
    valid_texts = {domain: _split_texts(files, "valid", fraction) for (split, domain), files in plan.items() if split == "valid"}
    meta["probe_records"] = select_probe_texts(valid_texts, tokenizer, probe_count) if probe_count else []
    meta["probe"] = {"path": str(probe_path), "count": probe_count}
    if source == "embedded":
        shutil.rmtree(input_dir)
    meta["written_by"] = WRITTEN_BY
    (build / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "probe_records"}, indent=2) + "\n")
    return meta
