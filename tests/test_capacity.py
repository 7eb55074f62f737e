"""The capacity planner: its contract, its arithmetic, its monotonicity, its stacks, and its predictions beside
the published measurements it is calibrated on."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import catalog, pins
from infra.capacity.performance import Load, Replica, calibration, operate
from infra.capacity.planner import Goals, _capacity_rps, plan_for_model, published_comparison
from infra.offline.engine import run_plan
from infra.offline.report import summary
from infra.preflight.memory import estimate_memory
from infra.preflight.model import parse_model_config
from scripts import capacity
from tests.conftest import REPO_ROOT

LOAD = Load(prompt_tokens=1000, output_tokens=300, images=1)
M72 = pins.MODEL_REPO
M7 = "Qwen/Qwen2-VL-7B-Instruct-AWQ"


def test_json_contract(capsys):
    assert capacity.main(["--rps", "1", "--ttft-p95", "5", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"options", "chosen"}
    for option in [document["chosen"], *document["options"]]:
        assert {"gpu", "instance_type", "tp", "replicas", "nodes", "usd_per_hour", "usd_per_million_output_tokens",
                "predicted", "meets_goals"} <= set(option)
        assert {"output_tokens_per_s", "ttft_p95_s"} <= set(option["predicted"])
    chosen = document["chosen"]
    assert chosen["meets_goals"] and chosen["usd_per_hour"] == min(
        o["usd_per_hour"] for o in document["options"] if o["meets_goals"])


def test_usd_per_million_tokens_is_usd_per_hour_over_tokens_per_hour():
    options = plan_for_model(M72, load=LOAD, rps=1.5)["options"]
    assert options
    for option in options:
        tokens_per_hour = option["predicted"]["output_tokens_per_s"] * 3600
        if tokens_per_hour:
            assert option["usd_per_million_output_tokens"] == pytest.approx(
                option["usd_per_hour"] / tokens_per_hour * 1e6, rel=1e-3)
        else:
            assert math.isinf(option["usd_per_million_output_tokens"]) and not option["meets_goals"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(low=st.floats(0.05, 6), factor=st.floats(1.0, 4.0), ttft=st.sampled_from([None, 2.0, 5.0]))
def test_more_load_never_picks_a_cheaper_plan(low, factor, ttft):
    goals = Goals(ttft_p95_s=ttft)
    lighter = plan_for_model(M72, load=LOAD, rps=low, goals=goals)["chosen"]
    heavier = plan_for_model(M72, load=LOAD, rps=low * factor, goals=goals)["chosen"]
    if heavier is not None:
        assert lighter is not None and lighter["usd_per_hour"] <= heavier["usd_per_hour"]


def _replica_capacity(model: str, gpu: str, tp: int) -> float:
    dims = parse_model_config(catalog.catalog_model(model).config_at(None))
    memory = estimate_memory(dims, catalog.gpu(gpu), tp, 0.9, 8192, 256)
    limit = max(1, min(256, int(memory.kv_tokens // LOAD.context_tokens)))
    return _capacity_rps(Replica(dims, catalog.gpu(gpu), tp), LOAD, limit)


def _faster(a: catalog.GpuSpec, b: catalog.GpuSpec) -> bool:
    return (a.memory_bandwidth_gbs >= b.memory_bandwidth_gbs and a.fp16_tflops >= b.fp16_tflops
            and a.interconnect_gbs >= b.interconnect_gbs and a.memory_gib >= b.memory_gib)


@pytest.mark.parametrize("model,tp", [(M72, 4), (M7, 1)])
def test_a_faster_gpu_never_predicts_less_throughput_at_equal_tp(model, tp):
    gpus = list(catalog.gpu_catalog().values())
    pairs = [(a, b) for a in gpus for b in gpus if a.name != b.name and _faster(a, b)]
    assert len(pairs) > 10
    for fast, slow in pairs:
        assert _replica_capacity(model, fast.name, tp) >= _replica_capacity(model, slow.name, tp), (fast.name, slow.name)
        load = Load(1000, 300)
        assert (Replica(parse_model_config(catalog.catalog_model(model).config_at(None)), fast, tp)
                .single_stream_tokens_per_s(load) >= Replica(parse_model_config(
                    catalog.catalog_model(model).config_at(None)), slow, tp).single_stream_tokens_per_s(load))


def test_a_replica_at_more_load_waits_longer_and_decodes_slower():
    replica = Replica(parse_model_config(catalog.catalog_model(M72).config_at(None)), catalog.gpu("A100-80GB"), 4)
    states = [operate(replica, LOAD, rps, 64) for rps in (0.1, 0.5, 1.0, 1.5)]
    assert all(s.feasible for s in states)
    assert [s.ttft_p95_s for s in states] == sorted(s.ttft_p95_s for s in states)
    assert [s.step_s for s in states] == sorted(s.step_s for s in states)


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_written_stack_passes_the_plan(tmp_path, capsys, cloud):
    # On gcp the cheapest shapes (g2, L4) are in no zone the catalog has read yet: the planner must not choose
    # a shape whose stack would then be refused for want of zones.
    assert capacity.main(["--rps", "0.5", "--cloud", cloud, "--write-stack", "planned",
                          "--stack-dir", str(tmp_path)]) == 0
    assert "make plan STACK=planned" in capsys.readouterr().out
    result = run_plan("planned", tmp_path)
    assert result.ok, result.error
    line = next(v for v in summary(result) if v.name == "capacity")
    assert "capacity" in line.message and "per million output tokens" in line.message


def test_the_72b_on_p5_has_a_price_and_a_plan():
    options = plan_for_model(M72, load=LOAD, rps=3)["options"]
    p5 = [o for o in options if o["instance_type"] == "p5.48xlarge"]
    assert p5 and all(o["usd_per_hour"] == 55.04 * o["nodes"] for o in p5)
    assert {o["tp"] for o in p5} >= {1, 2, 4, 8}


def test_unmeetable_goals_exit_1(capsys):
    assert capacity.main(["--rps", "1", "--ttft-p95", "0.001"]) == 1
    assert "No shape meets the goals" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    assert capacity.main(["--rps", "0"]) == 2
    assert capacity.main(["--rps", "1", "--model", "Qwen/Nope"]) == 2


def test_predictions_are_within_the_stated_error_band_of_the_published_measurements():
    rows = published_comparison()
    assert len(rows) >= 5
    for row in rows:
        assert abs(row["error"]) <= calibration().error_band, row


def test_docs_show_each_prediction_beside_its_published_measurement():
    text = (REPO_ROOT / "docs" / "capacity.md").read_text()
    for row in published_comparison():
        line = (f"| {row['model']} | {row['gpu']} ({row['instance']}) | {row['tp']} | {row['engine']} | "
                f"{row['tokens_per_s']:g} | {row['predicted_tokens_per_s']:g} | {row['error']:+.0%} |")
        assert line in text, line


def test_docs_show_the_measured_decode_steps_beside_the_model():
    from infra.capacity.planner import measured_comparison
    text = (REPO_ROOT / "docs" / "capacity.md").read_text()
    rows = measured_comparison()
    assert {row["tp"] for row in rows} == {2, 4, 8}
    for row in rows:
        assert abs(row["error"]) <= calibration().error_band, row
        line = (f"| {row['tp']} | {row['m']} | {row['weight_gb']:g} | {row['ms']:g} | {row['predicted_ms']:g} | "
                f"{row['error']:+.0%} |")
        assert line in text, line
