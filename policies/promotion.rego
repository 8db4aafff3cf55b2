# METADATA
# title: scoregate promotion gate
# description: >-
#   Decides whether a candidate model version may be promoted to an environment.
#   Input is a DecisionBundle (policies/decision_bundle.schema.json); the answer is
#   data.scoregate.promotion.decision = {"allow": bool, "violations": [{"rule", "message"}], "warnings": [string]}.
#   Thresholds, lineage fields and freeze windows are data (policies/data/promotion.json, loaded at
#   data.scoregate.config.promotion), so changing a threshold is a data diff that a replay can check.
#   Every check fails closed: missing or malformed evidence is a violation, never a silent pass.
package scoregate.promotion

config := data.scoregate.config.promotion

# The settings for the requested environment; undefined (and denied below) for an unknown environment.
settings := config.environments[input.environment]

first_promotion if input.champion == null

# Message arguments must never be undefined: an undefined argument would silently drop the violation.
champion_version := object.get(input, ["champion", "version"], "?")

requested_ns := time.parse_rfc3339_ns(input.requested_at)

decision := {
	"allow": count(violations) == 0,
	"violations": [v | some v in violations],
	"warnings": [w | some w in warnings],
}

# --- the bundle and the configuration ---------------------------------------------------------------

violations contains {"rule": "bundle.schema_version", "message": msg} if {
	object.get(input, "schema_version", null) != "1"
	msg := sprintf("bundle schema_version %v is not supported (expected \"1\")", [object.get(input, "schema_version", null)])
}

# Missing evidence is always read through object.get with a default: `not is_string(input.x)` is NOT true
# when input.x is undefined (the undefined reference makes the whole negated call undefined).
violations contains {"rule": "bundle.requested_at", "message": "requested_at is missing or not an RFC 3339 string"} if {
	not is_string(object.get(input, "requested_at", null))
}

violations contains {"rule": "config.environment", "message": msg} if {
	not config.environments[input.environment]
	msg := sprintf("no promotion settings for environment %v", [object.get(input, "environment", null)])
}

# --- metric floors and ceilings (the candidate on its own) --------------------------------------------
# Written without user-defined functions: in this engine a function call costs ~8 us, and replay evaluates
# thousands of bundles; partial rules are evaluated once per decision and cached.

candidate_metrics := object.get(input, ["candidate", "metrics"], {})

violations contains {"rule": sprintf("metric_floor.%s", [name]), "message": msg} if {
	some name, floor in settings.metric_floors
	not is_number(object.get(candidate_metrics, [name, floor.bound], null))
	msg := sprintf("candidate has no %s %s; the %s floor cannot be checked", [name, floor.bound, input.environment])
}

violations contains {"rule": sprintf("metric_floor.%s", [name]), "message": msg} if {
	some name, floor in settings.metric_floors
	observed := object.get(candidate_metrics, [name, floor.bound], null)
	is_number(observed)
	observed < floor.min
	msg := sprintf(
		"candidate %s %s %.4f is below the %s floor %.4f",
		[name, floor.bound, observed, input.environment, floor.min],
	)
}

violations contains {"rule": sprintf("metric_ceiling.%s", [name]), "message": msg} if {
	some name, ceiling in settings.metric_ceilings
	not is_number(object.get(candidate_metrics, [name, ceiling.bound], null))
	msg := sprintf("candidate has no %s %s; the %s ceiling cannot be checked", [name, ceiling.bound, input.environment])
}

violations contains {"rule": sprintf("metric_ceiling.%s", [name]), "message": msg} if {
	some name, ceiling in settings.metric_ceilings
	observed := object.get(candidate_metrics, [name, ceiling.bound], null)
	is_number(observed)
	observed > ceiling.max
	msg := sprintf(
		"candidate %s %s %.4f is above the %s ceiling %.4f",
		[name, ceiling.bound, observed, input.environment, ceiling.max],
	)
}

# --- regression against the champion -----------------------------------------------------------------

warnings contains msg if {
	first_promotion
	msg := "first promotion: no champion in this environment, so the candidate is gated on metric floors and ceilings only (no regression check)"
}

# Differences whose point estimate and both interval ends are numbers.
complete_differences[name] := d if {
	some name, d in object.get(input, "differences", {})
	is_number(d.value)
	is_number(d.ci_low)
	is_number(d.ci_high)
}

# The configured regression checks; none on a first promotion, which is gated on floors and ceilings only.
regression_checks[name] := rule if {
	not first_promotion
	some name, rule in settings.regression
}

violations contains {"rule": sprintf("regression.%s", [name]), "message": msg} if {
	some name, _ in regression_checks
	not complete_differences[name]
	msg := sprintf("no candidate-minus-champion difference for %s; regression cannot be ruled out", [name])
}

# Deny only when the whole interval is worse by more than the tolerance: noise alone cannot explain it.
# Higher-is-better metrics (the default): the interval's top end is below -tolerance.
significantly_worse contains name if {
	some name, rule in regression_checks
	object.get(rule, "higher_is_better", true) == true
	complete_differences[name].ci_high < 0 - rule.tolerance
}

# Lower-is-better metrics: the interval's bottom end is above +tolerance.
significantly_worse contains name if {
	some name, rule in regression_checks
	object.get(rule, "higher_is_better", true) != true
	complete_differences[name].ci_low > rule.tolerance
}

point_worse contains name if {
	some name, rule in regression_checks
	object.get(rule, "higher_is_better", true) == true
	complete_differences[name].value < 0
}

point_worse contains name if {
	some name, rule in regression_checks
	object.get(rule, "higher_is_better", true) != true
	complete_differences[name].value > 0
}

