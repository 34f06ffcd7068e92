//! template.yaml has what a production SAM application needs, read from the template itself:
//! alarms on every dead letter, queue age, function failure and API 5xx, notifying the
//! `AlarmTopicArn` topic; log groups with retention; tracing; API access logs; a bounded
//! delivery worker; queue timeouts and redrives that fit their consumers; SES events never
//! dropped; a WebSocket stage that follows its routes; raw payloads in no index.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_norway::value::TaggedValue;
use serde_norway::{Mapping, Value};

fn template() -> Value {
    let path = format!("{}/../../template.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn resources(t: &Value) -> &Mapping {
    t["Resources"].as_mapping().expect("Resources")
}

/// The resources of a type, by logical id.
fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(id, r)| (id.as_str().unwrap(), r))
        .collect()
}

/// The argument of an intrinsic written with its short tag (`!Ref X`, `!GetAtt X.Arn`).
fn intrinsic<'a>(v: &'a Value, tag: &str) -> Option<&'a Value> {
    match v {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

fn ref_to(v: &Value) -> Option<&str> {
    intrinsic(v, "Ref").and_then(Value::as_str)
}

fn get_att(v: &Value) -> Option<&str> {
    intrinsic(v, "GetAtt").and_then(Value::as_str)
}

fn functions(t: &Value) -> Vec<(&str, &Value)> {
    of_type(t, "AWS::Serverless::Function")
}

fn alarms(t: &Value) -> Vec<(&str, &Value)> {
    of_type(t, "AWS::CloudWatch::Alarm")
}

/// Alarms on `metric` whose dimension `name` is `value` (compared as the YAML value).
fn alarms_on<'a>(t: &'a Value, metric: &str, name: &str, value: &Value) -> Vec<&'a Value> {
    alarms(t)
        .into_iter()
        .map(|(_, a)| &a["Properties"])
        .filter(|p| p["MetricName"].as_str() == Some(metric))
        .filter(|p| {
            p["Dimensions"].as_sequence().is_some_and(|dims| {
                dims.iter()
                    .any(|d| d["Name"].as_str() == Some(name) && &d["Value"] == value)
            })
        })
        .collect()
}

fn tagged(tag: &str, value: Value) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: serde_norway::value::Tag::new(tag),
        value,
    }))
}

fn any_message_alarm(p: &Value) -> bool {
    p["Threshold"].as_i64() == Some(0)
        && p["ComparisonOperator"].as_str() == Some("GreaterThanThreshold")
}

/// The queues something dead-letters to: SQS redrives, asynchronous invocations' on-failure
/// destinations and EventBridge targets' dead-letter queues.
fn dead_letter_queues(t: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let arn_of = |v: &Value| get_att(v).map(|a| a.trim_end_matches(".Arn").to_owned());
    for (_, q) in of_type(t, "AWS::SQS::Queue") {
        if let Some(q) = arn_of(&q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]) {
            out.insert(q);
        }
    }
    for (_, f) in functions(t) {
        let p = &f["Properties"];
        let on_failure = &p["EventInvokeConfig"]["DestinationConfig"]["OnFailure"];
        if let Some(q) = arn_of(&on_failure["Destination"]) {
            out.insert(q);
        }
        for (_, event) in p["Events"].as_mapping().into_iter().flatten() {
            if let Some(q) = arn_of(&event["Properties"]["DeadLetterConfig"]["Arn"]) {
                out.insert(q);
            }
        }
    }
    out
}

