"""Preprocessing: one pipeline from any source to token shards, a tokenizer, `meta.json` and the probe set.

Every source becomes a folder of document files first: `hub` downloads sail/regmix-data-sample (which
has `train/` and `valid/` subfolders), `embedded` writes the standard-library corpus, `jsonl` is the
user's folder. A folder with `train/` (and `valid/`) subfolders keeps that split; a flat folder is split
per document by content hash (`valid_fraction`). Each split of each domain becomes the litdata dataset
`<split>_<prefix><domain>`. Everything is built in a temporary sibling folder that replaces
`output_dir` only on success, so a failed run leaves no half-written data. The probe file is written
before that swap, so it never fails after the new build is in place.

The build runs in a process group of its own (`lit_gpt.data.process_group`): SIGTERM, Ctrl-C or a
failed worker end every process of it within a second, the partial folder is removed, and the command
prints one line. What a killed command could not remove (its `.NAME.<pid>.<random>.partial` folder, the
`.previous` build it had set aside mid-swap, the probe file's temporary) is cleared by the next run once
that process is gone; a build set aside mid-swap is put back first. Files the command writes (the probe)
are never read back as documents.

Only folders this pipeline wrote are ever replaced: its `meta.json` carries `"written_by":
"lit_gpt.data.prepare"` (folders written before the marker are recognised by their meta.json). An
existing non-empty folder without it, one that also holds files the pipeline did not write, or a file,
at `output_dir` is refused before any work starts and again just before the swap; the temporary
siblings get fresh unique names. So no user file is ever removed.
"""

import itertools
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Collection, Iterable, Iterator, Literal, Optional

import numpy as np
from tqdm import tqdm

from lit_gpt.core.files import (
    DiskFullError,
    check_writable,
    disk_full_error,
    ensure_space,
    is_disk_full,
    output_folder,
    remove_stale_temporaries,
    stale_temporaries,
    temporary_folder,
    write_atomic,
)
from lit_gpt.data import embedded, shards
from lit_gpt.data.documents import document_files, domain_of, iter_texts
from lit_gpt.data.errors import DataError
from lit_gpt.data.hub import hub_reachable
from lit_gpt.data.probe import PROBE_COUNT, select_probe_texts, write_probe
from lit_gpt.data.process_group import run_in_own_group
from lit_gpt.data.tokenizer import BYTE_ALPHABET, Tokenizer, TokenizerError, is_hub_id, load_tokenizer, train_bpe
from lit_gpt.data.vocab import META

HUB_DATASET = "sail/regmix-data-sample"
HUB_TOKENIZER = "EleutherAI/gpt-neox-20b"
HUB_LOCAL_DIR = Path("preprocess") / HUB_DATASET
HUB_PREFIX = "the_pile_"
# The mark in meta.json of every folder this pipeline wrote; only such folders are ever replaced.
WRITTEN_BY = "lit_gpt.data.prepare"
# Enough text for a good small-vocabulary BPE while keeping training to seconds.
BPE_TRAIN_CHARS = 24_000_000
# Documents whose tokens per byte estimate the size of the shards before tokenizing.
SIZE_SAMPLE_DOCS = 200
PARTIAL, PREVIOUS = ".partial", ".previous"

Source = Literal["hub", "jsonl", "embedded"]
Plan = dict[tuple[str, str], list[Path]]


def check_hub_reachable() -> None:
    """Fail within seconds when offline, naming the sources that need no network."""
    if not hub_reachable():
        raise DataError(
            f"the Hugging Face hub is unreachable, so {HUB_DATASET} cannot be downloaded; "
            "use --source embedded (offline corpus) or --source jsonl --input_dir <folder of .jsonl files>"
        )


def fetch_hub_dataset(local_dir: Path) -> Path:
    """Download sail/regmix-data-sample into `local_dir` (after `check_hub_reachable`)."""
    import huggingface_hub

    huggingface_hub.snapshot_download(HUB_DATASET, repo_type="dataset", local_dir=local_dir, etag_timeout=10)
    return local_dir


