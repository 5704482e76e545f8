"""`lmtt check`: the identities on the default model, the CLI, and the app's banner when one fails."""

import json

import pytest
import torch

from lmtt.engine import check
from lmtt.tools.cli import main


@pytest.mark.default_model
def test_every_identity_holds_on_the_default_model(default_runner):
    report = check.run_checks(default_runner, "When Mary and John went to the store, John gave a drink to")
    assert report.passed, [r.line() for r in report.failures]
    assert [r.name for r in report.results] == list(check.NAMES)
    assert report.worst() < 1e-5
    assert default_runner.check_report is not None and default_runner.check_report.passed  # run at load


@pytest.mark.default_model
def test_the_cli_prints_one_line_per_check_and_fails_loudly(capsys, monkeypatch):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nok   ") == 5 and "all checks passed" in out
    assert main(["check", "--json", "--prompt", "Hello there"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and {c["name"] for c in result["checks"]} == set(check.NAMES)
    monkeypatch.setattr(check.CheckResult, "passed", property(lambda r: r.name != "attention"))
    assert main(["check"]) == 1
    assert "FAIL attention" in capsys.readouterr().out


@pytest.mark.default_model
def test_the_app_shows_a_red_banner_when_a_check_fails(default_runner, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from lmtt.tools.serve import ROOT

    monkeypatch.setattr(check.CheckResult, "passed", property(lambda r: r.name != "neurons"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.sidebar.button[0].click().run()  # Run, on the default prompt
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "does not add up" in errors and "neurons: relative error" in errors


def test_each_row_is_measured_against_its_own_scale():
    """An outlier row (an attention sink's state) must not hide a 1% error in a small row."""
    expected = torch.tensor([[1000.0, -500.0], [1.0, 1.0]])
    got = torch.tensor([[1000.0, -500.0], [1.01, 1.0]])
    assert check.relative_error(got, expected) == pytest.approx(0.01)
    assert check.relative_error(expected, expected) == 0.0
    # a row of zeros is measured against a millionth of the tensor's scale, not against nothing
    zero_row = torch.tensor([[1000.0, 1.0], [0.0, 0.0]])
    assert check.relative_error(zero_row + torch.tensor([[0.0, 0.0], [1e-6, 0.0]]), zero_row) == pytest.approx(1e-3)
    # attention weights (H, T, T): a position is a query row over every head
    heads = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.01, 0.0]]])  # (H=2, T=2, T=2)
    off = heads.clone()
    off[1, 1, 0] = 0.02  # 0.01 off in a head whose row is small: measured against query 1's scale over heads, 0.5
    assert check.relative_error(off, heads, position_dim=1) == pytest.approx(0.02)
    # masked entries (-inf where expected) are left out
    masked = torch.tensor([[0.5, float("-inf")], [0.25, 0.75]])
    assert check.relative_error(masked, masked) == 0.0
    assert check.relative_error(torch.tensor([[0.5, 0.0], [0.25, 0.75]]), masked) == 0.0  # only finite entries compare