#[test]
fn every_alarm_notifies_the_alarm_topic_when_one_is_given() {
    let t = template();
    assert_eq!(
        t["Parameters"]["AlarmTopicArn"]["Default"].as_str(),
        Some("")
    );
    let when_given = tagged(
        "If",
        Value::Sequence(vec![
            "HasAlarmTopic".into(),
            Value::Sequence(vec![tagged("Ref", "AlarmTopicArn".into())]),
            tagged("Ref", "AWS::NoValue".into()),
        ]),
    );
    let all = alarms(&t);
    assert!(all.len() > 40, "{} alarms", all.len());
    for (id, alarm) in all {
        for actions in ["AlarmActions", "OKActions"] {
            assert_eq!(alarm["Properties"][actions], when_given, "{id} {actions}");
        }
        assert_eq!(
            alarm["Properties"]["TreatMissingData"].as_str(),
            Some("notBreaching"),
            "{id}: no data (no traffic) is not an alarm"
        );
    }
}

#[test]
fn a_message_in_any_dead_letter_queue_is_an_alarm() {
    let t = template();
    let dlqs = dead_letter_queues(&t);
    assert!(
        dlqs.len() >= 3,
        "inbound, delivery and SES events at least: {dlqs:?}"
    );
    for q in dlqs {
        let name = tagged("GetAtt", format!("{q}.QueueName").into());
        let found = alarms_on(&t, "ApproximateNumberOfMessagesVisible", "QueueName", &name);
        assert!(
            found.iter().any(|p| any_message_alarm(p)),
            "no alarm on a message in {q}"
        );
    }
}

#[test]
fn the_inbound_and_delivery_queues_age_is_alarmed() {
    let t = template();
    for q in ["InboundQueue", "DeliveryQueue"] {
        let name = tagged("GetAtt", format!("{q}.QueueName").into());
        let found = alarms_on(&t, "ApproximateAgeOfOldestMessage", "QueueName", &name);
        assert_eq!(found.len(), 1, "{q}");
        assert_eq!(ref_to(&found[0]["Threshold"]), Some("QueueAgeAlarmSeconds"));
    }
}

#[test]
fn every_function_failure_and_throttle_is_alarmed() {
    let t = template();
    for (id, _) in functions(&t) {
        for metric in ["Errors", "Throttles"] {
            let found = alarms_on(&t, metric, "FunctionName", &tagged("Ref", id.into()));
            assert!(
                found.iter().any(|p| any_message_alarm(p)),
                "no {metric} alarm on {id}"
            );
        }
    }
    let api = alarms_on(&t, "5xx", "ApiId", &tagged("Ref", "HttpApi".into()));
    assert!(api.iter().any(|p| any_message_alarm(p)), "HTTP API 5xx");
}

