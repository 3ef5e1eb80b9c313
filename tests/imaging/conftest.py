from __future__ import annotations

from pathlib import Path

import pytest

from regenguide.imaging.phantom import PhantomTruth, write_phantom


@pytest.fixture(scope="session")
def phantom_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PhantomTruth]:
    path = tmp_path_factory.mktemp("phantom") / "phantom.dcm"
    truth = write_phantom(path, seed=1)
    return path, truth
