//! `template.yaml` against the code: the numbers that must agree between the SAM template and
//! the Rust side are read from the template and checked here, so neither can drift alone.

use relay_shared::backoff::{DEFAULT_SCHEDULE, MAX_WAITS, RetrySchedule};
use relay_shared::config;
use relay_shared::queue::{MAX_BATCH, MAX_MESSAGE_BYTES, SAFETY_NET_RECEIVES};
use relay_shared::secrets::{self, arn_var};
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

/// `!Ref X`, `!GetAtt X.Arn`, `!Sub "…"` as that text.
fn reference(value: &Value) -> String {
    let Value::Tagged(tagged) = value else {
        panic!("expected a tagged value (!Ref, !GetAtt, !Sub), got {value:?}")
    };
    let text = tagged.value.as_str().unwrap_or_else(|| panic!("{value:?}"));
    format!("{} {text}", tagged.tag)
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
fn max_receive_count_is_a_safety_net_above_the_one_retry_schedule() {
    let t = template();
    let default = at(&t, &["Parameters", "RetrySchedule", "Default"])
        .as_str()
        .unwrap();
    assert_eq!(
        default, DEFAULT_SCHEDULE,
        "the template's default schedule is the code's"
    );
    // The dispatcher counts attempts and dead-letters itself; SQS's count of receives is
    // inflated by holding, so it must stay far above any schedule the template accepts.
    let count = number(at(
        &t,
        &[
            "Resources",
            "EventQueue",
            "Properties",
            "RedrivePolicy",
            "maxReceiveCount",
        ],
    ));
    assert_eq!(count, u64::from(SAFETY_NET_RECEIVES));
    // A message held behind nine failing heads of its chat is received with each of their
    // attempts, then its own: SQS must not count it out before the dispatcher has tried it.
    let longest = RetrySchedule::parse(&["0"; MAX_WAITS].join(",")).unwrap();
    let held_receives = MAX_BATCH as u64 * u64::from(longest.max_attempts());
    assert_eq!(held_receives, 210);
    assert!(
        count > held_receives && count <= 1000,
        "maxReceiveCount {count} must exceed the {held_receives} receives a held message can collect \
         and stay within SQS's 1 to 1,000"
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
    assert_eq!(
        reference(at(env, &[config::RETRY_SCHEDULE])),
        "!Ref RetrySchedule",
        "the dispatcher reads the same parameter"
    );
}

/// No message may expire from the queue while it is still being retried: the longest schedule
/// the dispatcher accepts, every wait at SQS's 12 h maximum, fits inside the retention.
#[test]
fn the_queue_keeps_messages_longer_than_the_longest_schedule() {
    let t = template();
    let retention = number(at(
        &t,
        &[
            "Resources",
            "EventQueue",
            "Properties",
            "MessageRetentionPeriod",
        ],
    ));
    let longest = relay_shared::backoff::MAX_WAITS as u64 * 43_200;
    assert!(
        retention > longest + 24 * 3600,
        "retention {retention} s against {longest} s of waits"
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
        assert_eq!(size as usize, MAX_MESSAGE_BYTES, "{queue}");
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
        arn_var(config::INGEST_SECRETS).unwrap(),
        arn_var(config::CHAT_ID_KEY).unwrap(),
        secrets::SECRETS_REVISION,
        config::QUEUE_URL,
        config::QR_TTL_SECONDS,
        config::METRICS_NAMESPACE,
        config::LIVE_EVENTS_URL,
        config::LIVE_NAMESPACE,
    ]
    .map(String::from)
    .into();
    assert_eq!(names("IngestFunction"), ingest);
    let live_auth: BTreeSet<String> = [
        arn_var(config::LIVE_TOKEN_SECRETS).unwrap(),
        config::LIVE_NAMESPACE,
        secrets::SECRETS_REVISION,
    ]
    .map(String::from)
    .into();
    assert_eq!(names("LiveAuthFunction"), live_auth);
    let dispatcher: BTreeSet<String> = [
        config::QUEUE_URL,
        config::WEBHOOK_URL,
        arn_var(config::WEBHOOK_SECRETS).unwrap(),
        secrets::SECRETS_REVISION,
        config::DELIVERY_TIMEOUT_MS,
        config::RETRY_SCHEDULE,
        config::DEAD_LETTER_STATUSES,
        config::QR_TTL_SECONDS,
        config::DEAD_LETTER_QUEUE_URL,
        config::ATTEMPTS_TABLE,
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

/// A parameter's `AllowedPattern`, compiled as CloudFormation applies it (whole value).
fn allowed_pattern(t: &Value, parameter: &str) -> regex_lite::Regex {
    let pattern = at(t, &["Parameters", parameter, "AllowedPattern"])
        .as_str()
        .expect("a pattern string");
    regex_lite::Regex::new(&format!("^(?:{pattern})$")).expect("a valid pattern")
}

#[test]
fn the_webhook_url_must_be_https() {
    let t = template();
    let pattern = allowed_pattern(&t, "WebhookUrl");
    for good in [
        "https://app.example.com/api/webhook/chat-whatsapp",
        "https://app.vercel.app",
    ] {
        assert!(pattern.is_match(good), "{good}");
    }
    for bad in [
        "http://app.example.com/api/webhook/chat-whatsapp",
        "ftp://app.example.com/",
        "https://",
        "https:// app.example.com",
        "app.example.com",
    ] {
        assert!(
            !pattern.is_match(bad),
            "{bad} must be refused at deploy time"
        );
    }
    let hint = at(&t, &["Parameters", "WebhookUrl", "ConstraintDescription"])
        .as_str()
        .unwrap();
    assert!(hint.contains("https://"), "{hint}");
}

#[test]
fn the_retry_schedule_is_validated_at_deploy_time_exactly_as_the_code_would() {
    let t = template();
    let pattern = allowed_pattern(&t, "RetrySchedule");
    // Every single wait from 0 to past the limit: the pattern takes exactly 0..=43200.
    for secs in 0..=50_000u64 {
        assert_eq!(
            pattern.is_match(&secs.to_string()),
            secs <= 43_200,
            "a wait of {secs} s"
        );
    }
    let twenty = ["43200"; 20].join(",");
    for good in [DEFAULT_SCHEDULE, "0", "5", twenty.as_str()] {
        assert!(pattern.is_match(good), "{good}");
        RetrySchedule::parse(good).expect("what the template accepts, the dispatcher accepts");
    }
    let twenty_one = ["5"; 21].join(",");
    for bad in [
        "",
        "5,,30",
        "5,30,",
        "5, 30",
        "-1",
        "05",
        "43201",
        "5,100000",
        "5s",
        twenty_one.as_str(),
    ] {
        assert!(
            !pattern.is_match(bad),
            "{bad:?} must be refused at deploy time"
        );
    }
}

#[test]
fn both_queues_survive_stack_deletion_and_replacement() {
    let t = template();
    for queue in ["EventQueue", "DeadLetterQueue"] {
        for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
            assert_eq!(
                at(&t, &["Resources", queue, policy]).as_str(),
                Some("Retain"),
                "{queue} {policy}: accepted events must outlive `sam delete` and replacement"
            );
        }
    }
}

/// `!Sub [text, {StackUuid: …}]`: the text, and the one variable's definition.
fn sub_with_stack_uuid(value: &Value) -> (String, Value) {
    let Value::Tagged(sub) = value else {
        panic!("expected !Sub, got {value:?}")
    };
    assert_eq!(sub.tag.to_string(), "!Sub");
    let Value::Sequence(parts) = &sub.value else {
        panic!("expected !Sub [text, variables]")
    };
    let text = parts[0].as_str().unwrap().to_owned();
    let uuid = at(&parts[1], &["StackUuid"]).clone();
    (text, uuid)
}

#[test]
fn the_dead_letter_queue_accepts_only_the_event_queue_as_its_source() {
    let t = template();
    let policy = at(
        &t,
        &[
            "Resources",
            "DeadLetterQueue",
            "Properties",
            "RedriveAllowPolicy",
        ],
    );
    assert_eq!(at(policy, &["redrivePermission"]).as_str(), Some("byQueue"));
    let Value::Sequence(sources) = at(policy, &["sourceQueueArns"]) else {
        panic!("sourceQueueArns is a list")
    };
    assert_eq!(sources.len(), 1, "the event queue only");
    let (arn, arn_uuid) = sub_with_stack_uuid(&sources[0]);
    let (name, name_uuid) = sub_with_stack_uuid(at(
        &t,
        &["Resources", "EventQueue", "Properties", "QueueName"],
    ));
    assert_eq!(
        arn,
        format!("arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}"),
        "the ARN names the event queue"
    );
    assert_eq!(arn_uuid, name_uuid, "built from the same stack id");
    // The longest the name can be at deploy time: a stack UUID is 36 characters.
    let deployed = name.replace("${StackUuid}", &"f".repeat(36));
    assert!(
        !deployed.contains("${"),
        "{name}: only StackUuid is substituted"
    );
    assert!(
        deployed.ends_with(".fifo") && deployed.len() <= 80,
        "{deployed}: a FIFO queue name is at most 80 characters, .fifo included"
    );
    assert_eq!(
        reference(at(
            &t,
            &[
                "Resources",
                "EventQueue",
                "Properties",
                "RedrivePolicy",
                "deadLetterTargetArn"
            ]
        )),
        "!GetAtt DeadLetterQueue.Arn"
    );
}

/// Every statement of a role's inline policies, as (actions, resources) in template text.
fn statements(t: &Value, role: &str) -> Vec<(BTreeSet<String>, BTreeSet<String>)> {
    let Value::Sequence(policies) = at(t, &["Resources", role, "Properties", "Policies"]) else {
        panic!("{role} has a list of policies")
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => reference(other),
    };
    let list = |v: &Value| -> BTreeSet<String> {
        match v {
            Value::Sequence(items) => items.iter().map(text).collect(),
            other => BTreeSet::from([text(other)]),
        }
    };
    let mut out = Vec::new();
    for policy in policies {
        let Value::Sequence(items) = at(policy, &["PolicyDocument", "Statement"]) else {
            panic!("a statement list")
        };
        for statement in items {
            if let Value::Tagged(_) = statement {
                continue; // the !If X-Ray statement
            }
            out.push((
                list(at(statement, &["Action"])),
                list(at(statement, &["Resource"])),
            ));
        }
    }
    out
}

/// The resources `role` may call `action` on.
fn granted(t: &Value, role: &str, action: &str) -> BTreeSet<String> {
    statements(t, role)
        .into_iter()
        .filter(|(actions, _)| actions.contains(action))
        .flat_map(|(_, resources)| resources)
        .collect()
}

#[test]
fn each_function_reads_its_own_secrets_by_arn_and_nothing_else() {
    let t = template();
    let set =
        |items: &[&str]| -> BTreeSet<String> { items.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        granted(&t, "IngestRole", "secretsmanager:GetSecretValue"),
        set(&["!Ref IngestSecret", "!Ref ChatIdKeySecret"])
    );
    // Ingest's two secrets come in one BatchGetSecretValue, which takes no resource; the
    // secrets it may return are still the GetSecretValue grant's alone.
    assert_eq!(
        granted(&t, "IngestRole", "secretsmanager:BatchGetSecretValue"),
        set(&["*"])
    );
    assert_eq!(
        granted(&t, "DispatcherRole", "secretsmanager:GetSecretValue"),
        set(&["!Ref WebhookSecret"])
    );
    for role in ["DispatcherRole", "LiveAuthRole"] {
        assert!(
            granted(&t, role, "secretsmanager:BatchGetSecretValue").is_empty(),
            "{role} reads one secret"
        );
    }
    assert_eq!(
        granted(&t, "LiveAuthRole", "secretsmanager:GetSecretValue"),
        set(&["!Ref LiveTokenSecret"])
    );
    for role in ["IngestRole", "DispatcherRole", "LiveAuthRole"] {
        for (actions, _) in statements(&t, role) {
            assert!(
                actions.iter().all(|a| !a.contains('*')),
                "{role}: no wildcard actions: {actions:?}"
            );
        }
    }
    let env = |function: &str, var: &str| {
        reference(at(
            &t,
            &[
                "Resources",
                function,
                "Properties",
                "Environment",
                "Variables",
                var,
            ],
        ))
    };
    let ingest_arn = arn_var(config::INGEST_SECRETS).unwrap();
    let key_arn = arn_var(config::CHAT_ID_KEY).unwrap();
    let webhook_arn = arn_var(config::WEBHOOK_SECRETS).unwrap();
    assert_eq!(env("IngestFunction", ingest_arn), "!Ref IngestSecret");
    assert_eq!(env("IngestFunction", key_arn), "!Ref ChatIdKeySecret");
    assert_eq!(env("DispatcherFunction", webhook_arn), "!Ref WebhookSecret");
    let live_arn = arn_var(config::LIVE_TOKEN_SECRETS).unwrap();
    assert_eq!(env("LiveAuthFunction", live_arn), "!Ref LiveTokenSecret");
    for (secret, parameter) in [
        ("IngestSecret", "IngestSecrets"),
        ("WebhookSecret", "WebhookSecrets"),
        ("LiveTokenSecret", "LiveTokenSecrets"),
    ] {
        assert_eq!(
            at(&t, &["Resources", secret, "Type"]).as_str(),
            Some("AWS::SecretsManager::Secret")
        );
        assert_eq!(
            reference(at(&t, &["Resources", secret, "Properties", "SecretString"])),
            format!("!Ref {parameter}")
        );
        assert_eq!(
            at(&t, &["Parameters", parameter, "NoEcho"]),
            &Value::Bool(true)
        );
    }
    let generated = at(
        &t,
        &[
            "Resources",
            "ChatIdKeySecret",
            "Properties",
            "GenerateSecretString",
        ],
    );
    assert_eq!(number(at(generated, &["PasswordLength"])), 64);
    assert_eq!(at(generated, &["ExcludePunctuation"]), &Value::Bool(true));
    let text = template_text();
    assert!(
        !text.contains("AWS::SecretsManager::RotationSchedule"),
        "the chat-id key is never rotated"
    );
}

#[test]
fn no_secret_reaches_an_environment_variable_or_an_output() {
    let t = template();
    let secret_names = [
        "IngestSecrets",
        "WebhookSecrets",
        "LiveTokenSecrets",
        "IngestSecret",
        "WebhookSecret",
        "LiveTokenSecret",
        "ChatIdKeySecret",
    ];
    // Any reference at all: !Ref X, !GetAtt X.…, ${X} inside a !Sub.
    fn mentions(value: &Value, name: &str) -> bool {
        match value {
            Value::String(s) => {
                s == name
                    || s.contains(&format!("${{{name}}}"))
                    || s.starts_with(&format!("{name}."))
            }
            Value::Tagged(tagged) => mentions(&tagged.value, name),
            Value::Sequence(items) => items.iter().any(|v| mentions(v, name)),
            Value::Mapping(map) => map
                .iter()
                .any(|(k, v)| mentions(k, name) || mentions(v, name)),
            _ => false,
        }
    }
    for name in secret_names {
        assert!(!mentions(&t["Outputs"], name), "an Output mentions {name}");
    }
    for function in ["IngestFunction", "DispatcherFunction", "LiveAuthFunction"] {
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
        for name in ["IngestSecrets", "WebhookSecrets", "LiveTokenSecrets"] {
            assert!(
                !mentions(vars, name),
                "{function}'s environment holds {name}"
            );
        }
        for (var, _) in secrets::SECRET_VARS {
            assert!(
                vars.get(var).is_none(),
                "{function} gets {var} as a plain value; on AWS it gets {var}_ARN"
            );
        }
    }
}

/// A function's environment variables in the template.
fn variables<'a>(t: &'a Value, function: &str) -> &'a Value {
    at(
        t,
        &[
            "Resources",
            function,
            "Properties",
            "Environment",
            "Variables",
        ],
    )
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_dispatcher_owns_its_attempts_table_and_dead_letters_itself() {
    let t = template();
    check_attempts_table(&t);
    check_dispatcher_grants(&t);
    let env = variables(&t, "DispatcherFunction");
    assert_eq!(
        reference(at(env, &[config::ATTEMPTS_TABLE])),
        "!Ref AttemptsTable"
    );
    assert_eq!(
        reference(at(env, &[config::DEAD_LETTER_QUEUE_URL])),
        "!Ref DeadLetterQueue"
    );
    assert_eq!(
        reference(at(env, &[config::DEAD_LETTER_STATUSES])),
        "!Ref DeadLetterStatuses"
    );
    for function in ["IngestFunction", "DispatcherFunction"] {
        let vars = variables(&t, function);
        assert_eq!(
            reference(at(vars, &[config::QR_TTL_SECONDS])),
            "!Ref QrTtlSeconds"
        );
        assert_eq!(
            reference(at(vars, &[secrets::SECRETS_REVISION])),
            "!Ref SecretsRevision"
        );
    }
}

/// The attempts table as the ledger uses it: keyed by `message_id`, with a TTL, encrypted.
fn check_attempts_table(t: &Value) {
    let table = at(t, &["Resources", "AttemptsTable", "Properties"]);
    assert_eq!(
        at(table, &["BillingMode"]).as_str(),
        Some("PAY_PER_REQUEST")
    );
    let Value::Sequence(keys) = at(table, &["KeySchema"]) else {
        panic!("KeySchema is a list")
    };
    assert_eq!(keys.len(), 1);
    assert_eq!(
        at(&keys[0], &["AttributeName"]).as_str(),
        Some("message_id")
    );
    assert_eq!(at(&keys[0], &["KeyType"]).as_str(), Some("HASH"));
    let Value::Sequence(attributes) = at(table, &["AttributeDefinitions"]) else {
        panic!("AttributeDefinitions is a list")
    };
    assert_eq!(attributes.len(), 1);
    assert_eq!(at(&attributes[0], &["AttributeType"]).as_str(), Some("S"));
    assert_eq!(
        at(table, &["TimeToLiveSpecification", "AttributeName"]).as_str(),
        Some("expires_at")
    );
    assert_eq!(
        at(table, &["TimeToLiveSpecification", "Enabled"]),
        &Value::Bool(true)
    );
    // Encrypted with DynamoDB's AWS owned key (no KMS charge per request): no SSESpecification.
    assert!(table.get("SSESpecification").is_none());
}

/// The dispatcher reads, counts and forgets attempts in its table only, and sends to the DLQ
/// only; ingest sends to the event queue only.
fn check_dispatcher_grants(t: &Value) {
    for action in [
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ] {
        assert_eq!(
            granted(t, "DispatcherRole", action),
            names(&["!GetAtt AttemptsTable.Arn"]),
            "{action}"
        );
    }
    let dynamo: Vec<_> = statements(t, "DispatcherRole")
        .into_iter()
        .flat_map(|(actions, _)| actions)
        .filter(|a| a.starts_with("dynamodb:"))
        .collect();
    assert_eq!(dynamo.len(), 3, "no other DynamoDB action: {dynamo:?}");
    assert_eq!(
        granted(t, "DispatcherRole", "sqs:SendMessage"),
        names(&["!GetAtt DeadLetterQueue.Arn"]),
        "the dispatcher sends to the DLQ only"
    );
    assert_eq!(
        granted(t, "IngestRole", "sqs:SendMessage"),
        names(&["!GetAtt EventQueue.Arn"])
    );
    assert_eq!(
        granted(t, "IngestRole", "sqs:GetQueueAttributes"),
        names(&["!GetAtt EventQueue.Arn"]),
        "ingest's warm-up at start reads its own queue's attributes, no other"
    );
}

#[test]
fn the_delivery_parameters_have_sane_defaults_and_patterns() {
    let t = template();
    assert_eq!(
        at(&t, &["Parameters", "DeadLetterStatuses", "Default"]).as_str(),
        Some("410 413 422")
    );
    let statuses = allowed_pattern(&t, "DeadLetterStatuses");
    for good in [
        "410 413 422",
        "410,413,422",
        "410, 422",
        "410",
        "",
        "100 599",
    ] {
        assert!(statuses.is_match(good), "{good:?}");
    }
    for bad in [
        "41", "4100", "410;413", "gone", "410 ", "200", "410 204", "099", "600",
    ] {
        assert!(!statuses.is_match(bad), "{bad:?}");
    }
    assert_eq!(
        number(at(&t, &["Parameters", "QrTtlSeconds", "Default"])),
        60
    );
    assert_eq!(
        number(at(&t, &["Parameters", "QrTtlSeconds", "MinValue"])),
        1
    );
}

/// A value CloudFormation lets through must not stop a function at start: a deploy that
/// succeeds and then answers every event with a 5xx is the worst outcome. So every parameter
/// the functions parse accepts, at deploy time, only what the code accepts: checked on
/// hand-picked edge cases and on a few thousand generated values (fixed seed).
#[test]
fn what_the_template_accepts_the_functions_accept() {
    let t = template();
    let mut rng = fastrand::Rng::with_seed(13);
    check_webhook_url_pattern(&t, &mut rng);
    check_secret_patterns(&t, &mut rng);
    check_dead_letter_pattern(&t, &mut rng);
    check_number_bounds(&t);
}

/// Builds a string from `pieces`, between 0 and `most` of them.
fn pieces(rng: &mut fastrand::Rng, pieces: &[&str], most: usize) -> String {
    (0..rng.usize(0..=most))
        .map(|_| pieces[rng.usize(..pieces.len())])
        .collect()
}

fn dispatcher_takes_url(url: &str) -> bool {
    config::delivery_target(&|var| (var == config::WEBHOOK_URL).then(|| url.to_owned())).is_some()
}

fn check_webhook_url_pattern(t: &Value, rng: &mut fastrand::Rng) {
    let pattern = allowed_pattern(t, "WebhookUrl");
    for good in [
        "https://app.example.com/api/webhook/chat-whatsapp",
        "https://app.vercel.app",
        "https://app.example.com:8443/hook?token=abc#x",
        "https://a-b.c1/x",
    ] {
        assert!(pattern.is_match(good), "{good}");
        assert!(dispatcher_takes_url(good), "{good}");
    }
    for bad in [
        "https://1.2.3.999/",
        "https://app.example.com:65536/",
        "https://app.example.com:0/",
        "https://[::1/",
        "https://-app.example.com/",
        "https://app..example.com/",
        "https://app.example.com./",
        "https://user:pass@app.example.com/",
    ] {
        assert!(
            !pattern.is_match(bad),
            "{bad} must be refused at deploy time"
        );
    }
    // Not generated: `xn--` labels. A real internationalised name must stay deployable, and no
    // pattern can check punycode; a mistyped one fails at the dispatcher's start, naming
    // WEBHOOK_URL, as it would fail its DNS lookup anyway.
    let host = [
        "a", "z", "0", "9", "-", ".", "_", "x", "%41", "[", "]", ":", "@",
    ];
    let rest = [
        "", "/", "?", "#", ":", "1", "65535", "99999", "/p", "a", "%zz", "\\", "é",
    ];
    let mut accepted = 0;
    for _ in 0..5_000 {
        let url = format!("https://{}{}", pieces(rng, &host, 6), pieces(rng, &rest, 3));
        if pattern.is_match(&url) {
            accepted += 1;
            assert!(
                dispatcher_takes_url(&url),
                "the template accepts {url:?}, the dispatcher does not"
            );
        }
    }
    assert!(
        accepted > 100,
        "the generator reaches the pattern ({accepted} of 5000)"
    );
}

fn check_secret_patterns(t: &Value, rng: &mut fastrand::Rng) {
    use base64::Engine as _;
    use relay_shared::signature::SecretSet;
    for parameter in ["WebhookSecrets", "IngestSecrets"] {
        let pattern = allowed_pattern(t, parameter);
        // Every real secret (24 to 64 random bytes) is accepted at deploy time.
        for bytes in 24..=64 {
            let key: Vec<u8> = (0..bytes).map(|_| rng.u8(..)).collect();
            let secret = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            let list = format!("{secret} {secret}");
            assert!(pattern.is_match(&list), "{parameter}: {bytes} bytes");
            SecretSet::parse(&list).expect("what the template accepts, the functions accept");
        }
        let trailing_bits = format!("whsec_{}QR==", "A".repeat(40));
        for bad in ["whsec_", "whsec_c2hvcnQ=", "secret", "", &trailing_bits] {
            assert!(!pattern.is_match(bad), "{parameter}: {bad:?}");
            assert!(SecretSet::parse(bad).is_err(), "{parameter}: {bad:?}");
        }
        let alphabet = [
            "A", "Q", "g", "w", "B", "z", "0", "+", "/", "=", "==", "-", " ",
        ];
        let mut accepted = 0;
        for _ in 0..5_000 {
            let text = format!(
                "whsec_{}{}",
                "AAAA".repeat(rng.usize(7..=9)),
                pieces(rng, &alphabet, 6)
            );
            if pattern.is_match(&text) {
                accepted += 1;
                assert!(
                    SecretSet::parse(&text).is_ok(),
                    "{parameter}: the template accepts {text:?}, the functions do not"
                );
            }
        }
        assert!(
            accepted > 200,
            "{parameter}: the generator reaches the pattern ({accepted})"
        );
    }
}

fn check_dead_letter_pattern(t: &Value, rng: &mut fastrand::Rng) {
    use relay_shared::backoff::DeadLetterStatuses;
    let pattern = allowed_pattern(t, "DeadLetterStatuses");
    for status in 0..1_000u16 {
        let text = format!("{status:03}");
        assert_eq!(
            pattern.is_match(&text),
            DeadLetterStatuses::parse(&text).is_ok(),
            "status {text}"
        );
    }
    let parts = ["410", "200", "599", "600", "1", " ", ",", ", ", ";"];
    for _ in 0..5_000 {
        let text = pieces(rng, &parts, 5);
        if pattern.is_match(&text) {
            assert!(
                DeadLetterStatuses::parse(&text).is_ok(),
                "the template accepts {text:?}, the dispatcher does not"
            );
        }
    }
}

/// Number parameters the functions bound: the template's range lies inside the code's.
fn check_number_bounds(t: &Value) {
    let bounds = |name: &str| {
        let parameter = at(t, &["Parameters", name]);
        (
            number(at(parameter, &["MinValue"])),
            number(at(parameter, &["MaxValue"])),
        )
    };
    let (min, max) = bounds("QrTtlSeconds");
    assert!(
        min >= 1 && max == config::MAX_QR_TTL_SECS,
        "QrTtlSeconds {min}..={max}"
    );
    let (min, max) = bounds("DeliveryTimeoutMs");
    assert!(
        min >= 1 && max <= config::MAX_DELIVERY_TIMEOUT_MS,
        "DeliveryTimeoutMs {min}..={max}"
    );
}

/// `[{AuthType: X}, …]` → the auth types.
fn auth_types(value: &Value) -> Vec<String> {
    let Value::Sequence(modes) = value else {
        panic!("a list of auth modes: {value:?}")
    };
    modes
        .iter()
        .map(|m| at(m, &["AuthType"]).as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_event_api_has_iam_publish_lambda_subscribe_and_no_api_key() {
    let t = template();
    check_event_api_auth(&t);
    check_live_namespace(&t);
    let text = template_text();
    for key in ["API_KEY", "AWS::AppSync::ApiKey"] {
        assert!(!text.contains(key), "no API key anywhere: {key}");
    }
    check_live_parameter_patterns(&t);
}

/// Pages connect and subscribe through the Lambda authorizer (never cached); only IAM
/// publishes.
fn check_event_api_auth(t: &Value) {
    let api = at(t, &["Resources", "EventApi"]);
    assert_eq!(at(api, &["Type"]).as_str(), Some("AWS::AppSync::Api"));
    let config = at(api, &["Properties", "EventConfig"]);
    let Value::Sequence(providers) = at(config, &["AuthProviders"]) else {
        panic!("AuthProviders is a list")
    };
    let provider_types: Vec<String> = providers
        .iter()
        .map(|p| at(p, &["AuthType"]).as_str().unwrap().to_owned())
        .collect();
    assert_eq!(provider_types, ["AWS_IAM", "AWS_LAMBDA"]);
    let lambda = at(&providers[1], &["LambdaAuthorizerConfig"]);
    assert_eq!(
        reference(at(lambda, &["AuthorizerUri"])),
        "!GetAtt LiveAuthFunction.Arn"
    );
    assert_eq!(
        number(at(lambda, &["AuthorizerResultTtlInSeconds"])),
        0,
        "a cached answer would stand for another channel"
    );
    assert_eq!(
        auth_types(at(config, &["ConnectionAuthModes"])),
        ["AWS_LAMBDA"]
    );
    assert_eq!(
        auth_types(at(config, &["DefaultSubscribeAuthModes"])),
        ["AWS_LAMBDA"]
    );
    assert_eq!(
        auth_types(at(config, &["DefaultPublishAuthModes"])),
        ["AWS_IAM"],
        "pages never publish"
    );
}

fn check_live_namespace(t: &Value) {
    let namespace = at(t, &["Resources", "LiveChannelNamespace"]);
    assert_eq!(
        at(namespace, &["Type"]).as_str(),
        Some("AWS::AppSync::ChannelNamespace")
    );
    assert_eq!(
        reference(at(namespace, &["Properties", "ApiId"])),
        "!GetAtt EventApi.ApiId"
    );
    assert_eq!(
        reference(at(namespace, &["Properties", "Name"])),
        "!Ref LiveNamespaceName"
    );
    assert_eq!(
        auth_types(at(namespace, &["Properties", "PublishAuthModes"])),
        ["AWS_IAM"]
    );
    assert_eq!(
        auth_types(at(namespace, &["Properties", "SubscribeAuthModes"])),
        ["AWS_LAMBDA"]
    );
}

/// The live parameters accept exactly what the code accepts: the namespace name and the
/// token secrets.
fn check_live_parameter_patterns(t: &Value) {
    // The default namespace and its rule are the code's.
    assert_eq!(
        at(t, &["Parameters", "LiveNamespaceName", "Default"]).as_str(),
        Some(relay_shared::live::channel::DEFAULT_NAMESPACE)
    );
    let pattern = allowed_pattern(t, "LiveNamespaceName");
    for name in [
        "relay",
        "a",
        "chat-live-2",
        &"x".repeat(50),
        "-a",
        "a-",
        "a_b",
        &"x".repeat(51),
        "",
    ] {
        assert_eq!(
            pattern.is_match(name),
            relay_shared::live::channel::is_valid_segment(name),
            "{name:?}"
        );
    }
    let secrets = allowed_pattern(t, "LiveTokenSecrets");
    let one = "a".repeat(32);
    for list in [
        one.clone(),
        format!("{one} {one}"),
        [one.as_str(); 4].join(" "),
    ] {
        assert!(secrets.is_match(&list), "{list}");
        relay_shared::live::token::TokenSecrets::parse(&list)
            .expect("what the template accepts, the authorizer accepts");
    }
    for bad in [
        "a".repeat(31),
        [one.as_str(); 5].join(" "),
        format!("{one}  {one}"),
        String::new(),
    ] {
        assert!(!secrets.is_match(&bad), "{bad:?}");
    }
}

#[test]
fn only_ingest_may_publish_and_only_to_the_live_namespace() {
    let t = template();
    assert_eq!(
        granted(&t, "IngestRole", "appsync:EventPublish"),
        names(&["!GetAtt LiveChannelNamespace.ChannelNamespaceArn"])
    );
    for role in ["IngestRole", "DispatcherRole", "LiveAuthRole"] {
        let appsync: Vec<String> = statements(&t, role)
            .into_iter()
            .flat_map(|(actions, _)| actions)
            .filter(|a| a.starts_with("appsync:"))
            .collect();
        let expected: Vec<String> = if role == "IngestRole" {
            vec!["appsync:EventPublish".into()]
        } else {
            vec![]
        };
        assert_eq!(appsync, expected, "{role}");
    }
    let env = variables(&t, "IngestFunction");
    assert_eq!(
        reference(at(env, &[config::LIVE_EVENTS_URL])),
        "!Sub https://${EventApi.Dns.Http}/event"
    );
    for function in ["IngestFunction", "LiveAuthFunction"] {
        assert_eq!(
            reference(at(variables(&t, function), &[config::LIVE_NAMESPACE])),
            "!Ref LiveNamespaceName",
            "{function}: one namespace for publisher and authorizer"
        );
    }
    check_live_auth_function(&t);
    for (output, value) in [
        (
            "LiveHttpEndpoint",
            "!Sub https://${EventApi.Dns.Http}/event",
        ),
        (
            "LiveRealtimeEndpoint",
            "!Sub wss://${EventApi.Dns.Realtime}/event/realtime",
        ),
        ("LiveNamespace", "!Ref LiveNamespaceName"),
    ] {
        assert_eq!(reference(at(&t, &["Outputs", output, "Value"])), value);
    }
}

/// AppSync may invoke the authorizer, for this API only, and the authorizer answers within
/// AppSync's wait.
fn check_live_auth_function(t: &Value) {
    let permission = at(t, &["Resources", "LiveAuthInvokePermission", "Properties"]);
    assert_eq!(
        at(permission, &["Principal"]).as_str(),
        Some("appsync.amazonaws.com")
    );
    assert_eq!(
        at(permission, &["Action"]).as_str(),
        Some("lambda:InvokeFunction")
    );
    assert_eq!(
        reference(at(permission, &["FunctionName"])),
        "!GetAtt LiveAuthFunction.Arn"
    );
    assert_eq!(
        reference(at(permission, &["SourceArn"])),
        "!GetAtt EventApi.ApiArn"
    );
    let function = at(t, &["Resources", "LiveAuthFunction"]);
    assert_eq!(
        at(function, &["Metadata", "BuildProperties", "Binary"]).as_str(),
        Some("live-auth")
    );
    assert_eq!(
        at(function, &["Properties", "Runtime"]).as_str(),
        Some("provided.al2023")
    );
    assert!(
        number(at(function, &["Properties", "Timeout"])) < 10,
        "AppSync waits at most 10 s for an authorizer"
    );
}
