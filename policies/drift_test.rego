# Tests for data.scoregate.drift, run by tasks/policy_testing.py (every test_ rule must evaluate to true).
# Rule tests pin their own configuration (fixture_config), so a threshold change in policies/data/drift.json does
# not break them; the tests at the end check the shipped data itself.
package scoregate.drift_test

import data.scoregate.drift

fixture_config := {
	"min_rows": 500,
	"feature_psi_breach": 0.25,
	"min_breached_features": 1,
	"score_shift": {"psi": 0.5, "decline_rate_absolute": 0.02, "decline_rate_relative": 1.0},
	"hysteresis": {"windows": 3, "breaches_required": 2, "max_age_hours": 6},
	"cooldown_hours": 6,
	"retrain_budget": {"max_retrains": 2, "period_hours": 168},
}

# One measured window: `amount` at the given PSI, `channel` steady.
window(version, rows, amount_psi, score_psi, decline_current) := {
	"model_version": version,
	"start": "2026-03-01T10:00:00Z",
	"end": "2026-03-01T11:00:00Z",
	"rows": rows,
	"feature_psi": {"amount": amount_psi, "channel": 0.01},
	"score_psi": score_psi,
	"decline_rate_reference": 0.02,
	"decline_rate_current": decline_current,
}

steady := window("3", 5000, 0.02, 0.01, 0.021)

features_drift := window("3", 5000, 0.9, 0.1, 0.025)

hard_shift := window("3", 5000, 6.5, 2.4, 0.31)

request(current, history, actions) := {
	"schema_version": "1",
	"evaluated_at": "2026-03-01T11:00:05Z",
	"model_name": "scoregate-fraud",
	"model_version": "3",
	"environment": "production",
	"window": current,
	"history": history,
	"actions": actions,
	"rollback_available": true,
}

decide(doc) := d if {
	d := drift.decision with input as doc with data.scoregate.config.drift as fixture_config
}

rules(d) := {r.rule | some r in d.reasons}

message(d, rule) := m if {
	some r in d.reasons
	r.rule == rule
	m := r.message
}

# --- nothing to do -----------------------------------------------------------------------------------------

test_steady_window_needs_nothing if {
	d := decide(request(steady, [steady, steady], []))
	d.action == "none"
	rules(d) == {"drift.none"}
	contains(message(d, "drift.none"), "no feature at or above PSI 0.25")
}

test_window_with_too_few_rows_is_not_evidence if {
	d := decide(request(window("3", 120, 9, 9, 0.9), [hard_shift, hard_shift], []))
	d.action == "none"
	rules(d) == {"window.too_small"}
	message(d, "window.too_small") == "the window has 120 row(s), fewer than the 500 needed to judge drift"
}

# --- feature drift: retrain after N of M windows -----------------------------------------------------------

test_one_window_of_feature_drift_waits if {
	d := decide(request(features_drift, [steady, steady], []))
	d.action == "none"
	rules(d) == {"drift.features", "hysteresis.pending"}
	message(d, "drift.features") == "1 feature(s) at or above PSI 0.25: amount 0.9"
	message(d, "hysteresis.pending") == "1 of the last 3 window(s) of v3 had drifted features; 2 needed before a retrain"
}

test_two_of_three_windows_of_feature_drift_retrain if {
	d := decide(request(features_drift, [steady, features_drift], []))
	d.action == "retrain"
	rules(d) == {"drift.features", "hysteresis.met", "action.retrain"}
	message(d, "hysteresis.met") == "2 of the last 3 window(s) of v3 had drifted features"
}

test_min_breached_features_counts_features_per_window if {
	strict := object.union(fixture_config, {"min_breached_features": 2})
	d := drift.decision with input as request(features_drift, [features_drift], [])
		with data.scoregate.config.drift as strict
	d.action == "none"
	rules(d) == {"drift.none"}
}

test_only_the_last_m_windows_count if {
	# two old breaches, then two steady windows: only one of the last three breaches
	d := decide(request(features_drift, [features_drift, features_drift, steady, steady], []))
	d.action == "none"
	"hysteresis.pending" in rules(d)
}

test_windows_of_another_version_do_not_count if {
	old := window("2", 5000, 0.9, 0.1, 0.025)
	d := decide(request(features_drift, [old, old], []))
	d.action == "none"
	message(d, "hysteresis.pending") == "1 of the last 1 window(s) of v3 had drifted features; 2 needed before a retrain"
}

test_windows_older_than_the_maximum_age_do_not_count if {
	# the same version's breaches three weeks ago (before it was rolled back to, say), then one breach now
	weeks_ago := object.union(features_drift, {"start": "2026-02-08T10:00:00Z", "end": "2026-02-08T11:00:00Z"})
	d := decide(request(features_drift, [weeks_ago, weeks_ago], []))
	d.action == "none"
	message(d, "hysteresis.pending") == "1 of the last 1 window(s) of v3 had drifted features; 2 needed before a retrain"
}

