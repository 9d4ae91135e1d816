"""What a user sees when a command refuses to run: exit 2 and one error line."""

from __future__ import annotations

from witcurate.cli import main


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI with `argv`; it fails with exit 2 and one line that says what is wrong (after,
    at most, the line that names the config in force). Returns that line."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) <= 2 and all(line.startswith("config: ") for line in lines[:-1]), lines
    err = lines[-1]
    assert err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