def own_meta(folder: Path) -> Optional[dict]:
    """The meta.json of `folder` when this pipeline wrote the folder (so a rebuild may replace it), else None."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("datasets"), dict):
        return None
    return meta if meta.get("written_by") == WRITTEN_BY or "tokenizer" in meta else None


def _own_entries(folder: Path, meta: dict) -> set[str]:
    """Names directly in `folder` that the build recorded in `meta` wrote (the probe file when it lies there)."""
    names = {META, "tokenizer.json", "tokenizer.model", *meta["datasets"]}
    probe = meta["probe"].get("path") if isinstance(meta.get("probe"), dict) else None
    if isinstance(probe, str) and Path(probe).resolve().parent == folder:
        names.add(Path(probe).name)
    return names


def check_destination(output_dir: Path, probe_path: Path) -> None:
    """Refuse, before any work, destinations a build would have to delete or cannot write."""
    if probe_path.is_dir():
        raise DataError(f"--probe_path {probe_path} is a folder; give a .jsonl file path")
    check_writable(probe_path, "--probe_path")
    check_output_dir(output_dir)
    check_writable(output_dir, "--output_dir")


def clear_leftovers(output_dir: Path, probe_path: Path) -> None:
    """Remove what a killed build of `output_dir` left (its process is gone): its partial folder, the probe
    file's temporary, and the earlier build it had set aside mid-swap, which is put back when nothing
    replaced it."""
    for partial in stale_temporaries(output_dir, PARTIAL):
        shutil.rmtree(partial, ignore_errors=True)
    for previous in stale_temporaries(output_dir, PREVIOUS):
        if output_dir.exists():
            shutil.rmtree(previous, ignore_errors=True)
        else:
            previous.replace(output_dir)
    remove_stale_temporaries(probe_path)


def check_output_dir(output_dir: Path) -> None:
    """Refuse an `output_dir` that is a file, or a non-empty folder holding anything this pipeline did not write."""
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"--output_dir {output_dir} is a file; choose a folder path")
    entries = {path.name for path in output_dir.iterdir()} if output_dir.is_dir() else set()
    if not entries:
        return
    meta = own_meta(output_dir)
    if meta is None:
        raise DataError(
            f"--output_dir {output_dir} holds files preprocessing did not write (no {META} of ours); "
            f"choose another --output_dir, or remove it yourself: it is never deleted"
        )
    strangers = sorted(entries - _own_entries(output_dir, meta))
    if strangers:
        raise DataError(
            f"--output_dir {output_dir} was written by preprocessing but also holds files it did not write "
            f"({', '.join(strangers[:3])}); move them out or choose another --output_dir: they are never deleted"
        )


def check_options(
    source: Source,
    tokenizer: Optional[str],
    vocab_size: int,
    valid_fraction: float,
    dtype: Optional[str],
    probe_count: int,
) -> None:
    """Refuse option values that would only fail (or quietly build nonsense) after minutes of work."""
    if tokenizer is None and source != "hub" and vocab_size <= BYTE_ALPHABET:
        raise DataError(
            f"--vocab_size {vocab_size} must exceed the {BYTE_ALPHABET} byte symbols of the trained BPE; use e.g. 512"
        )
    if not 0 <= valid_fraction < 1:
        raise DataError(f"--valid_fraction {valid_fraction} must be in [0, 1); e.g. 0.05 holds out 5% of the documents")
    if probe_count < 0:
        raise DataError(f"--probe_count {probe_count} is negative; pass 0 for no probe file, or e.g. {PROBE_COUNT}")
    shards.requested_dtype(dtype)


def plan_datasets(input_dir: Path, outputs: Collection[Path] = ()) -> tuple[Plan, bool]:
    """(split, domain) -> files, in a fixed order, and whether the split is per document by hash. `outputs`
    (files the command writes) are never among the files."""
    if (input_dir / "train").is_dir():
        splits = {
            split: document_files(input_dir / split, outputs)
            for split in ("train", "valid")
            if (input_dir / split).is_dir()
        }
        hashed = False
    else:
        files = document_files(input_dir, outputs)
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


def _given_tokenizer(source: Source, spec: Optional[str]) -> Optional[tuple[Tokenizer, str]]:
    """The tokenizer the options name and its description, loaded before any data work so a bad one fails at
    once; None when a BPE is to be trained (also for "embedded" when a hub id is unreachable)."""
    spec = spec or (HUB_TOKENIZER if source == "hub" else None)
    if spec is None:
        return None
    try:
        return load_tokenizer(spec), str(spec)
    except TokenizerError as error:
        if source != "embedded" or not is_hub_id(spec):
            raise
        print(f"{error}; training a byte-level BPE instead")
        return None


def say(line: str) -> None:
    """A status line, on the stream of the progress bars, above any open bar (never inside one)."""
    tqdm.write(line, file=sys.stdout)


def progress_bar(**options) -> tqdm:
    """A progress bar on a terminal only: in a log file its redraws would bury the status lines."""
    return tqdm(file=sys.stdout, disable=None, **options)


def _counted(texts: Iterable[str], progress: tqdm) -> Iterator[str]:
    for text in texts:
        progress.update(len(text))
        yield text


def _tokenizer(
    given: Optional[tuple[Tokenizer, str]], vocab_size: int, plan: Plan, valid_fraction: Optional[float], build: Path
) -> tuple[Tokenizer, str]:
    """The given tokenizer, or a BPE trained on the train split, saved into `build`; and its description.
    Workers load the given tokenizer from the user's file, so their errors name it."""
    if given is not None:
        tokenizer, description = given
        tokenizer.save(build)
        return tokenizer, description
    say(f"training a byte-level BPE tokenizer with {vocab_size} entries")
    with progress_bar(desc="reading text for the tokenizer", unit="B", unit_scale=True) as progress:
        trained = train_bpe(_counted(_bpe_texts(plan, valid_fraction), progress), vocab_size, build / "tokenizer.json")
    return trained, f"byte-level BPE, {vocab_size} entries, trained on the train split"


