"""metrics.csv survives a kill mid-write and refuses to be misread."""

import pytest

from lit_gpt.training.loggers import CSVMetrics, MetricsFileError, read_metrics


def test_rows_round_trip_and_resume_truncation(tmp_path):
    log = CSVMetrics(tmp_path)
    log.log_metrics({"metric/train_loss": 2.5, "lr": 1e-3}, step=1)
    log.log_metrics({"metric/train_loss": 2.0}, step=2)
    assert read_metrics(log.path) == [(1, "metric/train_loss", 2.5), (1, "lr", 1e-3), (2, "metric/train_loss", 2.0)]
    log.truncate_after(1)
    assert read_metrics(log.path) == [(1, "metric/train_loss", 2.5), (1, "lr", 1e-3)]


def test_a_line_torn_by_a_kill_is_dropped_and_the_resume_rewrites_the_file(tmp_path):
    log = CSVMetrics(tmp_path)
    log.log_metrics({"metric/train_loss": 2.5}, step=1)
    with open(log.path, "a") as handle:
        handle.write("2,metric/trai")
    assert read_metrics(log.path) == [(1, "metric/train_loss", 2.5)]
    log.truncate_after(5)
    assert log.path.read_text().endswith("\n") and read_metrics(log.path) == [(1, "metric/train_loss", 2.5)]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "does not start with the header"),
        (b"a,b\n1,2\n", "does not start with the header"),
        (b"step,metric,value\n1,loss,abc\n2,loss,1.0\n", "line 2 is not step,metric,value"),
        (b"step,metric,value\n1,loss\n", "line 2 is not step,metric,value"),
        (b"\xff\xfe\x00garbage", "is not a text file"),
    ],
)
def test_a_damaged_file_is_refused_naming_the_line(tmp_path, content, match):
    path = tmp_path / "metrics.csv"
    path.write_bytes(content)
    with pytest.raises(MetricsFileError, match=match):
        read_metrics(path)
