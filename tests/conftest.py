"""Shared pytest fixtures for the black-box tests: a throwaway PostgreSQL cluster and a
data directory per test session, and the cluster migrated by `layersctl migrate`."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lytest  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster():
    """A fresh PostgreSQL 15 cluster (lytest.PgCluster), stopped and removed at the end."""
    with lytest.PgCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def data_dir():
    """An empty LAYERS_DATA_DIR, removed at the end."""
    path = tempfile.mkdtemp(prefix="lydata-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated(pg_cluster, data_dir):
    """pg_cluster after one `layersctl migrate` over its admin URL; the CompletedProcess."""
    return lytest.layersctl(["migrate"], pg_cluster.admin_url, data_dir)
