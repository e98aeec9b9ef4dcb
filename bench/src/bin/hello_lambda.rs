//! The cold-start baseline: a hello-world Lambda from `lambda_runtime` alone. It reads the
//! event as JSON and answers a constant, so it costs what any Rust function costs to start.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_event: LambdaEvent<Value>| async {
        Ok::<Value, Error>(json!({"statusCode": 200, "body": "hello"}))
    }))
    .await
}
