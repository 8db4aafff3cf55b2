# Tests for data.scoregate.promotion, run by tasks/policy_testing.py (every test_ rule must evaluate to true).
# Most tests pin their own configuration (fixture_config) so a threshold change in policies/data/promotion.json
# does not break rule tests; the tests at the end check the shipped data itself.
package scoregate.promotion_test

import data.scoregate.promotion

fixture_config := {
	"lineage_fields": ["data_hash", "feature_spec_hash", "git_commit", "lock_hash", "bento_tag", "bento_digest", "run_id"],
	"environments": {
		"staging": {
			"metric_floors": {"roc_auc": {"min": 0.80, "bound": "ci_low"}},
			"metric_ceilings": {"ece": {"max": 0.05, "bound": "value"}},
			"regression": {
				"roc_auc": {"tolerance": 0.01, "higher_is_better": true},
				"log_loss": {"tolerance": 0.02, "higher_is_better": false},
			},
			"max_fairness_gap": 0.15,
			"max_rejected_share": 0.05,
			"warn_decision_flip_share": 0.05,
			"requires_staging_promotion": false,
			"min_independent_approvals": 0,
			"freeze_windows": [],
		},
		"production": {
			"metric_floors": {"roc_auc": {"min": 0.85, "bound": "ci_low"}},
			"metric_ceilings": {"ece": {"max": 0.03, "bound": "value"}},
			"regression": {"roc_auc": {"tolerance": 0.005, "higher_is_better": true}},
			"max_fairness_gap": 0.10,
			"max_rejected_share": 0.02,
			"warn_decision_flip_share": 0.02,
			"requires_staging_promotion": true,
			"min_independent_approvals": 1,
			"freeze_windows": [{"start": "2026-12-18T00:00:00Z", "end": "2027-01-04T00:00:00Z", "reason": "year-end"}],
		},
	},
}

metric(v) := {"value": v, "ci_low": v - 0.01, "ci_high": v + 0.01}

lineage := {
	"data_hash": "sha256:aa",
	"feature_spec_hash": "sha256:bb",
	"git_commit": "3f786850e387550fdab836ed7e6dc881de23001b",
	"lock_hash": "sha256:cc",
	"bento_tag": "card_fraud_scorer:abc",
	"bento_digest": "sha256:dd",
	"run_id": "run-4",
}

champion_bundle := {
	"schema_version": "1",
	"model_name": "card_fraud",
	"candidate_version": "4",
	"environment": "staging",
	"requested_by": "alice",
	"requested_at": "2026-11-24T07:45:00Z",
	"approvals": [],
	"candidate": {"version": "4", "run_id": "run-4", "metrics": {
		"roc_auc": metric(0.90),
		"ece": metric(0.01),
		"log_loss": metric(0.10),
	}},
	"champion": {"version": "3", "run_id": "run-3", "metrics": {
		"roc_auc": metric(0.89),
		"ece": metric(0.01),
		"log_loss": metric(0.11),
	}},
	"differences": {
		"roc_auc": {"value": 0.01, "ci_low": 0.002, "ci_high": 0.018},
		"log_loss": {"value": -0.01, "ci_low": -0.02, "ci_high": 0.0},
	},
	"decision_flip_share": 0.01,
	"data_validation": {"rows_read": 1000, "rows_rejected": 10, "rejected_share": 0.01},
	"lineage": lineage,
	"fairness": {"segment_column": "channel", "metric": "tpr", "per_segment": {"online": 0.70, "pos": 0.75}, "gap": 0.05},
	"promotion_history": [],
	"snapshot_hash": "sha256:ee",
}

# object.union merges objects recursively, so emptying "differences" needs a patch.
first_bundle := json.patch(champion_bundle, [
	{"op": "replace", "path": "/champion", "value": null},
	{"op": "replace", "path": "/differences", "value": {}},
	{"op": "replace", "path": "/decision_flip_share", "value": null},
])

production_bundle := object.union(champion_bundle, {
	"environment": "production",
	"approvals": [{"by": "bob", "at": "2026-11-24T08:00:00Z"}],
	"promotion_history": [{"environment": "staging", "version": "4", "at": "2026-11-20T14:30:00Z"}],
})

