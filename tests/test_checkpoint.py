from pathlib import Path

import lightning as L
import pytest
import torch

import lit_gpt.training.checkpoint as checkpoint
from lit_gpt.core.errors import UserError
from lit_gpt.model.config import GPT2_STRUCTURE, Config
from lit_gpt.model.gpt import GPT
from lit_gpt.training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    find_latest,
    first_readable,
    list_checkpoints,
    load_model,
    prune,
    read_checkpoint,
    save_atomic,
)


@pytest.fixture
def fabric():
    return L.Fabric(accelerator="cpu", devices=1)


def _state(step: int) -> dict:
    config = Config.from_name("micro", k_bias=True, v_bias=True)
    torch.manual_seed(step)
    model = GPT(config)
    return {
        "model": model,
        "optimizer": torch.optim.AdamW(model.parameters()),
        "step_count": step,
        "iter_num": 2 * step,
        "tokens_seen": 0,
        "config": config.asdict(),
        "train": {"ignore_loss": 0},
    }


def test_checkpoints_are_found_by_step_not_by_name_and_pruned_oldest_first(tmp_path):
    for step in (999_999, 1_000_000, 20, 5):
        checkpoint_path(tmp_path, step).write_bytes(b"x")
    (tmp_path / "iter-000030-ckpt.pth.tmp").write_bytes(b"partial")
    (tmp_path / "metrics.csv").write_text("step,metric,value\n")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "iter-000005-ckpt.pth",
        "iter-000020-ckpt.pth",
        "iter-999999-ckpt.pth",
        "iter-1000000-ckpt.pth",
    ]
    assert find_latest(tmp_path).name == "iter-1000000-ckpt.pth"
    assert [p.name for p in prune(tmp_path, keep_last=2)] == ["iter-000005-ckpt.pth", "iter-000020-ckpt.pth"]
    assert len(list_checkpoints(tmp_path)) == 2 and (tmp_path / "metrics.csv").exists()
    assert prune(tmp_path, keep_last=0) == []
    assert find_latest(tmp_path / "missing") is None


def test_saved_checkpoint_loads_as_model_and_plain_dict(fabric, tmp_path):
    state = _state(3)
    path = checkpoint_path(tmp_path, 3)
    save_atomic(fabric, path, state)
    model, ckpt = load_model(path)
    assert ckpt["step_count"] == 3 and ckpt["iter_num"] == 6 and ckpt["train"] == {"ignore_loss": 0}
    assert Config.from_dict(ckpt["config"]) == state["model"].config
    for name, tensor in state["model"].state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert "state" in torch.load(path, weights_only=False)["optimizer"]
    idx = torch.randint(0, 100, (2, 16))
    assert torch.equal(model(idx), state["model"].eval()(idx))


def test_a_tied_gpt2_checkpoint_loads_with_the_head_still_the_embedding(fabric, tmp_path):
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", **GPT2_STRUCTURE, sink_tokens=1))
    path = checkpoint_path(tmp_path, 1)
    save_atomic(fabric, path, {"model": model, "config": model.config.asdict(), "step_count": 1})
    loaded, _ = load_model(path)
    idx = torch.randint(0, 100, (2, 16))
    assert torch.equal(loaded(idx), model.eval()(idx))
    assert loaded.lm_head is None and set(loaded.state_dict()) == set(model.state_dict())


