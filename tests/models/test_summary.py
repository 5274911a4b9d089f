from minifit.cli import main


def test_summary_prints_layers_totals_paper_figures_and_speedup(capsys):
    assert main(["summary", "fitnet-1", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "h8       MaxoutConv2d   (64, 1, 1)" in out
    assert "total: 348,694 params, 30,246,024 mults/image; counting maxout as 2 pieces: 251,194 params" in out
    assert "paper (FitNets Table 5): 250.0K params; ours 251.2K (+0.5%)" in out
    assert "vs teacher cifar-teacher: compression 36.01x" in out and "measured speed-up" in out
    assert "paper: speed-up 13.36x, compression 36x" in out


def test_summary_without_timing_and_unknown_model(capsys):
    assert main(["summary", "mnist-fitnet", "--no-time", "--no-layers"]) == 0
    out = capsys.readouterr().out
    assert "ms/image" not in out and "compression 11.98x" in out
    assert main(["summary", "no-such-net", "--no-time"]) == 2
    assert "unknown model 'no-such-net'" in capsys.readouterr().err


def test_summary_counts_untied_biases(capsys):
    assert main(["summary", "mnist-fitnet", "--no-time", "--no-layers", "--bias", "untied"]) == 0
    out = capsys.readouterr().out
    assert "total: 82,530 params" in out
    assert "conv biases untied (one per map and detector position): 46,528 of the params" in out
    assert main(["summary", "mnist-fitnet", "--no-time", "--no-layers"]) == 0
    assert "conv biases tied (one per map): 224 of the params" in capsys.readouterr().out