decide(bundle) := result if {
	result := promotion.decision with input as bundle with data.scoregate.config.promotion as fixture_config
}

rules(bundle) := {v.rule | some v in decide(bundle).violations}

allowed(bundle) if {
	decide(bundle).allow == true
	count(decide(bundle).violations) == 0
}

denied_by(bundle, rule) if {
	decide(bundle).allow == false
	rule in rules(bundle)
}

has_warning_starting(bundle, prefix) if {
	some w in decide(bundle).warnings
	startswith(w, prefix)
}

# --- the baseline bundles pass ---------------------------------------------------------------

test_staging_with_champion_allowed if allowed(champion_bundle)

test_production_with_champion_allowed if allowed(production_bundle)

test_decision_has_the_documented_shape if {
	d := decide(object.union(champion_bundle, {"lineage": {"run_id": ""}}))
	is_boolean(d.allow)
	is_array(d.warnings)
	every v in d.violations {
		object.keys(v) == {"rule", "message"}
		is_string(v.message)
	}
}

# --- bundle and configuration --------------------------------------------------------------

test_unsupported_schema_version_denied if denied_by(object.union(champion_bundle, {"schema_version": "2"}), "bundle.schema_version")

test_missing_schema_version_denied if denied_by(object.remove(champion_bundle, ["schema_version"]), "bundle.schema_version")

test_missing_requested_at_denied if denied_by(object.remove(champion_bundle, ["requested_at"]), "bundle.requested_at")

test_unknown_environment_denied if denied_by(object.union(champion_bundle, {"environment": "qa"}), "config.environment")

test_missing_configuration_denied if {
	d := promotion.decision with input as champion_bundle with data.scoregate.config.promotion as {}
	d.allow == false
	some v in d.violations
	v.rule == "config.environment"
}

# --- metric floors and ceilings -------------------------------------------------------------

test_metric_floor_applies_to_interval_lower_bound if {
	# the point estimate clears 0.80 but the interval's lower bound does not
	bundle := object.union(champion_bundle, {"candidate": {"metrics": {"roc_auc": {"value": 0.81, "ci_low": 0.79, "ci_high": 0.83}}}})
	denied_by(bundle, "metric_floor.roc_auc")
}

test_metric_floor_met_exactly_allowed if {
	bundle := object.union(first_bundle, {"candidate": {"metrics": {"roc_auc": {"value": 0.82, "ci_low": 0.80, "ci_high": 0.84}}}})
	allowed(bundle)
}

test_metric_floor_is_per_environment if {
	# 0.84 clears the staging floor (0.80) but not the production floor (0.85)
	m := {"candidate": {"metrics": {"roc_auc": {"value": 0.85, "ci_low": 0.84, "ci_high": 0.86}}}}
	allowed(object.union(first_bundle, m))
	denied_by(object.union(production_bundle, m), "metric_floor.roc_auc")
}

test_missing_floor_metric_denied if {
	bundle := json.remove(champion_bundle, ["candidate/metrics/roc_auc"])
	denied_by(bundle, "metric_floor.roc_auc")
}

test_non_numeric_floor_metric_denied if {
	bundle := object.union(champion_bundle, {"candidate": {"metrics": {"roc_auc": {"ci_low": "high"}}}})
	denied_by(bundle, "metric_floor.roc_auc")
}

test_calibration_ceiling_denied if {
	bundle := object.union(champion_bundle, {"candidate": {"metrics": {"ece": {"value": 0.06, "ci_low": 0.05, "ci_high": 0.07}}}})
	denied_by(bundle, "metric_ceiling.ece")
}

test_calibration_ceiling_met_exactly_allowed if {
	bundle := object.union(champion_bundle, {"candidate": {"metrics": {"ece": {"value": 0.05, "ci_low": 0.04, "ci_high": 0.09}}}})
	allowed(bundle)
}

test_missing_ceiling_metric_denied if {
	denied_by(json.remove(champion_bundle, ["candidate/metrics/ece"]), "metric_ceiling.ece")
}