def _shard_bytes(plan: Plan, tokenizer: Tokenizer, valid_fraction: Optional[float], dtype: np.dtype) -> int:
    """About the bytes the shards will take: the input's size times the tokens per byte of its first documents."""
    (_, files), *_ = plan.items()
    sample = list(itertools.islice(_split_texts(files, "train", valid_fraction), SIZE_SAMPLE_DOCS))
    sample_bytes = sum(len(text.encode("utf-8")) for text in sample)
    tokens = sum(map(len, tokenizer.encode_batch(sample))) + len(sample)
    input_bytes = sum(path.stat().st_size for path in {path for files in plan.values() for path in files})
    return int(input_bytes * tokens / max(1, sample_bytes) * dtype.itemsize)


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
    """Build token shards from documents; returns the output folder (as an absolute path).

    Args:
        source: "hub" downloads sail/regmix-data-sample (as upstream), "jsonl" reads `input_dir`,
            "embedded" builds the offline Python standard-library corpus.
        input_dir: folder of .jsonl/.jsonl.zst/.parquet files, with or without train/ and valid/
            subfolders; default for "hub" is preprocess/sail/regmix-data-sample.
        output_dir: where the datasets go; default datasets/<source>. Only an absent or empty folder, or
            one this pipeline wrote, is used; a symlink is followed (the folder it points to is rebuilt).
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
    check_options(source, tokenizer, vocab_size, valid_fraction, dtype, probe_count)
    output_dir = Path(output_dir or Path("datasets") / source).resolve()
    probe_path = Path(probe_path).absolute()
    clear_leftovers(output_dir, probe_path)
    check_destination(output_dir, probe_path)
    if source == "hub":
        check_hub_reachable()
    given = _given_tokenizer(source, tokenizer)
    # A trained BPE has at most `vocab_size` entries, so the dtype is known before it is trained.
    ids, described = (given[0].vocab_size, given[1]) if given else (vocab_size, f"a BPE of --vocab_size {vocab_size}")
    token_dtype = shards.token_dtype(ids, dtype, described)
    if source == "hub":
        input_dir = fetch_hub_dataset(input_dir or HUB_LOCAL_DIR)
    prefix = name_prefix if name_prefix is not None else (HUB_PREFIX if source == "hub" else "")
    outputs = _own_files(output_dir, probe_path)
    output_folder(output_dir.parent)
    build = _sibling(output_dir, PARTIAL)
    try:
        meta = run_in_own_group(
            _build,
            source,
            input_dir,
            build,
            given,
            vocab_size,
            prefix,
            valid_fraction,
            token_dtype,
            num_workers,
            probe_path,
            probe_count,
            output_dir,
            outputs,
        )
        if meta["probe_records"]:
            write_probe(meta["probe_records"], _probe_target(probe_path, output_dir, build))
        _swap_into_place(build, output_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    _say_written(meta, output_dir, probe_path)
    return output_dir


def _own_files(output_dir: Path, probe_path: Path) -> list[Path]:
    """Files this command writes that may lie among the documents: the probe file, and the earlier build's."""
    earlier = (own_meta(output_dir) or {}).get("probe")
    earlier_path = earlier.get("path") if isinstance(earlier, dict) else None
    return [probe_path, *([Path(earlier_path)] if isinstance(earlier_path, str) else [])]


def _probe_target(probe_path: Path, output_dir: Path, build: Path) -> Path:
    """Where the probe file is written before the swap: into the build when it lives in the output folder."""
    probe = probe_path.resolve()
    return build / probe.relative_to(output_dir) if probe.is_relative_to(output_dir) else probe_path