test_a_window_at_the_maximum_age_still_counts if {
	six_hours_before := object.union(features_drift, {"start": "2026-03-01T04:00:00Z", "end": "2026-03-01T05:00:00Z"})
	d := decide(request(features_drift, [six_hours_before], []))
	d.action == "retrain"
}

test_small_windows_in_the_history_do_not_count if {
	small := window("3", 100, 0.9, 0.1, 0.025)
	d := decide(request(features_drift, [small, small], []))
	d.action == "none"
	"hysteresis.pending" in rules(d)
}

# --- hard score shift: rollback after N of M windows -------------------------------------------------------

test_one_window_of_hard_shift_waits if {
	d := decide(request(hard_shift, [steady, steady], []))
	d.action == "none"
	rules(d) == {"drift.features", "drift.score_shift", "hysteresis.pending"}
	message(d, "drift.score_shift") == "score PSI 2.4 (hard at 0.5); decline rate 31% against 2% in training"
	message(d, "hysteresis.pending") == "1 of the last 3 window(s) of v3 shifted hard; 2 needed before a rollback"
}

test_two_of_three_windows_of_hard_shift_roll_back if {
	d := decide(request(hard_shift, [steady, hard_shift], []))
	d.action == "rollback"
	rules(d) == {"drift.features", "drift.score_shift", "hysteresis.met", "action.rollback"}
	message(d, "hysteresis.met") == "2 of the last 3 window(s) of v3 shifted hard"
}

test_a_decline_rate_jump_alone_is_a_hard_shift if {
	# score PSI below the hard line, but declines went from 2% to 9%
	jump := window("3", 5000, 0.05, 0.2, 0.09)
	d := decide(request(jump, [jump], []))
	d.action == "rollback"
	"drift.score_shift" in rules(d)
}

test_a_small_decline_rate_move_is_not_a_hard_shift if {
	# 2% to 3.5% is under the 2-point floor even though it is a large relative change
	move := window("3", 5000, 0.05, 0.2, 0.035)
	d := decide(request(move, [move], []))
	d.action == "none"
	rules(d) == {"drift.none"}
}

test_a_decline_rate_move_small_against_a_high_rate_is_not_a_hard_shift if {
	high := object.union(window("3", 5000, 0.05, 0.2, 0.33), {"decline_rate_reference": 0.30})
	d := decide(request(high, [high], []))
	d.action == "none"
}

test_a_hard_shift_waits_for_its_own_hysteresis_rather_than_retraining if {
	# features drifted in two windows, but the current one shifts hard for the first time
	d := decide(request(hard_shift, [features_drift, features_drift], []))
	d.action == "none"
	"hysteresis.pending" in rules(d)
	not "action.retrain" in rules(d)
}

test_no_earlier_release_means_no_rollback if {
	doc := object.union(request(hard_shift, [hard_shift], []), {"rollback_available": false})
	d := decide(doc)
	d.action == "none"
	"rollback.unavailable" in rules(d)
}

# --- cooldown and retrain budget ---------------------------------------------------------------------------

test_cooldown_blocks_a_rollback if {
	d := decide(request(hard_shift, [hard_shift], [{"at": "2026-03-01T08:00:00Z", "action": "retrain", "model_version": "2"}]))
	d.action == "none"
	"cooldown.active" in rules(d)
	message(d, "cooldown.active") == "the last automatic action was at 2026-03-01T08:00:00Z; none before 2026-03-01T14:00:00Z (cooldown 6 h)"
}

test_cooldown_blocks_a_retrain if {
	d := decide(request(features_drift, [features_drift], [{"at": "2026-03-01T10:30:00Z", "action": "rollback", "model_version": "3"}]))
	d.action == "none"
	"cooldown.active" in rules(d)
}

test_an_action_older_than_the_cooldown_does_not_block if {
	d := decide(request(features_drift, [features_drift], [{"at": "2026-03-01T04:59:00Z", "action": "retrain", "model_version": "2"}]))
	d.action == "retrain"
}

test_the_retrain_budget_stops_a_third_retrain_in_a_week if {
	actions := [
		{"at": "2026-02-24T12:00:00Z", "action": "retrain", "model_version": "1"},
		{"at": "2026-02-27T12:00:00Z", "action": "retrain", "model_version": "2"},
	]
	d := decide(request(features_drift, [features_drift], actions))
	d.action == "none"
	message(d, "retrain_budget.exhausted") == "2 retrain(s) in the last 168 h, the budget is 2: a person has to look"
}

