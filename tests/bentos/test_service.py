"""The served bento end to end: scoring, refusals (and serving on afterwards), /model, /metrics, the prediction log."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.sample_bento import SampleModel
from tests.bentos.conftest import Server, assert_still_serving, transaction


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- scoring


def test_one_transaction_gets_a_full_result(served: Server, sample: SampleModel) -> None:
    # given one valid transaction and a request id
    record = transaction()
    # when it is scored
    response = served.post(record, headers={"X-Request-ID": "req-one-1"})
    # then the result carries score, decision at the threshold, versions, reason codes and the request id
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == record["transaction_id"]
    assert 0.0 < body["score"] < 1.0
    assert body["decision"] == ("decline" if body["score"] >= sample.model.threshold else "approve")
    assert body["threshold"] == sample.model.threshold
    assert body["threshold_version"] == sample.manifest["threshold_version"]
    assert body["model_version"] == sample.manifest["model_version"]
    assert body["request_id"] == "req-one-1"
    assert response.headers["x-request-id"] == "req-one-1"
    assert 1 <= len(body["reason_codes"]) <= 4
    contributions = [code["contribution"] for code in body["reason_codes"]]
    assert contributions == sorted(contributions, reverse=True) and min(contributions) > 0
    assert {code["feature"] for code in body["reason_codes"]} <= set(sample.model.feature_names)


def test_reason_codes_are_coefficient_times_distance_from_the_training_mean(
    served: Server, sample: SampleModel
) -> None:
    # given a transaction scored by the service
    body = served.post(transaction(amount=5000.0, channel="online", device_seen_before=False)).json()
    # then each reason code's contribution is weight x (value - training mean) of that design column
    weights = dict(zip(sample.model.feature_names, sample.model.coefficients, strict=True))
    means = sample.manifest["design_means"]
    for code in body["reason_codes"]:
        expected = weights[code["feature"]] * (code["value"] - means[code["feature"]])
        assert code["contribution"] == pytest.approx(expected, rel=1e-12)


def test_a_generated_request_id_is_returned_when_none_is_sent(served: Server) -> None:
    response = served.post(transaction())
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{12}-\d+", generated)
    assert response.json()["request_id"] == generated


def test_a_list_and_the_records_wrapper_score_in_request_order(served: Server) -> None:
    # given three transactions of one card, sent out of time order
    card = "svc-card-list"
    records = [
        transaction(card_id=card, timestamp="2026-03-02T10:00:00", amount=10.0),
        transaction(card_id=card, timestamp="2026-03-02T09:00:00", amount=20.0),
        transaction(card_id="svc-card-list-other", timestamp="2026-03-02T09:30:00"),
    ]
    # when they are scored as a list
    listed = served.post(records)
    # then one result per record comes back, in request order
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()] == [r["transaction_id"] for r in records]
    # and the {"records": [...]} form answers the same shape
    wrapped = served.post({"records": [transaction()]})
    assert wrapped.status_code == 200 and isinstance(wrapped.json(), list) and len(wrapped.json()) == 1


def test_a_card_never_seen_starts_with_empty_aggregates(served: Server, sample: SampleModel) -> None:
    # given a card the service has never seen
    record = transaction(card_id="svc-card-brand-new")
    # when it is scored
    served.post(record, headers={"X-Request-ID": "req-new-card"})
    # then its logged features are the batch job's no-history values
    line = wait_for_log_line(served, "req-new-card")
    features = line["features"]
    no_history = sample.config.spec.aggregates.no_history_hours  # type: ignore[union-attr]
    assert features["count_1h"] == features["count_24h"] == features["count_7d"] == 0.0
    assert features["amount_sum_24h"] == 0.0
    assert features["hours_since_previous"] == no_history
    assert features["amount_to_mean"] == 1.0


def test_the_second_transaction_of_a_card_sees_the_first(served: Server) -> None:
    # given a card with one scored transaction
    card = "svc-card-history"
    served.post(transaction(card_id=card, timestamp="2026-03-03T10:00:00", amount=100.0))
    # when a second one arrives 30 minutes later
    served.post(
        transaction(card_id=card, timestamp="2026-03-03T10:30:00", amount=50.0), headers={"X-Request-ID": "req-2nd"}
    )
    # then the aggregates count the first one
    features = wait_for_log_line(served, "req-2nd")["features"]
    assert features["count_1h"] == 1.0
    assert features["amount_sum_24h"] == 100.0
    assert features["hours_since_previous"] == 0.5
    assert features["amount_to_mean"] == 0.5


def test_a_transaction_from_the_far_future_is_refused_and_leaves_the_card_history_alone(served: Server) -> None:
    # given a card with one scored transaction
    card = "svc-card-future"
    served.post(transaction(card_id=card, timestamp="2026-03-04T10:00:00", amount=100.0))
    # when a transaction dated in the year 9999 comes for it
    refused = served.post(transaction(card_id=card, timestamp="9999-12-31T23:59:59"))
    # then it is refused naming the timestamp and the limit
    assert refused.status_code == 422
    (error,) = refused.json()["errors"]
    assert error["field"] == "timestamp" and "after the scorer's clock" in error["expected"]
    assert error["got"] == "9999-12-31T23:59:59"
    # and the card's next real transaction still sees the first one in its windows
    served.post(
        transaction(card_id=card, timestamp="2026-03-04T10:30:00", amount=50.0), headers={"X-Request-ID": "req-future"}
    )
    assert wait_for_log_line(served, "req-future")["features"]["count_1h"] == 1.0


def test_an_unknown_category_is_scored_through_the_unseen_bucket(served: Server, sample: SampleModel) -> None:
    # given a merchant category training never saw
    response = served.post(transaction(merchant_category="space-tourism"))
    # then it is scored, not refused
    assert response.status_code == 200
    assert 0.0 < response.json()["score"] < 1.0


# -- refusals: each is a 4xx naming what is wrong, and the service keeps serving


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b'{"amount": 1,', "application/json", 400, "malformed JSON"),
        (b"", "application/json", 400, "malformed JSON"),
        (b"\xff\xfe\x00", "application/json", 400, "malformed JSON"),
        (json.dumps(transaction()).encode(), "text/plain", 415, "Content-Type"),
        (b"[]", "application/json", 422, "no records"),
        (b"42", "application/json", 422, "expected a transaction object"),
        (b'{"records": 3}', "application/json", 422, "'records' must be a list"),
    ],
    ids=["truncated-json", "empty-body", "not-utf8", "text-plain", "empty-list", "scalar", "records-not-a-list"],
)
def test_malformed_bodies_are_refused(
    served: Server, content: bytes, content_type: str, status: int, message: str
) -> None:
    response = served.post_raw(content, {"Content-Type": content_type})
    assert response.status_code == status
    assert message in response.json()["message"]
    assert_still_serving(served)


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"amount": "12.5"}, "amount", "a number"),
        ({"amount": -3.0}, "amount", "a number > 0"),
        ({"amount": 0}, "amount", "a number > 0"),
        ({"amount": 2_000_000.0}, "amount", "a number <= 1000000"),
        ({"device_seen_before": "yes"}, "device_seen_before", "true or false"),
        ({"timestamp": "yesterday"}, "timestamp", "ISO 8601"),
        ({"timestamp": 1700000000}, "timestamp", "ISO 8601"),
        ({"channel": "telepathy"}, "channel", "one of: online, pos, atm"),
        ({"card_id": None}, "card_id", "may not be null"),
        ({"merchant_country": 7}, "merchant_country", "a string"),
        ({"is_fraud": 1}, "is_fraud", "no target column"),
        ({"surprise": 1}, "surprise", "no such field"),
    ],
)
def test_a_record_breaking_the_raw_schema_is_refused_naming_the_field(
    served: Server, overrides: dict[str, Any], field: str, expected: str
) -> None:
    response = served.post(transaction(**overrides))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert any(e["field"] == field and expected in e["expected"] and e["record"] == 0 for e in errors), errors
    assert_still_serving(served)


def test_a_missing_field_is_refused(served: Server) -> None:
    record = transaction()
    del record["merchant_category"]
    response = served.post(record)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"record": 0, "field": "merchant_category", "expected": "a value (this field is required)", "got": None}
    ]
    assert_still_serving(served)


@pytest.mark.parametrize("field", ["transaction_id", "channel", "merchant_category", "card_id", "\\udc00"])
def test_text_with_an_unpaired_surrogate_is_refused_and_metrics_still_render(served: Server, field: str) -> None:
    # given a record whose value (or, for the last case, an extra key) is "\ud800": valid JSON, not Unicode text
    text = json.dumps(transaction())
    if field.startswith("\\"):
        text = text[:-1] + f', "{field}": 1}}'
    else:
        text = re.sub(f'"{field}": "[^"]*"', f'"{field}": "\\\\ud800"', text)
        assert "\\ud800" in text
    # when it is posted
    response = served.post_raw(text.encode(), {"Content-Type": "application/json"})
    # then it is a 400 that says why, and the service (its metrics page too) keeps answering
    assert response.status_code == 400
    assert "unpaired UTF-16 surrogate" in response.json()["message"]
    assert served.get("/metrics").status_code == 200
    assert_still_serving(served)


def test_unknown_field_names_share_one_rejection_label(served: Server) -> None:
    # given records that are valid but for an extra field, each with a name of its own
    for number in range(3):
        response = served.post(transaction(**{f"zz_made_up_{number}": 1}))
        assert response.status_code == 422
        # then each response names the client's field
        assert response.json()["errors"][0]["field"] == f"zz_made_up_{number}"
    # and the metrics count them under one label instead of a series per name
    metrics = served.get("/metrics").text
    assert "zz_made_up" not in metrics
    unknown = re.search(r'scoregate_input_rejections_total\{field="\(unknown field\)"[^}]*\} (\S+)', metrics)
    assert unknown is not None and float(unknown.group(1)) >= 3


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused_naming_the_field(served: Server, constant: str) -> None:
    text = json.dumps(transaction()).replace('"amount": 42.5', f'"amount": {constant}')
    response = served.post_raw(text.encode(), {"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "amount"
    assert "finite" in response.json()["errors"][0]["expected"]
    assert_still_serving(served)


def test_one_bad_record_refuses_the_whole_list_with_its_position(served: Server) -> None:
    records = [transaction(), transaction(amount=-1.0), transaction()]
    response = served.post(records)
    assert response.status_code == 422
    assert [(e["record"], e["field"]) for e in response.json()["errors"]] == [(1, "amount")]


def test_duplicate_ids_in_one_request_are_refused(served: Server) -> None:
    first = transaction()
    second = transaction(transaction_id=first["transaction_id"])
    response = served.post([first, second])
    assert response.status_code == 422
    assert {(e["record"], e["field"]) for e in response.json()["errors"]} == {
        (0, "transaction_id"),
        (1, "transaction_id"),
    }


def test_a_body_over_the_limit_is_refused(served: Server) -> None:
    limits = served.get("/model").json()["limits"]
    padding = "x" * (limits["max_body_bytes"] + 10)
    response = served.post_raw(json.dumps({"pad": padding}).encode(), {"Content-Type": "application/json"})
    assert response.status_code == 413
    assert_still_serving(served)


def test_too_many_records_are_refused(served: Server) -> None:
    limits = served.get("/model").json()["limits"]
    records = [transaction() for _ in range(limits["max_records"] + 1)]
    response = served.post(records)
    assert response.status_code == 413
    assert "records" in response.json()["message"]
    assert_still_serving(served)


# -- model, metrics and the prediction log


def test_model_endpoint_describes_the_served_model(served: Server, sample: SampleModel) -> None:
    body = served.get("/model").json()
    assert body["model_version"] == sample.manifest["model_version"]
    assert body["threshold"] == sample.model.threshold
    assert body["feature_spec_hash"] == sample.model.pipeline.spec_hash
    assert body["trained_at"] == sample.model.trained_at.isoformat()
    assert body["online_store"] == "in-process"


def test_health_and_readiness_answer(served: Server) -> None:
    assert served.get("/healthz").status_code == 200
    assert served.get("/readyz").status_code == 200


def test_metrics_carry_what_the_canary_analysis_queries(served: Server, sample: SampleModel) -> None:
    # given some scored rows and one refused row
    version = sample.manifest["model_version"]
    before = served.get("/metrics").text
    served.post([transaction(), transaction()])
    served.post(transaction(amount=-5.0))
    # when /metrics is scraped
    text = served.get("/metrics").text
    # then BentoML's request metrics, the score histogram, decisions and rejections are there, per model version
    assert metric_value(text, "bentoml_service_request_total", endpoint="/score", http_response_code="422") >= 1
    assert metric_value(text, "bentoml_service_request_duration_seconds_bucket", endpoint="/score", le="+Inf") >= 2
    les = re.findall(r'scoregate_score_bucket\{le="([^"]+)",model_version="' + version + '"}', text)
    assert les == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.3", "0.5", "0.7", "0.9", "+Inf"]
    decided = metric_value(text, "scoregate_decisions_total", model_version=version) - metric_value(
        before, "scoregate_decisions_total", model_version=version
    )
    assert decided == 2
    rejected = metric_value(text, "scoregate_input_rejections_total", field="amount") - metric_value(
        before, "scoregate_input_rejections_total", field="amount"
    )
    assert rejected == 1
    assert metric_value(text, "scoregate_feature_value_count", feature="amount", model_version=version) >= 2
    # and the scorer never sets the `role` label itself: scraping adds it
    assert "role=" not in text


def wait_for_log_line(server: Server, request_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    folder = server_log_folder(server)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in folder.glob("predictions-*.jsonl*"):
            for line in path.read_text(encoding="utf-8").splitlines():
                if f'"request_id":"{request_id}"' in line:
                    parsed: dict[str, Any] = json.loads(line)
                    return parsed
        time.sleep(0.2)
    raise AssertionError(f"no prediction-log line for {request_id} in {folder}")


def server_log_folder(server: Server) -> Path:
    return server.log_path.parent / "predictions"


def test_scored_rows_reach_the_prediction_log(served: Server, sample: SampleModel) -> None:
    # given a scored transaction
    record = transaction(amount=77.0)
    result = served.post(record, headers={"X-Request-ID": "req-logged"}).json()
    # then its line names the request, the model, the score and the features before encoding
    line = wait_for_log_line(served, "req-logged")
    assert line["id"] == record["transaction_id"] and line["record"] == 0
    assert line["score"] == result["score"] and line["decision"] == result["decision"]
    assert line["model_version"] == sample.manifest["model_version"]
    assert line["event_time"] == "2026-03-01T12:00:00"
    assert set(line["features"]) == {item.name for item in sample.config.spec.features}
    assert line["features"]["amount"] == 77.0
