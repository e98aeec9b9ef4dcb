//! `template.yaml` against the code: the numbers that must agree between the SAM template and
//! the Rust side are read from the template and checked here, so neither can drift alone.

use relay_shared::backoff::{DEFAULT_SCHEDULE, RetrySchedule};
use relay_shared::config;
use relay_shared::ingest::MAX_BODY_BYTES;
use relay_shared::telemetry::metric;
use relay_tests::repo_root;
use serde_norway::Value;
use std::collections::BTreeSet;

fn template_text() -> String {
    std::fs::read_to_string(repo_root().join("template.yaml")).expect("read template.yaml")
}

fn template() -> Value {
    serde_norway::from_str(&template_text()).expect("template.yaml is YAML")
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| {
        let v = match v {
            Value::Tagged(tagged) => &tagged.value,
            other => other,
        };
        v.get(*key)
            .unwrap_or_else(|| panic!("template.yaml has no {}", path.join(".")))
    })
}

fn number(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().expect("a whole number"),
        Value::String(s) => s.parse().expect("a number"),
        other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn queue_visibility_is_at_least_six_times_the_dispatcher_timeout() {
    let t = template();
    let visibility = number(at(
        &t,
        &["Resources", "EventQueue", "Properties", "VisibilityTimeout"],
    ));
    let timeout = number(at(
        &t,
        &["Resources", "DispatcherFunction", "Properties", "Timeout"],
    ));
    assert!(
        visibility >= 6 * timeout,
        "VisibilityTimeout {visibility} s < 6 x dispatcher Timeout {timeout} s: a lease shorter than the work means duplicates"
    );
}

#[test]
fn the_dispatcher_timeout_covers_a_serial_group_of_ten() {
    let t = template();
    let timeout_s = number(at(
        &t,
        &["Resources", "DispatcherFunction", "Properties", "Timeout"],
    ));
    let max_delivery_ms = number(at(&t, &["Parameters", "DeliveryTimeoutMs", "MaxValue"]));
    assert_eq!(
        max_delivery_ms,
        config::MAX_DELIVERY_TIMEOUT_MS,
        "template and config agree"
    );
    assert!(
        10 * max_delivery_ms < timeout_s * 1000,
        "10 serial attempts fit in the function timeout"
    );
}

#[test]
fn max_receive_count_is_derived_from_the_one_retry_schedule() {
    let t = template();
    let default = at(&t, &["Parameters", "RetrySchedule", "Default"])
        .as_str()
        .unwrap();
    assert_eq!(
        default, DEFAULT_SCHEDULE,
        "the template's default schedule is the code's"
    );
    let count = at(
        &t,
        &[
            "Resources",
            "EventQueue",
            "Properties",
            "RedrivePolicy",
            "maxReceiveCount",
            "Fn::Length",
            "Fn::Split",
        ],
    );
    let Value::Sequence(split) = count else {
        panic!("Fn::Split takes a list")
    };
    assert_eq!(split[0].as_str(), Some(","));
    let Value::Tagged(sub) = &split[1] else {
        panic!("expected !Sub")
    };
    assert_eq!(sub.tag.to_string(), "!Sub");
    assert_eq!(
        sub.value.as_str(),
        Some("${RetrySchedule},last"),
        "n waits + a sentinel = n + 1 entries = the attempts the dispatcher allows"
    );
    let schedule = RetrySchedule::parse(default).unwrap();
    assert_eq!(
        schedule.max_attempts() as usize,
        format!("{default},last").split(',').count()
    );
    let env = at(
        &t,
        &[
            "Resources",
            "DispatcherFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    let Value::Tagged(reference) = at(env, &[config::RETRY_SCHEDULE]) else {
        panic!("expected !Ref")
    };
    assert_eq!(
        reference.value.as_str(),
        Some("RetrySchedule"),
        "the dispatcher reads the same parameter"
    );
}

#[test]
fn both_queues_take_exactly_what_ingest_accepts() {
    let t = template();
    for queue in ["EventQueue", "DeadLetterQueue"] {
        let size = number(at(
            &t,
            &["Resources", queue, "Properties", "MaximumMessageSize"],
        ));
        assert_eq!(size as usize, MAX_BODY_BYTES, "{queue}");
        assert_eq!(
            at(&t, &["Resources", queue, "Properties", "FifoQueue"]),
            &Value::Bool(true)
        );
    }
}

#[test]
fn the_functions_get_the_spec_variables() {
    let t = template();
    let names = |function: &str| -> BTreeSet<String> {
        let vars = at(
            &t,
            &[
                "Resources",
                function,
                "Properties",
                "Environment",
                "Variables",
            ],
        );
        vars.as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    let ingest: BTreeSet<String> = [
        config::INGEST_SECRETS,
        config::QUEUE_URL,
        config::METRICS_NAMESPACE,
    ]
    .map(String::from)
    .into();
    assert_eq!(names("IngestFunction"), ingest);
    let dispatcher: BTreeSet<String> = [
        config::QUEUE_URL,
        config::WEBHOOK_URL,
        config::WEBHOOK_SECRETS,
        config::DELIVERY_TIMEOUT_MS,
        config::RETRY_SCHEDULE,
        config::METRICS_NAMESPACE,
    ]
    .map(String::from)
    .into();
    assert_eq!(names("DispatcherFunction"), dispatcher);
}

/// Our namespace as the template writes it.
const NAMESPACE: &str = "ChatRelay/${AWS::StackName}";

#[test]
fn alarms_and_dashboard_use_the_metric_names_the_code_emits() {
    let t = template();
    let mut used = BTreeSet::new();
    // Alarms: MetricName next to a `!Sub ChatRelay/…` namespace, at any depth (metric math too).
    fn alarm_metrics(value: &Value, used: &mut BTreeSet<String>) {
        match value {
            Value::Mapping(map) => {
                let ours = map.get("Namespace").is_some_and(|ns| match ns {
                    Value::Tagged(tagged) => tagged.value.as_str() == Some(NAMESPACE),
                    _ => false,
                });
                if ours {
                    used.insert(map["MetricName"].as_str().unwrap().to_owned());
                }
                map.values().for_each(|v| alarm_metrics(v, used));
            }
            Value::Sequence(items) => items.iter().for_each(|v| alarm_metrics(v, used)),
            Value::Tagged(tagged) => alarm_metrics(&tagged.value, used),
            _ => {}
        }
    }
    alarm_metrics(&t["Resources"], &mut used);
    // Dashboard: its body is JSON inside !Sub; "." repeats the previous row's namespace.
    let Value::Tagged(body) = at(
        &t,
        &["Resources", "Dashboard", "Properties", "DashboardBody"],
    ) else {
        panic!("DashboardBody is a !Sub")
    };
    let body = numbers_for_bare_substitutions(body.value.as_str().unwrap());
    let dashboard: serde_json::Value = serde_json::from_str(&body).expect("dashboard JSON");
    for widget in dashboard["widgets"].as_array().unwrap() {
        let mut namespace = String::new();
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let row = row.as_array().unwrap();
            if row.first().and_then(|v| v.as_object()).is_some() {
                continue; // a metric-math expression row
            }
            if row[0] != "." {
                namespace = row[0].as_str().unwrap().to_owned();
            }
            if namespace == NAMESPACE {
                used.insert(row[1].as_str().unwrap().to_owned());
            }
        }
    }
    let emitted: BTreeSet<String> = metric::ALL.map(String::from).into();
    assert!(
        used.is_subset(&emitted),
        "template uses metrics the code never emits: {:?}",
        used.difference(&emitted).collect::<Vec<_>>()
    );
    assert_eq!(
        used, emitted,
        "every emitted metric is on the dashboard or an alarm"
    );
}

/// `${Param}` outside a JSON string is a number at deploy time: put a 0 there to parse.
fn numbers_for_bare_substitutions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' && !out.ends_with('\\') {
            in_string = !in_string;
        }
        if !in_string && c == '$' && chars.peek() == Some(&'{') {
            for skipped in chars.by_ref() {
                if skipped == '}' {
                    break;
                }
            }
            out.push('0');
            continue;
        }
        out.push(c);
    }
    out
}
