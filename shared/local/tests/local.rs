//! Behaviour of the SQLite backend beyond the shared suite: exact counts under concurrency,
//! durability across reopening, encryption at rest, the key file, and the job queue.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use omni_conformance::{new_number, new_tenant_id};
use omni_core::domain::{
    Address, Channel, InboundMessage, ProviderKind, Region, TenantId, WebhookEvent,
};
use omni_core::model::{NewOutbound, Tenant};
use omni_core::ports::{Job, MessageStore, Queue, SecretStore, TenantStore};
use omni_core::providers::{Credentials, Secret, TwilioCredentials};
use omni_local::{MasterKey, SqliteBackend, MASTER_KEY_ENV};
use uuid::Uuid;

const TOKEN: &str = "tok-find-me-in-the-file-7f3a9c";

fn twilio() -> Credentials {
    Credentials::Twilio(TwilioCredentials {
        account_sid: format!("AC{}", Uuid::new_v4().simple()),
        auth_token: Secret::new(TOKEN),
        webhook_keys: Default::default(),
    })
}

fn deliver(tenant: &TenantId, message_id: Uuid) -> Job {
    Job::Deliver {
        tenant_id: tenant.clone(),
        message_id,
        priority: Default::default(),
        slot: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inbound_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("omni.db"), MasterKey::generate()).unwrap();
    let tenant = new_tenant_id("t");
    let (contact, ours) = (new_number(), new_number());
    // 200 distinct messages, each delivered twice at once: redeliveries must not count.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let m = InboundMessage {
            id: Uuid::now_v7(),
            provider: ProviderKind::Twilio,
            provider_message_id: format!("SM{i}"),
            channel: Channel::Sms,
            from: contact.clone(),
            to: ours.clone(),
            body: Some(format!("msg {i}")),
            media: Vec::new(),
            profile_name: None,
            received_at: Utc::now(),
            auto_submitted: false,
        };
        for copy in 0..2 {
            let (b, t) = (backend.clone(), tenant.clone());
            let m = InboundMessage {
                id: if copy == 0 { m.id } else { Uuid::now_v7() },
                ..m.clone()
            };
            tasks.push(tokio::spawn(async move { b.apply_inbound(&t, &m).await }));
        }
    }
    let mut applied = 0;
    let mut conversation = None;
    for task in tasks {
        if let Some((_, c)) = task.await.unwrap().unwrap() {
            applied += 1;
            conversation = Some(c.id);
        }
    }
    assert_eq!(applied, 200);
    let conv = backend
        .get_conversation(&tenant, conversation.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conv.unread_count, 200);
    let page = backend
        .list_messages(&tenant, conv.id, 500, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 200);
    assert_eq!(
        backend
            .list_conversations(&tenant, 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.db");
    let key = MasterKey::generate();
    let tenant = Tenant {
        id: new_tenant_id("t"),
        name: "PSAP".into(),
        default_region: Region::default(),
        help_text: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        fallback: Default::default(),
    };
    let out = NewOutbound {
        id: Uuid::now_v7(),
        channel: Channel::Sms,
        from: new_number(),
        to: new_number(),
        body: Some("kept".into()),
        media: Vec::new(),
        template: None,
        subject: None,
        idempotency_key: Some("k".into()),
        at: Utc::now(),
        sent_by: None,
        priority: Default::default(),
        send_at: None,
        fallback: Vec::new(),
    };
    let message = {
        let b = SqliteBackend::open(&path, key.clone()).unwrap();
        b.put_tenant(&tenant).await.unwrap();
        b.put_credentials(&tenant.id, &twilio()).await.unwrap();
        let (m, _) = b.create_outbound(&tenant.id, &out).await.unwrap();
        b.enqueue(&deliver(&tenant.id, m.id), Duration::ZERO)
            .await
            .unwrap();
        m
    };
    let b = SqliteBackend::open(&path, key).unwrap();
    assert_eq!(
        b.get_tenant(&tenant.id).await.unwrap(),
        Some(tenant.clone())
    );
    assert!(b
        .get_credentials(&tenant.id, ProviderKind::Twilio)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        b.get_message(&tenant.id, message.id).await.unwrap(),
        Some(message.clone())
    );
    assert!(
        !b.create_outbound(&tenant.id, &out).await.unwrap().1,
        "idempotency kept"
    );
    let jobs = b.lease_jobs(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job, deliver(&tenant.id, message.id));
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path)
        .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

#[tokio::test]
async fn credentials_are_encrypted_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.db");
    let tenant = new_tenant_id("t");
    {
        let b = SqliteBackend::open(&path, MasterKey::generate()).unwrap();
        b.put_credentials(&tenant, &twilio()).await.unwrap();
        // While open, the row may sit in the WAL: check every file of the database.
        for file in ["omni.db", "omni.db-wal", "omni.db-shm"] {
            assert!(
                !file_contains(&dir.path().join(file), TOKEN.as_bytes()),
                "{file}"
            );
        }
    }
    assert!(!file_contains(&path, TOKEN.as_bytes()));
    assert!(
        file_contains(&path, tenant.as_str().as_bytes()),
        "the row is there"
    );

    // Another key cannot read them, and says so without panicking or leaking.
    let b = SqliteBackend::open(&path, MasterKey::generate()).unwrap();
    let err = b
        .get_credentials(&tenant, ProviderKind::Twilio)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("could not be decrypted") && !err.contains(TOKEN),
        "{err}"
    );
}