# --- regression against the champion ------------------------------------------------------

test_regression_denied_when_whole_interval_below_tolerance if {
	bundle := object.union(champion_bundle, {"differences": {"roc_auc": {"value": -0.03, "ci_low": -0.04, "ci_high": -0.02}}})
	denied_by(bundle, "regression.roc_auc")
}

test_regression_at_tolerance_edge_allowed_with_warning if {
	# ci_high equals -tolerance: not entirely below it, so only the point estimate is worse
	bundle := object.union(champion_bundle, {"differences": {"roc_auc": {"value": -0.02, "ci_low": -0.03, "ci_high": -0.01}}})
	allowed(bundle)
	has_warning_starting(bundle, "roc_auc point estimate is worse")
}

test_regression_overlapping_interval_warns_only if {
	bundle := object.union(champion_bundle, {"differences": {"roc_auc": {"value": -0.004, "ci_low": -0.012, "ci_high": 0.004}}})
	allowed(bundle)
	has_warning_starting(bundle, "roc_auc point estimate is worse")
}

test_regression_improvement_has_no_warning if {
	not has_warning_starting(champion_bundle, "roc_auc point estimate")
}

test_regression_lower_is_better_denied if {
	# log loss rose by more than the tolerance across the whole interval
	bundle := object.union(champion_bundle, {"differences": {"log_loss": {"value": 0.04, "ci_low": 0.03, "ci_high": 0.05}}})
	denied_by(bundle, "regression.log_loss")
}

test_regression_lower_is_better_within_tolerance_warns if {
	bundle := object.union(champion_bundle, {"differences": {"log_loss": {"value": 0.01, "ci_low": -0.01, "ci_high": 0.03}}})
	allowed(bundle)
	has_warning_starting(bundle, "log_loss point estimate is worse")
}

test_regression_direction_defaults_to_higher_is_better if {
	config := json.remove(fixture_config, ["environments/staging/regression/roc_auc/higher_is_better"])
	bundle := object.union(champion_bundle, {"differences": {"roc_auc": {"value": -0.03, "ci_low": -0.04, "ci_high": -0.02}}})
	d := promotion.decision with input as bundle with data.scoregate.config.promotion as config
	d.allow == false
	some v in d.violations
	v.rule == "regression.roc_auc"
}

test_regression_missing_difference_denied if {
	bundle := json.remove(champion_bundle, ["differences/roc_auc"])
	denied_by(bundle, "regression.roc_auc")
}

test_first_promotion_gated_on_floors_only_with_warning if {
	allowed(first_bundle)
	has_warning_starting(first_bundle, "first promotion")
	count({r | some r in rules(first_bundle); startswith(r, "regression.")}) == 0
}

test_first_promotion_still_needs_floors if {
	bundle := object.union(first_bundle, {"candidate": {"metrics": {"roc_auc": metric(0.70)}}})
	denied_by(bundle, "metric_floor.roc_auc")
}

test_missing_champion_key_is_not_a_first_promotion if {
	# a malformed bundle without the champion key must not skip the regression checks
	bundle := object.remove(first_bundle, ["champion"])
	denied_by(bundle, "regression.roc_auc")
}

test_decision_flip_share_warns if {
	bundle := object.union(champion_bundle, {"decision_flip_share": 0.2})
	allowed(bundle)
	some w in decide(bundle).warnings
	contains(w, "decisions flip")
}

# --- fairness ---------------------------------------------------------------------------

test_fairness_gap_denied if {
	bundle := object.union(champion_bundle, {"fairness": {"per_segment": {"online": 0.5, "pos": 0.8}, "gap": 0.3}})
	denied_by(bundle, "fairness.gap")
}

test_fairness_gap_recomputed_from_segments if {
	# the reported gap understates the spread between segments
	bundle := object.union(champion_bundle, {"fairness": {"per_segment": {"online": 0.5, "pos": 0.8}, "gap": 0.01}})
	denied_by(bundle, "fairness.gap")
}

