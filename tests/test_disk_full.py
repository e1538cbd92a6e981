"""Every command that writes outputs meets a full disk with one `error:` line naming the path and the space,
the earlier outputs intact and no temporary left behind."""

import json

import pytest
from test_eval_cli import synthetic_texts, train_checkpoint

from lit_gpt.cli import eval_sink, export_hf, report
from lit_gpt.data.tokenizer import train_bpe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    tokenizer = train_bpe(synthetic_texts(30, seed=0), 300, root / "tokenizer.json")
    probe = root / "probe.jsonl"
    probe.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(4, seed=1)))
    (root / "default").mkdir()
    ckpt = train_checkpoint(root / "default" / "iter-000002-ckpt.pth", tokenizer, synthetic_texts(20, seed=2), steps=2)
    return {"ckpt": ckpt, "probe": probe, "tokenizer": tokenizer}


def one_error_line(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_sink_eval_json_and_plots_on_a_full_disk(run, small_disk, capsys):
    disk = small_disk("48k")
    (disk / "sink.json").write_text('{"earlier": true}\n')
    base = ["--load_from", str(run["ckpt"]), "--probe", str(run["probe"]), "--n_sequences", "4"]
    (disk / "filler").write_bytes(b"x" * 40_000)
    err = one_error_line(capsys, eval_sink.main, [*base, "--json", str(disk / "sink.json")])
    assert f"no space left on the disk of {disk / 'sink.json'}: it needs about" in err
    assert (disk / "sink.json").read_text() == '{"earlier": true}\n'
    err = one_error_line(capsys, eval_sink.main, [*base, "--plots", str(disk / "plots")])
    assert f"no space left on the disk of {disk / 'plots'}/" in err
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "plots", "sink.json"]
    assert not [p for p in (disk / "plots").iterdir() if p.name.startswith(".")]


def test_export_on_a_full_disk_writes_nothing(run, small_disk, capsys):
    disk = small_disk("64k")
    err = one_error_line(
        capsys,
        export_hf.main,
        ["--load_from", str(run["ckpt"]), "--out_dir", str(disk / "hf"), "--tokenizer", str(run["tokenizer"].path)],
    )
    assert f"no space left on the disk of {disk / 'hf' / 'model.safetensors'}: it needs about" in err
    assert list((disk / "hf").iterdir()) == []


def test_report_on_a_full_disk(run, small_disk, capsys):
    disk = small_disk("16k")
    (disk / "filler").write_bytes(b"x" * 12_000)
    err = one_error_line(capsys, report.main, [str(run["ckpt"]), "--probe", str(run["probe"]), "--out", str(disk)])
    assert f"no space left on the disk of {disk}/report." in err
    assert sorted(p.name for p in disk.iterdir()) in (
        ["filler"],
        ["filler", "report.md"],
        ["filler", "report.csv"],
        ["filler", "report.csv", "report.md"],
    )
