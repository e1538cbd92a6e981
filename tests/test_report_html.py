"""report.html: the page's content on a tiny sweep, and the page itself in a headless Chromium."""

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch

from lit_gpt.cli.eval_sink import evaluate_checkpoint
from lit_gpt.cli.report import parse as parse_report_args
from lit_gpt.cli.report import report
from lit_gpt.core.errors import UserError
from lit_gpt.data.tokenizer import train_bpe
from lit_gpt.model.config import Config
from lit_gpt.model.gpt import GPT
from lit_gpt.reporting.html import read_evaluation, report_html

TEXTS = [" ".join(f"word{(i * j) % 13}" for j in range(90)) for i in range(1, 5)]
ODD_NAME = "<script>&'x'"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def save_checkpoint(folder, tokenizer, step, **overrides):
    folder.mkdir()
    torch.manual_seed(0)
    model = GPT(Config.from_name("micro", vocab_size=tokenizer.vocab_size, **overrides))
    path = folder / f"iter-{step:06d}-ckpt.pth"
    torch.save(
        {
            "model": model.state_dict(),
            "config": model.config.asdict(),
            "step_count": step,
            "tokens_seen": step * 100,
            "train": {"tokenizer": str(tokenizer.path)},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two runs: `kv_bias` with everything a finished run has (metrics.csv with the periodic sink metrics,
    sink_eval.json, plots/), and a run with an odd name holding only its checkpoint; the page of both."""
    root = tmp_path_factory.mktemp("sweep")
    tokenizer = train_bpe(TEXTS, 300, root / "tokenizer.json")
    probe = root / "probe.jsonl"
    probe.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    full = root / "kv_bias"
    ckpt = save_checkpoint(full, tokenizer, 10, k_bias=True, v_bias=True)
    metrics = {
        "sink_1": 2.0,
        "sink_star": 5.0,
        "probe_loss": -0.2,
        "a_val_loss": -0.25,
        "b_val_loss": -0.2,
        "train_loss": -0.3,
    }  # value at step s: 6 + slope * s
    (full / "metrics.csv").write_text(
        "step,metric,value\n"
        + "".join(
            f"{step},metric/{name},{6 + slope * step}\n" for step in (0, 5, 10) for name, slope in metrics.items()
        )
    )
    evaluate_checkpoint(ckpt, probe, json=full / "sink_eval.json", plots=full / "plots", n_sequences=4, length=32)
    bare = root / ODD_NAME
    save_checkpoint(bare, tokenizer, 4)
    out = root / "report"
    report(
        **parse_report_args(
            [str(full), str(bare / "iter-000004-ckpt.pth"), "--probe", str(probe), "--out", str(out), "--html"]
        )
    )
    return {"page": out / "report.html", "full": full, "bare": bare}


class PageParts(HTMLParser):
    """Table rows (the report's columns; the differing settings' columns apart), images, links and notes."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.links, self.notes, self.tags = [], [], [], [], set()
        self.setting_names, self.settings = [], []
        self._row = self._note = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "tr" and attrs.get("class") == "run-row":
            self._row = ([], [])
        elif tag == "td" and self._row is not None:
            self._cell = self._row[1] if attrs.get("class") == "setting" else self._row[0]
            self._cell.append("")
        elif tag == "th" and attrs.get("class") == "setting":
            self._cell = self.setting_names
            self._cell.append("")
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "p" and attrs.get("class") == "note":
            self._note = ""

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row[0])
            self.settings.append(self._row[1])
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "p" and self._note is not None:
            self.notes.append(self._note)
            self._note = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[-1] += data
        if self._note is not None:
            self._note += data


def page_parts(text):
    parts = PageParts()
    parts.feed(text)
    return parts


def test_the_page_holds_the_report_table_embedded_figures_and_links_to_the_run_files(sweep):
    page = sweep["page"]
    text = page.read_text(encoding="utf-8")
    parts = page_parts(text)
    markdown = (page.parent / "report.md").read_text().splitlines()[2:4]
    assert parts.rows == [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown]
    assert [row[0] for row in parts.rows] == ["kv_bias", ODD_NAME]
    assert "&lt;script&gt;&amp;&#x27;x&#x27;" in text and "<script" not in text.lower()  # escaped; no script at all
    assert parts.setting_names == ["k_bias", "v_bias"]  # the settings in which the runs differ, beside the table
    assert parts.settings == [["True", "True"], ["False", "False"]]
    # the overlays of Sink_1 and of the validation loss across runs; the full run's curves, sink rates per layer,
    # massive activations and the attention of its sink layer; the bare run's massive activations and attention
    assert len(parts.images) == 8
    alts = re.findall(r'<img[^>]*alt="([^"]*)"', text)
    assert alts[:2] == ["sink rates over training steps, all runs", "validation loss over training steps, all runs"]
    assert sum(alt.endswith(": attention of layer 0") for alt in alts) == 2  # no sink in a random model: layer 0
    for src in parts.images:
        assert src.startswith("data:image/svg+xml;base64,")
        assert b"<svg" in base64.b64decode(src.split(",", 1)[1])
    files = [href for href in parts.links if not href.startswith("#")]
    assert {Path(unquote(href)).name for href in files} == {
        "metrics.csv",
        "sink_eval.json",
        "attention.png",
        "layer_sink_rates.png",
        "massive_activations.png",
        "norms.png",
        "sink_by_position.png",
    }
    assert all((page.parent / unquote(href)).resolve().is_file() for href in files)
    assert "http" not in "".join(parts.links + parts.images)  # nothing off the machine
    notes = " ".join(parts.notes)
    assert "no metrics.csv" in notes and "no sink_eval.json" in notes and "no PNGs" in notes
    assert len(parts.notes) == 3  # all about the bare run; the full run lacks nothing


def test_missing_or_stale_pieces_are_notes_on_the_page(tmp_path):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    (run / "metrics.csv").write_text("step,metric,value\n1,metric/train_loss,5.0\n")
    row = {
        "run": "run",
        "run_dir": run,
        "variant": "softmax",
        "step": 20,
        "tokens_seen": 2000,
        "massive_activations": None,
        **dict.fromkeys(
            ("sink_1", "sink_star", "valid_loss", "probe_loss", "massive_ratio", "massive_layer", "embed_ratio")
        ),
    }
    (run / "sink_eval.json").write_text("{not json")
    assert read_evaluation(run)[0] is None and "not readable JSON" in read_evaluation(run)[1]
    (run / "sink_eval.json").write_text(
        json.dumps({"layer_sink_rates": {"sink_1": [1.0, 40.0]}, "step_count": 10, "eps": 0.3})
    )
    parts = page_parts(report_html([row], tmp_path / "out" / "report.html"))
    notes = " ".join(parts.notes)
    assert "no sink metrics" in notes and "sink_eval.json is from step 10, the table from step 20" in notes
    assert "no activation statistics" in notes and "no PNGs" in notes
    assert "no run has sink metrics" in notes
    assert len(parts.images) == 2  # the loss curve and the per-layer bars
    assert parts.rows == [["run", "softmax"] + ["--"] * 7 + ["2,000", "20"]]


def test_html_needs_an_output_folder(sweep):
    with pytest.raises(UserError, match="--html writes report.html into the --out folder"):
        report(**parse_report_args([str(sweep["full"]), "--html"]))


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium of the system's packages, driven by Playwright; skipped when either is missing."""
    executable = next(filter(None, map(shutil.which, BROWSERS)), None)
    if executable is None:
        pytest.skip(
            f"no Chromium installed (none of {', '.join(BROWSERS)} on PATH); on Debian: apt-get install chromium"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'"
    )
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable)
        except sync_api.Error as error:
            pytest.skip(f"playwright cannot launch {executable}: {str(error).splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()


def test_the_page_opens_in_chromium_without_errors_and_shows_the_table_and_plots(browser, sweep):
    # `browser` comes first so that a machine without one skips before the sweep is built
    page = browser.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(sweep["page"].as_uri(), wait_until="load")
        first_row = page.locator("#report-table tbody tr").first.locator("td").all_inner_texts()
        assert first_row[:2] == ["kv_bias", "softmax norm:sum k_bias v_bias"] and len(first_row) == 13
        assert first_row[2:4] == ["True", "True"]  # k_bias and v_bias, the settings in which the runs differ
        assert page.locator("#report-table tbody tr td:first-child").all_inner_texts() == ["kv_bias", ODD_NAME]
        widths = page.eval_on_selector_all("img", "images => images.map(image => image.complete && image.naturalWidth)")
        assert len(widths) == 8 and all(width > 0 for width in widths)
        assert page.locator("img[alt='kv_bias: sink rates per layer']").is_visible()
        assert page.locator("img[alt='kv_bias: curves over steps']").is_visible()
        assert page.locator("section#run-1 h2").inner_text() == ODD_NAME
        assert page.locator("section#run-1 .note").count() == 3
        assert errors == []
    finally:
        page.close()