test_fairness_gap_at_maximum_allowed if {
	bundle := object.union(champion_bundle, {"fairness": {"per_segment": {"online": 0.5, "pos": 0.625}, "gap": 0.125}})
	allowed(bundle)
}

test_fairness_without_segments_denied if {
	bundle := json.patch(champion_bundle, [{"op": "replace", "path": "/fairness/per_segment", "value": {}}])
	denied_by(bundle, "fairness.missing")
}

test_fairness_gap_not_a_number_denied if {
	denied_by(object.union(champion_bundle, {"fairness": {"gap": "small"}}), "fairness.missing")
}

test_fairness_gap_missing_denied if {
	denied_by(json.remove(champion_bundle, ["fairness/gap"]), "fairness.missing")
}

# --- input data quality -----------------------------------------------------------------

test_rejected_share_denied if {
	bundle := object.union(champion_bundle, {"data_validation": {"rows_rejected": 100, "rejected_share": 0.1}})
	denied_by(bundle, "data_validation.rejected_share")
}

test_rejected_share_recomputed_from_counts if {
	bundle := object.union(champion_bundle, {"data_validation": {"rows_rejected": 100, "rejected_share": 0.0}})
	denied_by(bundle, "data_validation.rejected_share")
}

test_rejected_share_at_maximum_allowed if {
	bundle := object.union(champion_bundle, {"data_validation": {"rows_rejected": 50, "rejected_share": 0.05}})
	allowed(bundle)
}

test_rejected_share_missing_denied if {
	denied_by(json.remove(champion_bundle, ["data_validation/rejected_share"]), "data_validation.rejected_share")
}

test_no_rows_read_denied if {
	bundle := object.union(champion_bundle, {"data_validation": {"rows_read": 0, "rows_rejected": 0, "rejected_share": 0}})
	denied_by(bundle, "data_validation.no_rows")
}

# --- lineage ---------------------------------------------------------------------------

test_every_lineage_field_required if {
	every field in fixture_config.lineage_fields {
		denied_by(object.union(champion_bundle, {"lineage": {field: ""}}), sprintf("lineage.%s", [field]))
		denied_by(object.union(champion_bundle, {"lineage": {field: " Unknown "}}), sprintf("lineage.%s", [field]))
		denied_by(json.remove(champion_bundle, [sprintf("lineage/%s", [field])]), sprintf("lineage.%s", [field]))
	}
}

test_missing_bento_digest_names_its_rule if {
	rules(object.union(champion_bundle, {"lineage": {"bento_digest": "unknown"}})) == {"lineage.bento_digest"}
}

# --- production prerequisites -----------------------------------------------------------

test_production_requires_staging_promotion if {
	denied_by(object.union(production_bundle, {"promotion_history": []}), "production.requires_staging")
}

test_production_staging_of_another_version_denied if {
	history := [{"environment": "staging", "version": "3", "at": "2026-11-01T00:00:00Z"}]
	denied_by(object.union(production_bundle, {"promotion_history": history}), "production.requires_staging")
}

test_production_staging_after_request_denied if {
	history := [{"environment": "staging", "version": "4", "at": "2026-11-25T00:00:00Z"}]
	denied_by(object.union(production_bundle, {"promotion_history": history}), "production.requires_staging")
}

test_staging_does_not_require_staging if {
	not "staging.requires_staging" in rules(champion_bundle)
}

test_production_four_eyes_without_approvals_denied if {
	denied_by(object.union(production_bundle, {"approvals": []}), "production.four_eyes")
}

test_production_self_approval_denied if {
	# the requester approving their own request, in any spelling, does not count
	approvals := [{"by": " ALICE", "at": "2026-11-24T08:00:00Z"}]
	denied_by(object.union(production_bundle, {"approvals": approvals}), "production.four_eyes")
}

test_production_independent_approval_allowed if {
	approvals := [{"by": "alice", "at": "2026-11-24T08:00:00Z"}, {"by": "carol", "at": "2026-11-24T08:05:00Z"}]
	allowed(object.union(production_bundle, {"approvals": approvals}))
}

# --- change freeze ----------------------------------------------------------------------

