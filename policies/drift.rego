# METADATA
# title: scoregate drift response
# description: >-
#   Decides what the drift watch does about one measured window of the production champion:
#   data.scoregate.drift.decision = {"action": "none" | "retrain" | "rollback", "reasons": [{"rule", "message"}]}.
#   Input (built by tasks/drift_policy.py): the current window's per-feature PSI, score PSI and decline rates, the
#   earlier windows of the same model and environment (oldest first), the retrains and rollbacks the watch already
#   decided (from the audit log), whether an earlier release exists to roll back to, and the evaluation time.
#   A hard shift of the score distribution or of the decline rate asks for a rollback; drifted features with a
#   steady score ask for a retrain. Either needs N of the last M windows of this model version to agree
#   (hysteresis), no action in the cooldown before, and for a retrain a budget left in the period.
#   Thresholds are data (policies/data/drift.json at data.scoregate.config.drift). Missing or malformed evidence
#   or configuration gives "none" with a reason: this policy never acts on what it cannot read.
package scoregate.drift

# An absent drift.json gives an empty configuration, which config_problems reports (a plain reference would be
# undefined, and `not` over a call on an undefined value does not count as true).
config := object.get(data.scoregate.config, "drift", {})

decision := {
	"action": action,
	"reasons": [r | some r in reasons],
}

default action := "none"

action := "rollback" if {
	rollback_wanted
	not cooldown_active
	input.rollback_available == true
}

action := "retrain" if {
	retrain_wanted
	not cooldown_active
	not budget_exhausted
}

# --- configuration and input --------------------------------------------------------------------------

config_fields := [
	["min_rows"],
	["feature_psi_breach"],
	["min_breached_features"],
	["score_shift", "psi"],
	["score_shift", "decline_rate_absolute"],
	["score_shift", "decline_rate_relative"],
	["hysteresis", "windows"],
	["hysteresis", "breaches_required"],
	["hysteresis", "max_age_hours"],
	["cooldown_hours"],
	["retrain_budget", "max_retrains"],
	["retrain_budget", "period_hours"],
]

config_problems contains concat(".", field) if {
	some field in config_fields
	not is_number(object.get(config, field, null))
}

rfc3339 := `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`

# Times are checked before they are parsed: a parse error would abort the whole decision.
valid_time(value) if {
	is_string(value)
	regex.match(rfc3339, value)
}

valid_window(w) if {
	is_string(w.model_version)
	is_number(w.rows)
	is_object(w.feature_psi)
	every value in w.feature_psi {
		is_number(value)
	}
	is_number(w.score_psi)
	is_number(w.decline_rate_reference)
	is_number(w.decline_rate_current)
}

valid_action(a) if {
	valid_time(a.at)
	a.action in {"retrain", "rollback"}
}

input_problems contains "schema_version" if object.get(input, "schema_version", null) != "1"

input_problems contains "evaluated_at" if not valid_time(object.get(input, "evaluated_at", null))

input_problems contains "window" if not valid_window(object.get(input, "window", {}))

input_problems contains "history" if not is_array(object.get(input, "history", null))

input_problems contains "history" if {
	some w in object.get(input, "history", [])
	not valid_window(w)
}

input_problems contains "actions" if not is_array(object.get(input, "actions", null))

input_problems contains "actions" if {
	some a in object.get(input, "actions", [])
	not valid_action(a)
}

input_problems contains "rollback_available" if not is_boolean(object.get(input, "rollback_available", null))

evidence_ok if {
	count(config_problems) == 0
	count(input_problems) == 0
}

current := input.window

# The current window is evidence only when it is big enough to say anything.
current_evidence if {
	evidence_ok
	current.rows >= config.min_rows
}

# --- one window ------------------------------------------------------------------------------------------

breached_features(w) := {name | some name, value in w.feature_psi; value >= config.feature_psi_breach}

feature_breach(w) if count(breached_features(w)) >= config.min_breached_features

score_shift(w) if w.score_psi >= config.score_shift.psi

score_shift(w) if decline_shift(w)

# A decline-rate change must be large in points AND against the reference rate, so a rate of 0.5% moving to 1%
# (doubled, but half a point) is not a hard shift, and neither is 30% moving to 33% (3 points, a tenth).
decline_shift(w) if {
	change := abs(w.decline_rate_current - w.decline_rate_reference)
	change >= config.score_shift.decline_rate_absolute
	change >= config.score_shift.decline_rate_relative * w.decline_rate_reference
}

# --- hysteresis: N of the last M windows of this model version -------------------------------------------

# Windows of another version do not count: after a rollback or a retrain the new champion starts afresh. Nor do
# windows that ended more than max_age_hours before the current one: a version back in production after weeks,
# or a watch back after an outage, judges on what it sees now, not on breaches from back then.
evidence := array.concat(
	[w |
		some w in input.history
		w.model_version == current.model_version
		w.rows >= config.min_rows
		recent_enough(w)
	],
	[current],
) if current_evidence

recent_enough(w) if {
	time.parse_rfc3339_ns(current.end) - time.parse_rfc3339_ns(w.end) <= config.hysteresis.max_age_hours * 3600000000000
}

recent := array.slice(evidence, count(evidence) - config.hysteresis.windows, count(evidence))

required := config.hysteresis.breaches_required

shift_count := count([w | some w in recent; score_shift(w)])

feature_count := count([w | some w in recent; feature_breach(w)])