def _say_written(meta: dict, output_dir: Path, probe_path: Path) -> None:
    tokens = sum(info["tokens"] for info in meta["datasets"].values())
    say(f"wrote {len(meta['datasets'])} datasets ({tokens:,} tokens), their tokenizer and {META} to {output_dir}")
    if meta["probe_records"]:
        say(f"wrote {len(meta['probe_records'])} probe texts to {probe_path}")


def _sibling(output_dir: Path, suffix: str) -> Path:
    """A new hidden folder next to `output_dir` named for this process (`.NAME.<pid>.<random><suffix>`), so
    the next run can clear it if this one is killed; its unique name never collides with a file of the user's."""
    try:
        return temporary_folder(output_dir, suffix)
    except OSError as error:
        raise DataError(
            f"cannot create a folder next to --output_dir {output_dir} ({error.strerror or error}); "
            f"choose a writable location"
        ) from None


def _swap_into_place(build: Path, output_dir: Path) -> None:
    """Replace `output_dir` by `build`. Checked again first: files may have been put there during the build.
    Should the final rename fail, the previous folder is put back."""
    check_output_dir(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()):
        previous = _sibling(output_dir, PREVIOUS)
        output_dir.replace(previous)
        try:
            build.replace(output_dir)
        except BaseException:
            previous.replace(output_dir)
            raise
        shutil.rmtree(previous)
    else:
        if output_dir.is_dir():
            output_dir.rmdir()
        build.replace(output_dir)


def _build(
    source,
    input_dir,
    build,
    given,
    vocab_size,
    prefix,
    valid_fraction,
    token_dtype,
    num_workers,
    probe_path,
    probe_count,
    output_dir,
    outputs,
) -> dict:
    """Everything of a build that takes time, into `build`; runs in the build's own process group. A full disk
    is one line naming `output_dir` and the room the shards need (once the tokenizer can estimate it)."""
    needed = None
    try:
        meta: dict = {"source": source}
        if source == "embedded":
            input_dir = build / "corpus"
            embedded.write_embedded_corpus(input_dir, processes=num_workers)
            meta["text"] = f"Python {embedded.python_version()} standard library at {embedded.stdlib_root()}"
        else:
            meta["text"] = str(input_dir)
        plan, hashed = plan_datasets(Path(input_dir), outputs)
        fraction = valid_fraction if hashed else None
        tokenizer, description = _tokenizer(given, vocab_size, plan, fraction, build)
        needed = _shard_bytes(plan, tokenizer, fraction, token_dtype)
        ensure_space(output_dir, needed)
        meta["tokenizer"] = {
            "source": description,
            "file": tokenizer.file_name,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "bos_id": tokenizer.bos_id,
        }
        meta["dtype"] = token_dtype.name
        meta["datasets"] = _tokenize(plan, tokenizer, token_dtype, prefix, fraction, num_workers, build)
        valid_texts: dict[str, Iterable[str]] = {
            domain: _split_texts(files, "valid", fraction)
            for (split, domain), files in plan.items()
            if split == "valid"
        }
        meta["probe_records"] = select_probe_texts(valid_texts, tokenizer, probe_count) if probe_count else []
        meta["probe"] = {"path": str(probe_path), "count": probe_count}
        if source == "embedded":
            shutil.rmtree(input_dir)
        meta["written_by"] = WRITTEN_BY
        write_atomic(build / META, json.dumps({k: v for k, v in meta.items() if k != "probe_records"}, indent=2) + "\n")
    except (OSError, DiskFullError) as error:
        if isinstance(error, DiskFullError) or is_disk_full(error):
            raise disk_full_error(output_dir, needed) from None
        raise
    return meta


def _tokenize(
    plan: Plan,
    tokenizer: Tokenizer,
    token_dtype: np.dtype,
    prefix: str,
    fraction: Optional[float],
    num_workers: int,
    build: Path,
) -> dict:
    """Each (split, domain) of `plan` as a litdata dataset in `build`; name -> its split, domain and tokens."""
    datasets = {}
    total_bytes = sum(path.stat().st_size for files in plan.values() for path in files)
    with progress_bar(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing") as progress:
        for (split, domain), files in plan.items():
            name = f"{split}_{prefix}{domain}"
            work = shards.TokenizeFile(str(tokenizer.path), token_dtype.name, split, fraction, str(build))
            tokens = shards.write_dataset(files, build / name, work, num_workers)
            if tokens:
                datasets[name] = {"split": split, "domain": domain, "tokens": tokens}
            else:
                shutil.rmtree(build / name)
            say(f"{name}: {tokens:,} tokens" if tokens else f"{name}: no documents, skipped")
            progress.update(sum(path.stat().st_size for path in files))
    return datasets