#[tokio::test]
async fn the_key_file_is_created_owner_only_and_reused() {
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        // The environment decides the key; there is no file to check.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.db");
    let key_path = MasterKey::key_path(&path);
    assert_eq!(key_path, dir.path().join("omni.db.key"));
    let tenant = new_tenant_id("t");
    {
        let key = MasterKey::from_env_or_file(&path).unwrap();
        let b = SqliteBackend::open(&path, key).unwrap();
        b.put_credentials(&tenant, &twilio()).await.unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let written = std::fs::read_to_string(&key_path).unwrap();
    // The second start reads the same key: the credentials still decrypt.
    let b = SqliteBackend::open(&path, MasterKey::from_env_or_file(&path).unwrap()).unwrap();
    assert_eq!(
        b.get_credentials(&tenant, ProviderKind::Twilio)
            .await
            .unwrap()
            .map(|c| c.kind()),
        Some(ProviderKind::Twilio)
    );
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        written,
        "never rewritten"
    );
    assert!(MasterKey::from_base64(&written).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lease_ack_retry_and_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("omni.db"), MasterKey::generate()).unwrap();
    let tenant = new_tenant_id("t");
    let (now_job, later_job) = (
        deliver(&tenant, Uuid::now_v7()),
        deliver(&tenant, Uuid::now_v7()),
    );

    let notify = b.job_notify();
    let woke = tokio::spawn(async move { notify.notified().await });
    b.enqueue(&now_job, Duration::ZERO).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woke)
        .await
        .expect("enqueue wakes the runner")
        .unwrap();
    b.enqueue(&later_job, Duration::from_secs(3600))
        .await
        .unwrap();

    let visibility = Duration::from_secs(30);
    let leased = b.lease_jobs(10, visibility).await.unwrap();
    assert_eq!(leased.len(), 1, "the delayed job is not visible yet");
    assert_eq!((&leased[0].job, leased[0].attempts), (&now_job, 1));
    assert!(
        b.lease_jobs(10, visibility).await.unwrap().is_empty(),
        "leased jobs are hidden"
    );

    assert!(b.retry_job(leased[0].id, Duration::ZERO).await.unwrap());
    let again = b.lease_jobs(10, visibility).await.unwrap();
    assert_eq!((again[0].id, again[0].attempts), (leased[0].id, 2));
    assert!(b.ack_job(again[0].id).await.unwrap());
    assert!(!b.ack_job(again[0].id).await.unwrap());

    let poison = deliver(&tenant, Uuid::now_v7());
    b.enqueue(&poison, Duration::ZERO).await.unwrap();
    let p = b.lease_jobs(10, visibility).await.unwrap();
    assert!(b
        .dead_letter_job(p[0].id, "retry budget exhausted")
        .await
        .unwrap());
    assert!(!b.dead_letter_job(p[0].id, "twice").await.unwrap());
    b.dead_letter(&now_job, "permanent: invalid number")
        .await
        .unwrap();
    assert_eq!(
        b.dead_letters().await.unwrap(),
        vec![
            (poison, "retry budget exhausted".to_string()),
            (now_job, "permanent: invalid number".to_string()),
        ]
    );
    assert!(b.lease_jobs(10, visibility).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leasers_never_share_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("omni.db"), MasterKey::generate()).unwrap();
    let tenant = new_tenant_id("t");
    for _ in 0..40 {
        b.enqueue(&deliver(&tenant, Uuid::now_v7()), Duration::ZERO)
            .await
            .unwrap();
    }
    let leasers: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.lease_jobs(15, Duration::from_secs(30)).await })
        })
        .collect();
    let mut ids = Vec::new();
    for l in leasers {
        ids.extend(l.await.unwrap().unwrap().into_iter().map(|j| j.id));
    }
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (40, 40));
}