test_freeze_window_denied_inside if {
	denied_by(object.union(production_bundle, {"requested_at": "2026-12-24T12:00:00Z"}), "freeze_window")
}

test_freeze_window_start_is_inclusive if {
	denied_by(object.union(production_bundle, {"requested_at": "2026-12-18T00:00:00Z"}), "freeze_window")
}

test_freeze_window_end_is_exclusive if {
	allowed(object.union(production_bundle, {"requested_at": "2027-01-04T00:00:00Z"}))
}

test_freeze_window_honours_offsets if {
	# 2026-12-17T23:30:00-01:00 is 2026-12-18T00:30:00Z, inside the window
	denied_by(object.union(production_bundle, {"requested_at": "2026-12-17T23:30:00-01:00"}), "freeze_window")
}

test_freeze_window_is_per_environment if {
	allowed(object.union(champion_bundle, {"requested_at": "2026-12-24T12:00:00Z"}))
}

# --- messages never swallow a violation ----------------------------------------------------

test_violation_survives_missing_message_fields if {
	# an undefined message argument would drop the violation silently; each message has a fallback
	no_metric_name := json.remove(champion_bundle, ["fairness/metric", "fairness/segment_column"])
	denied_by(object.union(no_metric_name, {"fairness": {"per_segment": {"a": 0.1, "b": 0.9}}}), "fairness.gap")
	no_champion_version := json.remove(champion_bundle, ["champion/version"])
	regressed := {"differences": {"roc_auc": {"value": -0.03, "ci_low": -0.04, "ci_high": -0.02}}}
	denied_by(object.union(no_champion_version, regressed), "regression.roc_auc")
	no_requester := json.remove(production_bundle, ["requested_by"])
	denied_by(object.union(no_requester, {"approvals": []}), "production.four_eyes")
}

test_freeze_window_without_reason_still_denies if {
	config := json.patch(fixture_config, [{
		"op": "replace", "path": "/environments/production/freeze_windows",
		"value": [{"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}],
	}])
	d := promotion.decision with input as production_bundle with data.scoregate.config.promotion as config
	d.allow == false
	some v in d.violations
	v.rule == "freeze_window"
	contains(v.message, "no reason given")
}

# --- the shipped configuration (policies/data/promotion.json) ------------------------------

shipped := data.scoregate.config.promotion

test_shipped_configuration_covers_both_environments if {
	object.keys(shipped.environments) == {"staging", "production"}
}

test_shipped_production_is_at_least_as_strict_as_staging if {
	every name, floor in shipped.environments.staging.metric_floors {
		shipped.environments.production.metric_floors[name].min >= floor.min
	}
	every name, ceiling in shipped.environments.staging.metric_ceilings {
		shipped.environments.production.metric_ceilings[name].max <= ceiling.max
	}
	shipped.environments.production.max_fairness_gap <= shipped.environments.staging.max_fairness_gap
	shipped.environments.production.requires_staging_promotion == true
	shipped.environments.production.min_independent_approvals >= 1
}

required_settings := {
	"metric_floors", "metric_ceilings", "regression", "max_fairness_gap", "max_rejected_share",
	"warn_decision_flip_share", "requires_staging_promotion", "min_independent_approvals", "freeze_windows",
}

test_shipped_settings_are_complete if {
	# a missing setting would silently skip its check, so every environment must spell out every one
	every env in shipped.environments {
		object.keys(env) == required_settings
		every floor in env.metric_floors {
			floor.bound in {"value", "ci_low", "ci_high"}
			is_number(floor.min)
		}
		every ceiling in env.metric_ceilings {
			ceiling.bound in {"value", "ci_low", "ci_high"}
			is_number(ceiling.max)
		}
		every rule in env.regression {
			is_boolean(rule.higher_is_better)
			rule.tolerance >= 0
		}
	}
}

test_shipped_lineage_includes_bento_digest if {
	"bento_digest" in shipped.lineage_fields
}

test_shipped_freeze_windows_are_well_formed if {
	every env in shipped.environments {
		every window in env.freeze_windows {
			time.parse_rfc3339_ns(window.start) < time.parse_rfc3339_ns(window.end)
		}
	}
}
