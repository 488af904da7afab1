"""``python -m graphspike_kd.benchmarks.snn_digits``: a tiny end-to-end run and the ESD beta option."""

import json

from graphspike_kd.benchmarks import snn_digits


def test_snn_digits_runs_and_passes_esd_beta(tmp_path, monkeypatch):
    seen = []
    real = snn_digits.esd_step_loss

    def spy(model, x, y, T, **kwargs):
        seen.append(kwargs.get("beta"))
        return real(model, x, y, T, **kwargs)

    monkeypatch.setattr(snn_digits, "esd_step_loss", spy)
    out = tmp_path / "digits.json"
    res = snn_digits.main(["--epochs", "1", "--T", "1", "--seeds", "0", "--methods", "esd", "--esd-beta", "0",
                           "--output", str(out), "--quiet"])
    assert seen and set(seen) == {0.0}  # every ESD step got the ablation's beta
    saved = json.loads(out.read_text())
    assert saved["esd_beta"] == 0.0 and saved == res
    assert 10.0 < saved["methods"]["esd"]["mean"] <= 100.0  # one epoch already beats chance (10 %)
