"""Running the `sluice` command in the test's own process, and what its errors must look like."""

import subprocess

from click.testing import CliRunner

from sluice.app.cli import main


def invoke(*args):
    """The command in this process: a result with ``returncode``, ``stdout`` and ``stderr`` like a subprocess's."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught exception: what a user would see as a traceback
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result, message: str) -> None:
    """Exit status 2, one line on stderr holding ``message``, and no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
