"""The pure half of the limiter (no Redis needed): plans, the script
arguments they carry, the script's answer read as a Decision, and the
joining of plans and of decisions."""

from __future__ import annotations

import pytest

from redkit import ConfigError
from redkit.ratelimit import Rate
from redkit.ratelimit._decision import Planner, admitted, combine, decision, merge, refused


def test_a_plan_carries_the_script_arguments_and_the_policy_names() -> None:
    plan = Planner("sliding_window").plan(["5/minute", "100/hour"], 2, "api")
    assert plan.fields == ("api|sw:5:60000", "api|sw:100:3600000")
    assert plan.names == ("api-5-per-60s", "api-100-per-3600s")
    assert plan.hit_args == (
        "1",
        *("api|sw:5:60000", "5", "60000000", "2", "5"),
        *("api|sw:100:3600000", "100", "3600000000", "2", "100"),
    )
    assert plan.peek_args[0] == "0" and plan.peek_args[1:] == plan.args
    assert plan.logs == () and plan.too_costly is None


def test_only_the_sliding_log_keeps_log_keys_and_gcra_fields_name_the_burst() -> None:
    assert Planner("sliding_log").plan("5/minute").logs == ("sl:5:60000",)
    assert Planner("gcra").plan(Rate(5, 60, burst=2)).fields == ("gcra:5:60000:2",)


def test_plans_are_cached_and_bad_arguments_refused() -> None:
    planner = Planner("fixed_window")
    assert planner.plan("5/minute") is planner.plan("5/minute")
    assert planner.plan(["5/minute"]) == planner.plan(["5/minute"])
    for rates, cost, name, fragment in [
        ("5/minute", 0, "", "cost must be"),
        ("5/minute", True, "", "cost must be"),
        (5, 1, "", "rates must be"),
        ("5/minute", 1, "a|b", "must not contain '|'"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            planner.plan(rates, cost, name)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown rate-limit algorithm"):
        Planner("leaky_bucket")


def test_a_cost_above_the_limit_is_refused_without_asking() -> None:
    plan = Planner("sliding_window").plan("5/minute", 6)
    assert plan.too_costly is not None and "exceeds the limit" in plan.too_costly
    answer = refused(plan)
    assert (answer.allowed, answer.remaining, answer.retry_after) == (False, 0, None)
    assert answer.reason == plan.too_costly
    # whatever the script says, it is never admitted
    assert not decision(plan, [1, 5, 0, -1]).allowed


def test_the_script_answer_becomes_a_decision_in_seconds() -> None:
    plan = Planner("sliding_window").plan("5/minute")
    ok = decision(plan, [1, 4, 60_000_000, -1])
    assert (ok.allowed, ok.remaining, ok.reset_after, ok.retry_after) == (True, 4, 60.0, None)
    no = decision(plan, [0, 0, 30_000_000, 1_500_000])
    assert (no.allowed, no.retry_after, no.reason) == (False, 1.5, None)
    assert no.states[0].name == "5-per-60s"


def test_with_several_rates_the_binding_one_speaks() -> None:
    plan = Planner("sliding_window").plan(["5/minute", "100/hour"])
    ok = decision(plan, [1, 4, 60_000_000, -1, 1, 2, 3_600_000_000, -1])
    assert (ok.limit, ok.remaining) == (100, 2)  # the least left
    no = decision(plan, [0, 0, 1_000_000, 1_000_000, 0, 0, 9_000_000, 9_000_000])
    assert (no.limit, no.retry_after) == (100, 9.0)  # the longest wait
    assert len(no.states) == 2


def test_combined_plans_charge_every_item_once() -> None:
    planner = Planner("sliding_window")
    a, b = planner.plan("5/minute", 1, "a"), planner.plan("9/minute", 1, "b")
    both = combine([a, b])
    assert both.fields == a.fields + b.fields
    assert both.args == a.args + b.args
    assert combine([a]) is a
    with pytest.raises(ConfigError, match="same name and rate"):
        combine([a, a])


def test_merged_decisions_admit_only_when_every_key_did() -> None:
    plan = Planner("sliding_window").plan("5/minute")
    ok = decision(plan, [1, 3, 1_000_000, -1])
    tight = decision(plan, [1, 1, 1_000_000, -1])
    no = decision(plan, [0, 0, 2_000_000, 2_000_000])
    assert merge([ok]) is ok
    both = merge([ok, tight])
    assert (both.allowed, both.remaining, len(both.states)) == (True, 1, 2)
    refusal = merge([ok, no])
    assert (refusal.allowed, refusal.retry_after) == (False, 2.0)
    assert not refusal.degraded
    assert merge([admitted(plan, "down"), admitted(plan, "down")]).degraded


def test_an_admission_without_redis_is_degraded_only_with_a_reason() -> None:
    plan = Planner("gcra").plan("5/minute")
    assert not admitted(plan).degraded and admitted(plan).remaining == 5
    opened = admitted(plan, "fail-open")
    assert opened.degraded and opened.reason == "fail-open"
