//! Hot paths of the inbound and status flows: webhook verify + normalise per carrier,
//! E.164 parsing, and the monotonic status merge. Run: `cargo bench -p omni-core`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use omni_core::domain::{DeliveryStatus, Region, E164};
use omni_core::providers::twilio::TwilioAdapter;
use omni_core::providers::{
    Credentials, MessagingProviderAdapter, Secret, TwilioCredentials, WebhookRequest,
};

const TWILIO_SMS: &[u8] = include_bytes!("../../../tests/fixtures/twilio_inbound_sms.form");

fn twilio(c: &mut Criterion) {
    let adapter = TwilioAdapter::new(reqwest::Client::new(), "https://api.twilio.com");
    let creds = Credentials::Twilio(TwilioCredentials {
        account_sid: "AC00000000000000000000000000000001".into(),
        auth_token: Secret::new("12345abcdef67890fedcba0987654321"),
        webhook_keys: BTreeMap::new(),
    });
    let request = WebhookRequest {
        method: "POST".into(),
        url: "https://hooks.example.com/twilio/inbound?tenant=acme".into(),
        headers: vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded; charset=UTF-8".into(),
            ),
            (
                "x-twilio-signature".into(),
                "N1MguAw7WBIfszgvFmgOICNtxTw=".into(),
            ),
        ],
        body: TWILIO_SMS.to_vec(),
    };
    assert!(adapter.verify_inbound(&request, &creds).is_ok());
    c.bench_function("twilio_verify_and_normalize", |b| {
        b.iter(|| {
            adapter.verify_inbound(black_box(&request), &creds).unwrap();
            black_box(adapter.normalize_inbound(black_box(&request)).unwrap())
        })
    });
}

fn e164(c: &mut Criterion) {
    let region = Region::default();
    // Repeated inputs hit the validation cache, as tenant numbers do in real traffic.
    c.bench_function("e164_parse_repeated", |b| {
        b.iter(|| E164::parse(black_box("(415) 555-2671"), region).unwrap())
    });
    // 10,000 distinct numbers cycle through a 4,096-entry cache: nearly every parse is a miss.
    let distinct: Vec<String> = (0..10_000).map(|i| format!("+1415555{i:04}")).collect();
    let mut next = distinct.iter().cycle();
    c.bench_function("e164_parse_cold", |b| {
        b.iter(|| E164::parse(black_box(next.next().unwrap()), region))
    });
}

fn merge(c: &mut Criterion) {
    let updates = [
        DeliveryStatus::Sent,
        DeliveryStatus::Delivered,
        DeliveryStatus::Sending,
        DeliveryStatus::Read,
    ];
    c.bench_function("status_merge_sequence", |b| {
        b.iter(|| {
            black_box(&updates)
                .iter()
                .fold(DeliveryStatus::Queued, |acc, s| acc.merge(*s))
        })
    });
}

criterion_group!(benches, twilio, e164, merge);
criterion_main!(benches);
