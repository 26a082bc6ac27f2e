"""The collector tuning shared by the API and the engine (one process may run both, as the tests do)."""
import gc

from exchange import collector


def test_thresholds_are_restored_when_the_last_overlapping_user_leaves() -> None:
    before = gc.get_threshold()
    first, second = collector.tuned(), collector.tuned()
    first.__enter__()
    second.__enter__()
    assert gc.get_threshold() == collector.THRESHOLDS
    first.__exit__(None, None, None)  # the API stops while an engine still runs: still tuned
    assert gc.get_threshold() == collector.THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
