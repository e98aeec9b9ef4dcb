//! The settings the cost model and the log measurement read from `template.yaml`: memory,
//! architecture, batch size, log levels, concurrency and throttling defaults, the access log
//! format. CloudFormation short tags (`!Ref`, `!Sub`, `!GetAtt`) are kept as tagged values by
//! `serde_norway`; a `!Ref` to a parameter resolves to that parameter's default.

use serde_norway::Value;

/// One Lambda function's billing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub memory_mb: u64,
    /// `arm64` or `x86_64`.
    pub architecture: String,
}

/// What the model needs from the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub ingest: Function,
    pub dispatcher: Function,
    /// The SQS event source mapping's `BatchSize`.
    pub batch_size: u64,
    /// `LogLevel`'s default (the functions' `ApplicationLogLevel`).
    pub log_level: String,
    /// The functions' `SystemLogLevel` (`WARN` drops Lambda's START/END/REPORT lines).
    pub system_log_level: String,
    pub dispatcher_max_concurrency: u64,
    pub throttling_rate_limit: u64,
    pub throttling_burst_limit: u64,
    /// `FifoThroughputLimit` of the event queue (`perMessageGroupId` = high throughput).
    pub fifo_throughput_limit: String,
    /// The HTTP API's access log format.
    pub access_log_format: String,
    /// Ingest publishes to AppSync Events (`LIVE_EVENTS_URL` is set).
    pub live_enabled: bool,
}

impl Settings {
    pub fn parse(text: &str) -> Result<Settings, String> {
        let t: Value = serde_norway::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
        let resources = get(&t, &["Resources"])?;
        let function = |name: &str| -> Result<Function, String> {
            let props = get(resources, &[name, "Properties"])?;
            Ok(Function {
                memory_mb: number(&t, get(props, &["MemorySize"])?)?,
                architecture: get(props, &["Architectures"])?
                    .as_sequence()
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .unwrap_or("x86_64")
                    .to_owned(),
            })
        };
        let dispatcher = get(resources, &["DispatcherFunction", "Properties"])?;
        let queue_event = get(dispatcher, &["Events", "Queue", "Properties"])?;
        let logging = get(dispatcher, &["LoggingConfig"])?;
        let api = get(resources, &["HttpApi", "Properties"])?;
        let route = get(api, &["DefaultRouteSettings"])?;
        let ingest_env = get(
            resources,
            &["IngestFunction", "Properties", "Environment", "Variables"],
        )?;
        Ok(Settings {
            ingest: function("IngestFunction")?,
            dispatcher: function("DispatcherFunction")?,
            batch_size: number(&t, get(queue_event, &["BatchSize"])?)?,
            log_level: text_of(&t, get(logging, &["ApplicationLogLevel"])?)?,
            system_log_level: text_of(&t, get(logging, &["SystemLogLevel"])?)?,
            dispatcher_max_concurrency: number(
                &t,
                get(queue_event, &["ScalingConfig", "MaximumConcurrency"])?,
            )?,
            throttling_rate_limit: number(&t, get(route, &["ThrottlingRateLimit"])?)?,
            throttling_burst_limit: number(&t, get(route, &["ThrottlingBurstLimit"])?)?,
            fifo_throughput_limit: text_of(
                &t,
                get(
                    resources,
                    &["EventQueue", "Properties", "FifoThroughputLimit"],
                )?,
            )?,
            access_log_format: text_of(&t, get(api, &["AccessLogSettings", "Format"])?)?,
            live_enabled: ingest_env.get("LIVE_EVENTS_URL").is_some(),
        })
    }

    pub fn read(path: &std::path::Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Settings::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn untag(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => &tagged.value,
        other => other,
    }
}

fn get<'a>(value: &'a Value, path: &[&str]) -> Result<&'a Value, String> {
    path.iter().try_fold(value, |v, key| {
        untag(v)
            .get(*key)
            .ok_or_else(|| format!("template.yaml has no {}", path.join(".")))
    })
}

/// A value, or the default of the parameter a `!Ref` names.
fn resolve<'a>(template: &'a Value, value: &'a Value) -> Result<&'a Value, String> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "!Ref" || tagged.tag == "Ref" => {
            let name = tagged.value.as_str().ok_or("a !Ref without a name")?;
            get(template, &["Parameters", name, "Default"])
                .map_err(|_| format!("!Ref {name}: no parameter default"))
        }
        other => Ok(other),
    }
}

fn number(template: &Value, value: &Value) -> Result<u64, String> {
    match resolve(template, value)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("not a whole number: {n}")),
        Value::String(s) => s.parse().map_err(|_| format!("not a number: {s:?}")),
        other => Err(format!("not a number: {other:?}")),
    }
}

fn text_of(template: &Value, value: &Value) -> Result<String, String> {
    match resolve(template, value)? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("not a string: {other:?}")),
    }
}

/// The access log line API Gateway writes for one request, estimated: the template's format
/// with typical values in place of each `$context` variable (an HTTP API request of ~300 bytes
/// answered 202). An estimate from the format, not a measured line.
pub fn access_log_line(format: &str) -> String {
    const TYPICAL: [(&str, &str); 16] = [
        ("$context.requestId", "Jh3xKgNtoAMEbHw="),
        ("$context.requestTime", "21/Dec/2025:18:02:52 +0000"),
        ("$context.identity.sourceIp", "203.0.113.7"),
        ("$context.identity.userAgent", "node"),
        ("$context.httpMethod", "POST"),
        ("$context.routeKey", "POST /events"),
        ("$context.path", "/events"),
        ("$context.protocol", "HTTP/1.1"),
        ("$context.status", "202"),
        ("$context.responseLength", "66"),
        ("$context.responseLatency", "18"),
        ("$context.integrationLatency", "16"),
        ("$context.integrationStatus", "202"),
        ("$context.integrationErrorMessage", "-"),
        ("$context.error.message", "-"),
        ("$context.error.messageString", "-"),
    ];
    // Longest names first, so `$context.path` does not eat part of a longer name.
    let mut pairs = TYPICAL.to_vec();
    pairs.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut line = format.to_owned();
    for (name, typical) in pairs {
        line = line.replace(name, typical);
    }
    line
}