test_retrains_before_the_budget_period_do_not_count if {
	actions := [
		{"at": "2026-02-01T12:00:00Z", "action": "retrain", "model_version": "1"},
		{"at": "2026-02-27T12:00:00Z", "action": "retrain", "model_version": "2"},
	]
	d := decide(request(features_drift, [features_drift], actions))
	d.action == "retrain"
}

test_rollbacks_do_not_spend_the_retrain_budget if {
	actions := [
		{"at": "2026-02-24T12:00:00Z", "action": "rollback", "model_version": "1"},
		{"at": "2026-02-27T12:00:00Z", "action": "rollback", "model_version": "2"},
	]
	d := decide(request(features_drift, [features_drift], actions))
	d.action == "retrain"
}

# --- fail closed: unreadable evidence or configuration never acts ------------------------------------------

test_an_empty_input_is_invalid_and_does_nothing if {
	d := decide({})
	d.action == "none"
	rules(d) == {"input.invalid"}
	contains(message(d, "input.invalid"), "actions, evaluated_at, history, rollback_available, schema_version, window")
}

test_an_unreadable_time_is_invalid if {
	doc := object.union(request(hard_shift, [hard_shift], []), {"evaluated_at": "yesterday"})
	d := decide(doc)
	d.action == "none"
	contains(message(d, "input.invalid"), "evaluated_at")
}

test_a_malformed_action_is_invalid if {
	d := decide(request(hard_shift, [hard_shift], [{"at": "soon", "action": "retrain"}]))
	d.action == "none"
	contains(message(d, "input.invalid"), "actions")
}

test_an_unknown_action_in_the_history_is_invalid if {
	d := decide(request(hard_shift, [hard_shift], [{"at": "2026-02-01T00:00:00Z", "action": "reboot"}]))
	d.action == "none"
	contains(message(d, "input.invalid"), "actions")
}

test_a_malformed_history_window_is_invalid if {
	d := decide(request(hard_shift, [{"model_version": "3", "rows": "many"}], []))
	d.action == "none"
	contains(message(d, "input.invalid"), "history")
}

test_a_non_numeric_psi_is_invalid if {
	broken := object.union(hard_shift, {"feature_psi": {"amount": "high"}})
	d := decide(request(broken, [hard_shift], []))
	d.action == "none"
	contains(message(d, "input.invalid"), "window")
}

test_history_and_actions_must_be_lists if {
	doc := object.union(request(hard_shift, [], []), {"history": {}, "actions": "none", "rollback_available": "yes"})
	d := decide(doc)
	d.action == "none"
	contains(message(d, "input.invalid"), "actions, history, rollback_available")
}

# `with` merges into the loaded data rather than removing keys, so an emptied configuration is written out here;
# tests/tasks/test_drift.py runs the policies with policies/data/drift.json removed altogether.
emptied := {
	"min_rows": null,
	"feature_psi_breach": null,
	"min_breached_features": null,
	"score_shift": {"psi": null, "decline_rate_absolute": null, "decline_rate_relative": null},
	"hysteresis": {"windows": null, "breaches_required": null, "max_age_hours": null},
	"cooldown_hours": null,
	"retrain_budget": {"max_retrains": null, "period_hours": null},
}

test_an_emptied_configuration_does_nothing if {
	d := drift.decision with input as request(hard_shift, [hard_shift], []) with data.scoregate.config.drift as emptied
	d.action == "none"
	rules(d) == {"config.invalid"}
	contains(message(d, "config.invalid"), "cooldown_hours")
}

test_a_non_numeric_threshold_does_nothing if {
	broken := object.union(fixture_config, {"score_shift": {"psi": "high", "decline_rate_absolute": 0.02, "decline_rate_relative": 1}})
	d := drift.decision with input as request(hard_shift, [hard_shift], []) with data.scoregate.config.drift as broken
	d.action == "none"
	message(d, "config.invalid") == "the drift policy's data is missing or not numeric at score_shift.psi; no action"
}

# --- the shipped data --------------------------------------------------------------------------------------

test_the_shipped_configuration_is_complete if {
	count(drift.config_problems) == 0
}

test_the_shipped_hysteresis_can_be_met if {
	h := data.scoregate.config.drift.hysteresis
	h.breaches_required >= 1
	h.breaches_required <= h.windows
}

test_the_shipped_hard_shift_line_is_above_the_feature_line if {
	c := data.scoregate.config.drift
	c.score_shift.psi > c.feature_psi_breach
}

test_the_shipped_policy_rolls_back_a_repeated_hard_shift if {
	d := drift.decision with input as request(hard_shift, [hard_shift], [])
	d.action == "rollback"
}
