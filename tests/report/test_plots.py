from poise.report.plots import CURVE_KEYS, plot_curves


def test_plot_curves_writes_a_png_with_one_panel_per_curve(tmp_path):
    traj = [{k: float(i) for k in CURVE_KEYS} for i in range(5)]
    out = tmp_path / "c.png"
    plot_curves({"a": [traj, traj], "b": [traj[:3]], "empty": [[]]}, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
