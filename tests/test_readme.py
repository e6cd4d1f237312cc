"""The README's end-to-end example runs as written and finds θ near the truth."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_own_simulator_example_runs_and_scans(capsys):
    section = README.read_text().split("## Your own simulator, end to end", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.splitlines()) <= 32, "the example should stay about 30 lines"
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    output = capsys.readouterr().out
    assert "all checks passed" in output
    low, high = namespace["result"].interpolated_interval(0.95)
    assert low < 0.2 < high  # 50 events at θ = 0.2 (fixed seed)
    assert high - low < 0.8
