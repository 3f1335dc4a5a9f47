//! Validation: pure functions from a spec to every problem with its field path. A
//! non-empty list becomes `Ready=False reason=InvalidSpec` and the reconciler waits for
//! an edit instead of retrying.

use sensorfleet_model::crd::fleet::validate_fleet;
use sensorfleet_model::crd::pipeline::validate_pipeline;
use sensorfleet_model::crd::rule::validate_rule;
use sensorfleet_model::crd::{Problem, is_dns_label};
use sensorfleet_model::{AlertRuleSpec, PipelineSpec, SensorFleetSpec};

/// Longest condition message; the API server allows 32 KiB, `kubectl get` shows less.
const MAX_MESSAGE: usize = 1024;

/// Every problem of a Pipeline spec.
pub fn pipeline(spec: &PipelineSpec) -> Vec<Problem> {
    validate_pipeline(spec)
}

/// The problems of a SensorFleet spec (the same rules `up -f` applies).
pub fn fleet(spec: &SensorFleetSpec) -> Vec<Problem> {
    let mut problems = pipeline_ref(spec.pipeline.as_deref());
    problems.extend(validate_fleet(spec));
    problems
}

/// The problems of an AlertRule spec (the same rules `up -f` applies).
pub fn rule(spec: &AlertRuleSpec) -> Vec<Problem> {
    let mut problems = pipeline_ref(spec.pipeline.as_deref());
    problems.extend(validate_rule(spec));
    if let Some(fleet) = &spec.fleet
        && !is_dns_label(fleet)
    {
        problems.push(Problem::new(
            "spec.fleet",
            format!("{fleet:?} must be a SensorFleet's metadata.name"),
        ));
    }
    problems
}

fn pipeline_ref(name: Option<&str>) -> Vec<Problem> {
    match name {
        Some(name) if !is_dns_label(name) => vec![Problem::new(
            "spec.pipeline",
            format!("{name:?} must be a Pipeline's metadata.name"),
        )],
        _ => Vec::new(),
    }
}

/// The problems as one condition message: `field: problem; field: problem`, cut to a
/// length `kubectl` shows.
pub fn summary(problems: &[Problem]) -> String {
    let mut text = problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Which Pipeline an object belongs to: the one it names, else the namespace's only one.
/// The error is the condition message.
pub fn resolve_pipeline<'a>(
    named: Option<&'a str>,
    pipelines_in_namespace: &'a [String],
) -> Result<&'a str, String> {
    match (named, pipelines_in_namespace) {
        (Some(name), all) if all.iter().any(|p| p == name) => Ok(name),
        (Some(name), _) => Err(format!(
            "Pipeline {name:?} does not exist in this namespace (yet)"
        )),
        (None, [only]) => Ok(only),
        (None, []) => {
            Err("no Pipeline in this namespace: create one or name it in spec.pipeline".into())
        }
        (None, _) => Err(format!(
            "{} Pipelines in this namespace: name one in spec.pipeline",
            pipelines_in_namespace.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet_spec(yaml: &str) -> SensorFleetSpec {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn fleet_problems_carry_field_paths() {
        let ok = fleet_spec("deviceType: t\ngenerate: {count: 10, idPrefix: d-}\npipeline: main");
        assert!(fleet(&ok).is_empty());
        let bad = fleet_spec("deviceType: t\ngenerate: {count: 0, idPrefix: d-}\npipeline: Main");
        let fields: Vec<_> = fleet(&bad).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["spec.pipeline", "spec.generate.count"]);
    }

    #[test]
    fn rule_problems_carry_field_paths() {
        let bad: AlertRuleSpec =
            serde_yaml::from_str("deviceType: t\nmetric: m\nmin: 5\nmax: 1\nfleet: Bad_Fleet")
                .expect("parses");
        let fields: Vec<_> = rule(&bad).into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["spec.min", "spec.fleet"]);
    }

    #[test]
    fn summary_joins_and_caps() {
        let problems = vec![
            Problem {
                field: "spec.a".into(),
                message: "x".into(),
            },
            Problem {
                field: "spec.b".into(),
                message: "é".repeat(2000),
            },
        ];
        let text = summary(&problems);
        assert!(text.starts_with("spec.a: x; spec.b: éé"));
        assert!(text.len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn pipelines_resolve_by_name_or_when_alone() {
        let one = vec!["main".to_owned()];
        let two = vec!["main".to_owned(), "test".to_owned()];
        assert_eq!(resolve_pipeline(None, &one), Ok("main"));
        assert_eq!(resolve_pipeline(Some("test"), &two), Ok("test"));
        assert!(
            resolve_pipeline(None, &two)
                .unwrap_err()
                .contains("name one")
        );
        assert!(resolve_pipeline(None, &[]).is_err());
        assert!(
            resolve_pipeline(Some("gone"), &one)
                .unwrap_err()
                .contains("does not exist")
        );
    }
}