#[tokio::test]
async fn a_message_with_a_pending_deliver_job_is_not_stranded() {
    let b = SqliteBackend::open_in_memory(MasterKey::generate()).unwrap();
    let tenant = new_tenant_id("t");
    let old = Utc::now() - TimeDelta::minutes(10);
    let (m, _) = b
        .create_outbound(
            &tenant,
            &NewOutbound {
                id: Uuid::now_v7(),
                channel: Channel::Sms,
                from: new_number(),
                to: new_number(),
                body: None,
                media: Vec::new(),
                template: None,
                subject: None,
                idempotency_key: None,
                at: old,
                sent_by: None,
                priority: Default::default(),
                send_at: None,
                fallback: Vec::new(),
            },
        )
        .await
        .unwrap();
    let before = Utc::now() - TimeDelta::minutes(1);
    let stranded = || b.stranded_outbound(before, 100);
    assert_eq!(stranded().await.unwrap(), vec![(tenant.clone(), m.id)]);
    b.enqueue(&deliver(&tenant, m.id), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        stranded().await.unwrap().is_empty(),
        "queued for the worker"
    );
    let job = b
        .lease_jobs(1, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    assert!(
        stranded().await.unwrap().is_empty(),
        "a worker holds the job"
    );
    b.ack_job(job.id).await.unwrap();
    assert_eq!(
        stranded().await.unwrap(),
        vec![(tenant, m.id)],
        "handed over, never sent"
    );
}

/// A backend on a new database file, with a connection of its own to the same file (to
/// write what the backend never would), and the folder that holds them.
fn on_file(sql: &str) -> (SqliteBackend, rusqlite::Connection, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.db");
    let b = SqliteBackend::open(&path, MasterKey::generate()).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(sql).unwrap();
    (b, raw, dir)
}

#[tokio::test]
async fn an_undecodable_job_is_dead_lettered_not_retried_forever() {
    let (b, raw, _dir) = on_file(
        "INSERT INTO jobs (payload, visible_at_ms, created_at) VALUES ('{\"job\":\"fax\"}', 0, '')",
    );
    assert!(b
        .lease_jobs(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    assert!(b
        .lease_jobs(10, Duration::from_secs(0))
        .await
        .unwrap()
        .is_empty());
    let (jobs, dead): (i64, i64) = raw
        .query_row(
            "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM dead_letters)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((jobs, dead), (0, 1));
}

fn inbound_job(tenant: &TenantId, sid: &str, from: &Address, to: &Address, body: &str) -> Job {
    Job::Inbound {
        tenant_id: tenant.clone(),
        event: WebhookEvent::Message(InboundMessage {
            id: Uuid::now_v7(),
            provider: ProviderKind::Twilio,
            provider_message_id: sid.into(),
            channel: Channel::Sms,
            from: from.clone(),
            to: to.clone(),
            body: Some(body.into()),
            media: Vec::new(),
            profile_name: None,
            received_at: Utc::now(),
            auto_submitted: false,
        }),
    }
}

/// What the local runner does with a group of jobs: plain inbound messages applied and gone
/// in one transaction (a redelivery gone with nothing applied), every other job leased.
#[tokio::test]
async fn take_jobs_applies_plain_inbound_messages_and_leases_the_rest() {
    let b = SqliteBackend::open_in_memory(MasterKey::generate()).unwrap();
    let tenant = new_tenant_id("t");
    let (contact, other, ours) = (new_number(), new_number(), new_number());
    let first = inbound_job(&tenant, "SM1", &contact, &ours, "smoke on 5th");
    let second = inbound_job(&tenant, "SM2", &contact, &ours, "now on 6th");
    let again = inbound_job(&tenant, "SM1", &contact, &ours, "smoke on 5th");
    let stop = inbound_job(&tenant, "SM3", &other, &ours, "STOP");
    let send = deliver(&tenant, Uuid::now_v7());
    for job in [&first, &second, &again, &stop, &send] {
        b.enqueue(job, Duration::ZERO).await.unwrap();
    }
    let plain = |m: &InboundMessage| m.body.as_deref() != Some("STOP");
    let visibility = Duration::from_secs(30);
    let taken = b.take_jobs(10, visibility, plain).await.unwrap();

    let applied: Vec<_> = taken
        .applied
        .iter()
        .map(|a| {
            let last = a.conversation.last_message.as_ref().unwrap();
            (
                a.message.body.clone().unwrap(),
                a.conversation.unread_count,
                last.id == a.message.id,
            )
        })
        .collect();
    assert_eq!(
        applied,
        vec![
            ("smoke on 5th".into(), 1, true),
            ("now on 6th".into(), 2, true)
        ]
    );
    let leased: Vec<_> = taken.leased.iter().map(|l| (&l.job, l.attempts)).collect();
    assert_eq!(leased, vec![(&stop, 1), (&send, 1)]);
    assert!(
        b.lease_jobs(10, visibility).await.unwrap().is_empty(),
        "the rest is leased"
    );
    for l in &taken.leased {
        assert!(b.ack_job(l.id).await.unwrap());
    }
    assert!(b
        .take_jobs(10, Duration::ZERO, plain)
        .await
        .unwrap()
        .leased
        .is_empty());

    let conversation = &taken.applied[1].conversation;
    let stored = b
        .get_conversation(&tenant, conversation.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&stored, conversation, "pushed as stored");
    let messages = b
        .list_messages(&tenant, conversation.id, 10, None)
        .await
        .unwrap();
    assert_eq!(messages.items.len(), 2);
    assert_eq!(
        messages.items[0], taken.applied[1].message,
        "pushed as stored"
    );
    assert!(!conversation.opted_out);

    // The conversation returned by the apply says whether the contact opted out.
    b.set_opt_out(&tenant, &contact, true).await.unwrap();
    let later = inbound_job(&tenant, "SM4", &contact, &ours, "still there?");
    b.enqueue(&later, Duration::ZERO).await.unwrap();
    let taken = b.take_jobs(10, visibility, plain).await.unwrap();
    assert!(taken.applied[0].conversation.opted_out);
    assert_eq!(taken.applied[0].conversation.unread_count, 3);
}

/// A group that fails anywhere leaves the queue as it was, so the runner can lease the same
/// jobs one by one, where each fails alone.
#[tokio::test]
async fn a_failing_group_leaves_its_jobs_queued() {
    let (b, _raw, _dir) = on_file(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poison'); END;",
    );
    let tenant = new_tenant_id("t");
    let (contact, ours) = (new_number(), new_number());
    let jobs = [
        inbound_job(&tenant, "SM1", &contact, &ours, "fine"),
        inbound_job(&tenant, "SM2", &contact, &ours, "poison"),
        inbound_job(&tenant, "SM3", &contact, &ours, "fine too"),
    ];
    for job in &jobs {
        b.enqueue(job, Duration::ZERO).await.unwrap();
    }
    assert!(b
        .take_jobs(10, Duration::from_secs(30), |_| true)
        .await
        .is_err());
    let leased = b.lease_jobs(10, Duration::from_secs(30)).await.unwrap();
    let leased: Vec<_> = leased.iter().map(|l| (&l.job, l.attempts)).collect();
    assert_eq!(leased, jobs.iter().map(|j| (j, 1)).collect::<Vec<_>>());
    let page = b.list_conversations(&tenant, 10, None).await.unwrap();
    assert!(page.items.is_empty(), "nothing of the group was applied");
}

#[test]
fn backend_and_key_debug_output_hides_secrets() {
    let key = MasterKey::generate();
    assert_eq!(format!("{key:?}"), "MasterKey(***)");
    let b = SqliteBackend::open_in_memory(key).unwrap();
    assert!(!format!("{b:?}").contains("MasterKey("));
}

#[tokio::test]
async fn a_restart_releases_leased_jobs_but_keeps_backoff_delays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.db");
    let key = MasterKey::generate();
    let b = SqliteBackend::open(&path, key.clone()).unwrap();
    let tenant = new_tenant_id("t");
    let (held, delayed) = (
        deliver(&tenant, Uuid::now_v7()),
        deliver(&tenant, Uuid::now_v7()),
    );
    b.enqueue(&held, Duration::ZERO).await.unwrap();
    b.enqueue(&delayed, Duration::from_secs(3600))
        .await
        .unwrap();
    let leased = b.lease_jobs(10, Duration::from_secs(600)).await.unwrap();
    assert_eq!(leased.len(), 1, "only the due job is leased");
    assert!(
        b.lease_jobs(10, Duration::from_secs(600))
            .await
            .unwrap()
            .is_empty(),
        "held by the lease"
    );
    drop(b);

    let b = SqliteBackend::open(&path, key).unwrap();
    let (jobs, _claims) = b.recover_after_restart().await.unwrap();
    assert_eq!(jobs, 1);
    let again = b.lease_jobs(10, Duration::from_secs(600)).await.unwrap();
    assert_eq!(again.len(), 1, "the dead process's lease is released");
    assert_eq!(again[0].job, held);
    assert_eq!(again[0].attempts, 2);
}

/// The database, its WAL and its shared-memory file hold contacts' numbers and texts: owner
/// only, whatever the umask (they used to be 0644 under umask 022), and files an earlier
/// version left readable are tightened at open.
#[cfg(unix)]
#[tokio::test]
async fn database_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("omni.db");
    let mode = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", path.display()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    {
        let backend = SqliteBackend::open(&path, MasterKey::generate()).unwrap();
        let tenant = Tenant {
            id: new_tenant_id("t"),
            name: "PSAP".into(),
            default_region: Region::default(),
            help_text: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            fallback: Default::default(),
        };
        backend.put_tenant(&tenant).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "omni.db{suffix}");
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _backend = SqliteBackend::open(&path, MasterKey::generate()).unwrap();
    assert_eq!(mode(""), 0o600);
}