violations contains {"rule": sprintf("regression.%s", [name]), "message": msg} if {
	some name in significantly_worse
	d := complete_differences[name]
	msg := sprintf(
		"%s is significantly worse than champion %v: difference %.4f, 95%% interval [%.4f, %.4f], tolerance %.4f",
		[name, champion_version, d.value, d.ci_low, d.ci_high, regression_checks[name].tolerance],
	)
}

warnings contains msg if {
	some name in point_worse - significantly_worse
	d := complete_differences[name]
	msg := sprintf(
		"%s point estimate is worse than champion %v (difference %.4f, 95%% interval [%.4f, %.4f]) but not significantly",
		[name, champion_version, d.value, d.ci_low, d.ci_high],
	)
}

warnings contains msg if {
	is_number(input.decision_flip_share)
	input.decision_flip_share > settings.warn_decision_flip_share
	msg := sprintf(
		"%.2f%% of snapshot decisions flip between champion and candidate (warning above %.2f%%)",
		[input.decision_flip_share * 100, settings.warn_decision_flip_share * 100],
	)
}

# --- fairness -------------------------------------------------------------------------------------

segment_values := [v | some v in object.get(input, ["fairness", "per_segment"], {})]

reported_gap := object.get(input, ["fairness", "gap"], null)

fairness_checkable if {
	count(segment_values) > 0
	is_number(reported_gap)
}

violations contains {"rule": "fairness.missing", "message": msg} if {
	not fairness_checkable
	msg := "no per-segment fairness figures or no numeric gap; the fairness gap cannot be checked"
}

# The policy recomputes the spread rather than trusting the reported gap alone.
violations contains {"rule": "fairness.gap", "message": msg} if {
	fairness_checkable
	gap := max([reported_gap, max(segment_values) - min(segment_values)])
	gap > settings.max_fairness_gap
	msg := sprintf(
		"%s gap across %s segments is %.4f, above the %s maximum %.4f",
		[
			object.get(input, ["fairness", "metric"], "metric"),
			object.get(input, ["fairness", "segment_column"], "segment"),
			gap, input.environment, settings.max_fairness_gap,
		],
	)
}

# --- input data quality ----------------------------------------------------------------------------

rows_read := object.get(input, ["data_validation", "rows_read"], null)

reported_rejected_share := object.get(input, ["data_validation", "rejected_share"], null)

rows_were_read if {
	is_number(rows_read)
	rows_read > 0
}

# The policy recomputes the share from the counts rather than trusting the reported share alone.
rejected_share := max([reported_rejected_share, object.get(input, ["data_validation", "rows_rejected"], 0) / rows_read]) if {
	rows_were_read
	is_number(reported_rejected_share)
}

violations contains {"rule": "data_validation.no_rows", "message": "the evaluation snapshot read no rows"} if {
	not rows_were_read
}

violations contains {"rule": "data_validation.rejected_share", "message": msg} if {
	not is_number(reported_rejected_share)
	msg := "the rejected-rows share is missing or not a number"
}

violations contains {"rule": "data_validation.rejected_share", "message": msg} if {
	rejected_share > settings.max_rejected_share
	msg := sprintf(
		"%.2f%% of input rows were rejected by the raw schema, above the %s maximum %.2f%%",
		[rejected_share * 100, input.environment, settings.max_rejected_share * 100],
	)
}

# --- lineage -------------------------------------------------------------------------------------
# Computed with set operations (evaluated natively) rather than one rule body per field.

present_lineage contains field if {
	some field, value in object.get(input, "lineage", {})
	is_string(value)
	not lower(trim_space(value)) in {"", "unknown"}
}

violations contains {"rule": sprintf("lineage.%s", [field]), "message": msg} if {
	some field in {f | some f in config.lineage_fields} - present_lineage
	msg := sprintf("lineage field %s is missing, empty or \"unknown\"", [field])
}

# --- production prerequisites --------------------------------------------------------------------

staged_before if {
	some prior in input.promotion_history
	prior.environment == "staging"
	prior.version == input.candidate_version
	time.parse_rfc3339_ns(prior.at) <= requested_ns
}

violations contains {"rule": sprintf("%s.requires_staging", [input.environment]), "message": msg} if {
	settings.requires_staging_promotion
	not staged_before
	msg := sprintf(
		"version %v of %v was never promoted to staging before this request",
		[object.get(input, "candidate_version", "?"), object.get(input, "model_name", "?")],
	)
}

requester := lower(trim_space(input.requested_by))

# Distinct approvers other than the requester; names compare case- and whitespace-insensitively.
independent_approvers contains name if {
	some approval in input.approvals
	name := lower(trim_space(approval.by))
	name != ""
	name != requester
}

violations contains {"rule": sprintf("%s.four_eyes", [input.environment]), "message": msg} if {
	count(independent_approvers) < settings.min_independent_approvals
	msg := sprintf(
		"%d approval(s) by someone other than the requester %v; %s needs %d",
		[
			count(independent_approvers), object.get(input, "requested_by", "?"),
			input.environment, settings.min_independent_approvals,
		],
	)
}

# --- change freeze -------------------------------------------------------------------------------

violations contains {"rule": "freeze_window", "message": msg} if {
	some window in settings.freeze_windows
	time.parse_rfc3339_ns(window.start) <= requested_ns
	requested_ns < time.parse_rfc3339_ns(window.end)
	msg := sprintf(
		"requested at %v, inside the %s change freeze %v to %v (%v)",
		[input.requested_at, input.environment, window.start, window.end, object.get(window, "reason", "no reason given")],
	)
}