fn retained_log_group(t: &Value, id: &str) {
    let group = &t["Resources"][id];
    assert_eq!(group["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{id}");
    assert_eq!(
        ref_to(&group["Properties"]["RetentionInDays"]),
        Some("LogRetentionDays"),
        "{id}"
    );
}

#[test]
fn every_function_logs_to_a_group_with_retention() {
    let t = template();
    assert_eq!(
        t["Parameters"]["LogRetentionDays"]["Default"].as_i64(),
        Some(30)
    );
    for (id, f) in functions(&t) {
        let group = ref_to(&f["Properties"]["LoggingConfig"]["LogGroup"])
            .unwrap_or_else(|| panic!("{id} has no log group of its own"));
        retained_log_group(&t, group);
    }
}

#[test]
fn functions_are_traced_and_apis_write_access_logs() {
    let t = template();
    assert_eq!(t["Globals"]["Function"]["Tracing"].as_str(), Some("Active"));
    let http = &t["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"];
    let group = get_att(&http["DestinationArn"]).expect("HTTP API access logs");
    retained_log_group(&t, group.trim_end_matches(".Arn"));
    assert!(http["Format"]
        .as_str()
        .unwrap()
        .contains("$context.requestId"));

    // The WebSocket stage's, unless the account has no API Gateway logging role.
    let ws = intrinsic(
        &t["Resources"]["WsStage"]["Properties"]["AccessLogSettings"],
        "If",
    )
    .expect("conditional WebSocket access logs");
    assert_eq!(ws[0].as_str(), Some("LogWebSocketAccess"));
    let group = get_att(&ws[1]["DestinationArn"]).expect("WebSocket access logs");
    retained_log_group(&t, group.trim_end_matches(".Arn"));
    assert_eq!(
        t["Parameters"]["WebSocketAccessLogging"]["Default"].as_str(),
        Some("true")
    );
}

#[test]
fn the_delivery_worker_has_a_concurrency_limit() {
    let t = template();
    let worker = &t["Resources"]["DeliveryWorkerFunction"]["Properties"];
    assert_eq!(
        ref_to(&worker["ReservedConcurrentExecutions"]),
        Some("DeliveryConcurrency")
    );
    let source = &worker["Events"]["Deliveries"]["Properties"];
    assert_eq!(
        ref_to(&source["ScalingConfig"]["MaximumConcurrency"]),
        Some("DeliveryConcurrency"),
        "pollers beyond the reserved instances would be throttled into the redrive"
    );
    assert!(t["Parameters"]["DeliveryConcurrency"]["MinValue"].as_i64() >= Some(2));
}

/// Each queue's visibility timeout is at least six times its consumer's timeout (AWS's rule
/// for Lambda consumers), and the consumer's timeout fits a batch: the records run side by
/// side, and a carrier call takes at most OMNI_CARRIER_TIMEOUT_MS.
#[test]
fn queue_timeouts_fit_their_consumers() {
    let t = template();
    let default_timeout = t["Globals"]["Function"]["Timeout"].as_u64().unwrap();
    let carrier_ms: u64 = t["Globals"]["Function"]["Environment"]["Variables"]
        ["OMNI_CARRIER_TIMEOUT_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut consumers = 0;
    for (id, f) in functions(&t) {
        let p = &f["Properties"];
        for (_, event) in p["Events"].as_mapping().into_iter().flatten() {
            if event["Type"].as_str() != Some("SQS") {
                continue;
            }
            consumers += 1;
            let timeout = p["Timeout"].as_u64().unwrap_or(default_timeout);
            let queue = get_att(&event["Properties"]["Queue"]).unwrap();
            let queue = &t["Resources"][queue.trim_end_matches(".Arn")]["Properties"];
            let visibility = queue["VisibilityTimeout"].as_u64().unwrap();
            assert!(
                visibility >= 6 * timeout,
                "{id}: {visibility} s < 6 x {timeout} s"
            );
            assert_eq!(
                event["Properties"]["FunctionResponseTypes"][0].as_str(),
                Some("ReportBatchItemFailures"),
                "{id}"
            );
            // A carrier call, storage around it, and the 2 s kept to answer.
            assert!(timeout * 1000 >= carrier_ms + 10_000, "{id}: {timeout} s");
        }
    }
    // The conversation updater, the delivery workers (the delivery queue's and the bulk
    // queue's), the WhatsApp forwarder and the event dispatcher.
    assert_eq!(consumers, 5);
    let worker = &t["Resources"]["DeliveryWorkerFunction"]["Properties"];
    assert!(
        worker["Timeout"].as_u64().unwrap() * 1000 >= 3 * carrier_ms,
        "room for a failover's second carrier call"
    );
}

/// A transient failure is retried over minutes, not seconds, before the redrive: the backoff
/// the consumers give a failed record (omni_lambda::retry_delay), summed over the receives the
/// queue allows, spans at least ten minutes.
#[test]
fn redrives_span_minutes_of_backoff() {
    let t = template();
    for (id, q) in of_type(&t, "AWS::SQS::Queue") {
        let Some(receives) = q["Properties"]["RedrivePolicy"]["maxReceiveCount"].as_u64() else {
            continue;
        };
        let span: Duration = (1..receives as u32)
            .map(|n| omni_lambda::retry_delay(Duration::from_secs(1), n))
            .sum();
        assert!(
            span >= Duration::from_secs(600),
            "{id}: {receives} receives span only {span:?}"
        );
    }
}

#[test]
fn ses_events_are_never_dropped_silently() {
    let t = template();
    let f = &t["Resources"]["SesEventsFunction"]["Properties"];
    let invoke = &f["EventInvokeConfig"];
    assert_eq!(invoke["MaximumRetryAttempts"].as_i64(), Some(2));
    let on_failure = &invoke["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"].as_str(), Some("SQS"));
    let queue = get_att(&on_failure["Destination"])
        .unwrap()
        .trim_end_matches(".Arn");
    // EventBridge's own failures to invoke go there too, through a queue policy for it.
    let rule = &f["Events"]["SesEvents"]["Properties"];
    assert_eq!(
        get_att(&rule["DeadLetterConfig"]["Arn"]),
        Some(format!("{queue}.Arn").as_str())
    );
    assert!(rule["RetryPolicy"]["MaximumRetryAttempts"].as_i64() > Some(0));
    let policy = of_type(&t, "AWS::SQS::QueuePolicy")
        .into_iter()
        .find(|(_, p)| ref_to(&p["Properties"]["Queues"][0]) == Some(queue))
        .expect("a queue policy letting EventBridge dead-letter");
    let statement = &policy.1["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(
        statement["Principal"]["Service"].as_str(),
        Some("events.amazonaws.com")
    );
    assert!(dead_letter_queues(&t).contains(queue));
}

#[test]
fn a_dashboard_shows_messages_in_out_failed_and_queue_ages() {
    let t = template();
    let dashboards = of_type(&t, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1);
    let body = intrinsic(&dashboards[0].1["Properties"]["DashboardBody"], "Sub").unwrap();
    let text = body[0].as_str().unwrap();
    for shown in [
        "NumberOfMessagesSent",
        "NumberOfMessagesDeleted",
        "ApproximateAgeOfOldestMessage",
        "${InboundDlq}",
        "${DeliveryDlq}",
        "${SesDlq}",
        "5xx",
    ] {
        assert!(text.contains(shown), "{shown}");
    }
    // The body is JSON once CloudFormation substitutes it.
    let substituted = text.replace("${AWS::Region}", "us-east-1");
    let json: serde_json::Value = serde_json::from_str(&substituted).expect("dashboard JSON");
    assert!(json["widgets"].as_array().unwrap().len() >= 3);
}

#[test]
fn the_websocket_stage_follows_its_routes_and_default_answers() {
    let t = template();
    assert!(
        of_type(&t, "AWS::ApiGatewayV2::Deployment").is_empty(),
        "a deployment resource is never redeployed when routes change"
    );
    let stage = &t["Resources"]["WsStage"]["Properties"];
    assert_eq!(stage["AutoDeploy"].as_bool(), Some(true));
    let default = &t["Resources"]["WsDefaultRoute"]["Properties"];
    assert_eq!(
        default["RouteResponseSelectionExpression"].as_str(),
        Some("$default")
    );
    let answers = of_type(&t, "AWS::ApiGatewayV2::RouteResponse")
        .into_iter()
        .any(|(_, r)| ref_to(&r["Properties"]["RouteId"]) == Some("WsDefaultRoute"));
    assert!(answers, "$default has no route response");
}

/// The table's indexes are the ones the AWS backend's code (and its test provisioning)
/// uses: raw webhook payloads are listed through a keys-only index, so their bodies are not
/// copied into gsi1 with everything else.
#[test]
fn raw_payloads_are_listed_through_a_keys_only_index() {
    let t = template();
    let indexes: Vec<(String, String)> = t["Resources"]["Table"]["Properties"]
        ["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["IndexName"].as_str().unwrap().to_owned(),
                i["Projection"]["ProjectionType"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let expected = [
        ("gsi1", "ALL"),
        ("gsi2", "ALL"),
        ("gsi3", "KEYS_ONLY"),
        ("gsi4", "ALL"),
    ];
    assert_eq!(
        indexes,
        expected.map(|(n, p)| (n.to_owned(), p.to_owned())).to_vec()
    );
}
