"""How GET /ready reads this node's lease: held, lapsed (with the reason), or none at all."""

from service.api.health import _lease_state


def test_a_node_without_a_lease_is_not_held_back_by_one() -> None:
    assert _lease_state(None) == ("none", None)


def test_a_lease_with_time_left_is_held() -> None:
    assert _lease_state(4.5) == ("held", None)


def test_a_lapsed_lease_says_how_long_ago_and_what_follows() -> None:
    state, reason = _lease_state(-3.2)

    assert state == "lapsed"
    assert reason == (
        "this node's lease lapsed 3 s ago: its programs are ended, and another node may run its jobs again"
    )