rollback_wanted if {
	current_evidence
	score_shift(current)
	shift_count >= required
}

# A window whose score shifts hard waits for the rollback's hysteresis rather than retraining on it.
retrain_wanted if {
	current_evidence
	feature_breach(current)
	not score_shift(current)
	feature_count >= required
}

action_wanted if rollback_wanted

action_wanted if retrain_wanted

# --- cooldown and budget ---------------------------------------------------------------------------------

hour_ns := 3600 * 1000000000

now_ns := time.parse_rfc3339_ns(input.evaluated_at)

action_times := [time.parse_rfc3339_ns(a.at) | some a in input.actions]

cooldown_active if {
	some at in action_times
	now_ns - at < config.cooldown_hours * hour_ns
}

retrains_in_period := count([a |
	some a in input.actions
	a.action == "retrain"
	now_ns - time.parse_rfc3339_ns(a.at) < config.retrain_budget.period_hours * hour_ns
])

budget_exhausted if retrains_in_period >= config.retrain_budget.max_retrains

# --- reasons ---------------------------------------------------------------------------------------------

# Figures for messages: sprintf's %f refuses a JSON number that happens to be whole (8.0 arrives as 8), so numbers
# are rounded here and printed with %v.
num(x) := round(x * 1000) / 1000

pct(x) := round(x * 10000) / 100

reasons contains {"rule": "config.invalid", "message": msg} if {
	count(config_problems) > 0
	msg := sprintf("the drift policy's data is missing or not numeric at %s; no action", [concat(", ", sort(config_problems))])
}

reasons contains {"rule": "input.invalid", "message": msg} if {
	count(input_problems) > 0
	msg := sprintf("the drift evidence is missing or malformed (%s); no action", [concat(", ", sort(input_problems))])
}

reasons contains {"rule": "window.too_small", "message": msg} if {
	evidence_ok
	current.rows < config.min_rows
	msg := sprintf("the window has %d row(s), fewer than the %d needed to judge drift", [current.rows, config.min_rows])
}

reasons contains {"rule": "drift.none", "message": msg} if {
	current_evidence
	not feature_breach(current)
	not score_shift(current)
	msg := sprintf(
		"no feature at or above PSI %v, score PSI %v below %v, decline rate %v%% against %v%% in training",
		[
			config.feature_psi_breach, num(current.score_psi), config.score_shift.psi,
			pct(current.decline_rate_current), pct(current.decline_rate_reference),
		],
	)
}

reasons contains {"rule": "drift.features", "message": msg} if {
	current_evidence
	feature_breach(current)
	names := sort(breached_features(current))
	listed := concat(", ", [sprintf("%s %v", [name, num(current.feature_psi[name])]) | some name in names])
	msg := sprintf("%d feature(s) at or above PSI %v: %s", [count(names), config.feature_psi_breach, listed])
}

reasons contains {"rule": "drift.score_shift", "message": msg} if {
	current_evidence
	score_shift(current)
	msg := sprintf(
		"score PSI %v (hard at %v); decline rate %v%% against %v%% in training",
		[num(current.score_psi), config.score_shift.psi, pct(current.decline_rate_current), pct(current.decline_rate_reference)],
	)
}

reasons contains {"rule": "hysteresis.pending", "message": msg} if {
	current_evidence
	score_shift(current)
	shift_count < required
	msg := sprintf(
		"%d of the last %d window(s) of v%s shifted hard; %d needed before a rollback",
		[shift_count, count(recent), current.model_version, required],
	)
}

reasons contains {"rule": "hysteresis.pending", "message": msg} if {
	current_evidence
	feature_breach(current)
	not score_shift(current)
	feature_count < required
	msg := sprintf(
		"%d of the last %d window(s) of v%s had drifted features; %d needed before a retrain",
		[feature_count, count(recent), current.model_version, required],
	)
}

reasons contains {"rule": "hysteresis.met", "message": msg} if {
	rollback_wanted
	msg := sprintf("%d of the last %d window(s) of v%s shifted hard", [shift_count, count(recent), current.model_version])
}

reasons contains {"rule": "hysteresis.met", "message": msg} if {
	retrain_wanted
	msg := sprintf(
		"%d of the last %d window(s) of v%s had drifted features",
		[feature_count, count(recent), current.model_version],
	)
}

reasons contains {"rule": "cooldown.active", "message": msg} if {
	action_wanted
	cooldown_active
	last := max(action_times)
	msg := sprintf(
		"the last automatic action was at %s; none before %s (cooldown %v h)",
		[time.format(last), time.format(last + config.cooldown_hours * hour_ns), config.cooldown_hours],
	)
}

reasons contains {"rule": "retrain_budget.exhausted", "message": msg} if {
	retrain_wanted
	budget_exhausted
	msg := sprintf(
		"%d retrain(s) in the last %v h, the budget is %d: a person has to look",
		[retrains_in_period, config.retrain_budget.period_hours, config.retrain_budget.max_retrains],
	)
}

reasons contains {"rule": "rollback.unavailable", "message": msg} if {
	rollback_wanted
	input.rollback_available == false
	msg := "no earlier release of this environment to roll back to: a person has to look"
}

reasons contains {"rule": "action.rollback", "message": "roll back to the release before the live one"} if {
	action == "rollback"
}

reasons contains {"rule": "action.retrain", "message": msg} if {
	action == "retrain"
	msg := "retrain with the champion's configuration and promote the new version to staging"
}
