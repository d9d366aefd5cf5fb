"""README.md's two commands stay true: CI runs exactly the test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fenced_commands(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.split("```sh\n", 1)[1].split("```", 1)[0].splitlines() if line]


def test_ci_runs_the_readme_test_command() -> None:
    [command] = fenced_commands("Test it")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci_lines


def test_the_run_command_installs_and_starts_queued() -> None:
    [command] = fenced_commands("Run it")
    assert "pip install ." in command and command.rstrip().endswith("/queued")
