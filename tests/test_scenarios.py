"""Sync scenarios as data: every tests/scenarios/*.yaml, against every kind of remote (file,
s3, gcs, azure), each on its own emulator.

Each scenario is a starting tree per side, then steps (changes on either side, one `syncd`
command as a user runs it, the listings both sides must show afterwards). The format is
described in tests/scenario_runner.py. A scenario with `remotes: [s3]` runs on S3 only (a folder
cannot hold the keys it needs).

To regenerate the expectations from what syncd actually does, run

    SYNCD_SCENARIO_REGEN=1 .venv/bin/pytest tests/test_scenarios.py

which rewrites each file's `expect` blocks in place (the rest of the file is left alone), the
way rclone bisync's golden listings are regenerated; then read `git diff tests/scenarios/`
before committing: the diff is the behaviour change.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from scenario_runner import REGEN_ENV, SCENARIO_DIR, make_remote, run_scenario, scenario_remotes


def _cases() -> Iterator[object]:
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        for kind in scenario_remotes(path):
            yield pytest.param(path, kind, id=f"{path.stem}-{kind}")


@pytest.mark.parametrize(("scenario", "kind"), list(_cases()))
def test_scenario(
    scenario: Path, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    # The first remote a scenario names rewrites it; the others are checked against the result.
    regenerate = os.environ.get(REGEN_ENV) == "1" and kind == scenario_remotes(scenario)[0]
    run_scenario(scenario, remote, tmp_path, regenerate=regenerate)
