"""The benchmark command runs and writes its outputs; no timing is asserted."""

import json

import pytest

from tinycond.bench.__main__ import main


def test_bench_quick_writes_json_and_figure(tmp_path, capsys):
    json_path = tmp_path / "bench.json"
    assert main(["--quick", "--only", "sparse,throughput", "--json", str(json_path), "--out", str(tmp_path)]) == 0
    results = json.loads(json_path.read_text())
    assert [row["sizes"]["n_experts"] for row in results["sparse"]] == [4, 16], results["sparse"]
    assert results["throughput"]["fraction_of_square"] > 0, results["throughput"]
    assert results["machine"]["cores"] >= 1, results["machine"]
    assert (tmp_path / "bench_moe_time_vs_experts.png").exists(), "the E sweep figure was not written"
    output = capsys.readouterr().out
    assert "sparse top-2 vs dense mixture" in output, output


def test_bench_unknown_section_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["--only", "sparse,gpu"])
    assert "unknown section(s) gpu" in capsys.readouterr().err