def test_a_crash_during_save_leaves_the_previous_checkpoint_loadable(fabric, tmp_path, monkeypatch):
    save_atomic(fabric, checkpoint_path(tmp_path, 10), _state(10))

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_atomic(fabric, checkpoint_path(tmp_path, 20), _state(20))
    monkeypatch.undo()

    assert find_latest(tmp_path) == checkpoint_path(tmp_path, 10)
    assert not checkpoint_path(tmp_path, 20).exists()
    _, ckpt = load_model(find_latest(tmp_path))
    assert ckpt["step_count"] == 10
    # The next successful save replaces the stale temporary file.
    save_atomic(fabric, checkpoint_path(tmp_path, 20), _state(20))
    assert find_latest(tmp_path) == checkpoint_path(tmp_path, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter-000010-ckpt.pth", "iter-000020-ckpt.pth"]


def test_rename_happens_only_after_the_file_is_complete(fabric, tmp_path, monkeypatch):
    seen = []
    real_replace = checkpoint.os.replace

    def record(src, dst):
        seen.append((torch.load(src, weights_only=False)["step_count"], dst))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", record)
    save_atomic(fabric, checkpoint_path(tmp_path, 7), _state(7))
    assert seen == [(7, checkpoint_path(tmp_path, 7))]


def corrupt_variants(good: Path, folder: Path) -> dict[str, Path]:
    """Damaged copies of a good checkpoint, one per way a file goes bad."""
    data = good.read_bytes()
    variants = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": bytes(range(256)) * 64,
        "text": b"not a checkpoint\n",
    }
    paths = {}
    for name, content in variants.items():
        paths[name] = folder / f"{name}.pth"
        paths[name].write_bytes(content)
    torch.save({"weights": 1}, folder / "foreign.pth")
    torch.save([1, 2, 3], folder / "list.pth")
    paths.update(foreign=folder / "foreign.pth", list=folder / "list.pth")
    return paths


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "text", "foreign", "list"])
def test_damaged_or_foreign_files_are_refused_in_one_line_naming_the_file(fabric, tmp_path, kind):
    good = checkpoint_path(tmp_path, 1)
    save_atomic(fabric, good, _state(1))
    path = corrupt_variants(good, tmp_path)[kind]
    for reader in (read_checkpoint, load_model, lambda p: read_checkpoint(p, mmap=True)):
        with pytest.raises(CheckpointError) as info:
            reader(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert isinstance(info.value, UserError)


def test_missing_file_and_weights_that_do_not_fit_the_config(fabric, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pth")
    state = _state(2)
    path = checkpoint_path(tmp_path, 2)
    save_atomic(fabric, path, state)
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["n_layer"] = 3
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not fit the model config"):
        load_model(path)


def test_first_readable_skips_damaged_newest_checkpoints_and_says_so(fabric, tmp_path):
    for step in (1, 2):
        save_atomic(fabric, checkpoint_path(tmp_path, step), _state(step))
    checkpoint_path(tmp_path, 3).write_bytes(b"PK\x03\x04 cut")
    said = []
    newest_first = list(reversed(list_checkpoints(tmp_path)))
    assert first_readable(newest_first, said.append) == checkpoint_path(tmp_path, 2)
    assert len(said) == 1 and "iter-000003-ckpt.pth" in said[0]
    assert first_readable([], said.append) is None
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        first_readable(newest_first[:1], said.append)


def test_a_full_disk_stops_the_save_in_one_line_and_keeps_the_earlier_checkpoint(fabric, small_disk):
    from lit_gpt.training.checkpoint import CheckpointWriteError

    probe = small_disk("64m")
    save_atomic(fabric, checkpoint_path(probe, 1), _state(1))
    size = checkpoint_path(probe, 1).stat().st_size
    disk = small_disk(str(int(size * 1.5)))
    save_atomic(fabric, checkpoint_path(disk, 10), _state(10))
    for needed in (None, size):  # the write runs out of room midway; the room is checked before writing
        with pytest.raises(
            CheckpointWriteError,
            match=rf"^no space left to save checkpoint {disk}/iter-000020-ckpt.pth: "
            r".*are free on that disk; .*--resume auto\. Earlier checkpoints "
            r"are intact; no partial file was left$",
        ):
            save_atomic(fabric, checkpoint_path(disk, 20), _state(20), needed=needed)
        assert sorted(p.name for p in disk.iterdir()) == ["iter-000010-ckpt.pth"]
        assert load_model(find_latest(disk))[1]["step_count"] == 10
