//! `omni serve --demo`: a ready-to-use tenant on the simulator carrier.

use std::collections::BTreeMap;

use chrono::Utc;
use omni_core::domain::{Address, Channel, ProviderKind, Region, TenantId};
use omni_core::model::{NumberRoute, Tenant};
use omni_core::providers::{Credentials, Secret, TwilioCredentials, VoipmsCredentials};
use omni_core::service::Services;
use omni_core::team::Role;
use rand::Rng;

/// The demo tenant's id.
pub const DEMO_TENANT: &str = "demo";
/// The demo tenant's admin user.
const DEMO_EMAIL: &str = "admin@demo.example";
/// The demo tenant's number (NANP test range).
pub const DEMO_NUMBER: &str = "+15555550100";

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:x}", rand::thread_rng().gen_range(0..16u8)))
        .collect()
}

/// Seeds (or refreshes) the demo tenant and prints how to use it.
pub async fn seed(
    services: &Services,
    public_url: &str,
    db: &std::path::Path,
    admin_token: &str,
) -> Result<(), String> {
    let err = |e: omni_core::ports::StoreError| e.to_string();
    let tenant_id = TenantId::parse(DEMO_TENANT).map_err(|e| e.to_string())?;
    let now = Utc::now();
    services
        .tenants
        .put_tenant(&Tenant {
            id: tenant_id.clone(),
            name: "Demo PSAP".into(),
            default_region: Region::default(),
            help_text: Some(
                "Demo PSAP text line. Reply STOP to opt out. In an emergency call 911.".into(),
            ),
            created_at: now,
            updated_at: now,
            fallback: Default::default(),
        })
        .await
        .map_err(err)?;
    services
        .secrets
        .put_credentials(&tenant_id, &Credentials::Simulator)
        .await
        .map_err(err)?;
    // Inbound demo traffic is signed as Twilio and VoIP.ms sign it, with per-database secrets.
    if services
        .secrets
        .get_credentials(&tenant_id, ProviderKind::Twilio)
        .await
        .map_err(err)?
        .is_none()
    {
        let twilio = Credentials::Twilio(TwilioCredentials {
            account_sid: format!("AC{}", random_hex(32)),
            auth_token: Secret::new(random_hex(32)),
            webhook_keys: BTreeMap::new(),
        });
        services
            .secrets
            .put_credentials(&tenant_id, &twilio)
            .await
            .map_err(err)?;
    }
    if services
        .secrets
        .get_credentials(&tenant_id, ProviderKind::Voipms)
        .await
        .map_err(err)?
        .is_none()
    {
        let voipms = Credentials::Voipms(VoipmsCredentials {
            api_username: "demo@example.org".into(),
            api_password: Secret::new(random_hex(24)),
            webhook_secret: Secret::new(random_hex(24)),
        });
        services
            .secrets
            .put_credentials(&tenant_id, &voipms)
            .await
            .map_err(err)?;
    }
    let number = Address::from_stored(DEMO_NUMBER).map_err(|e| e.to_string())?;
    let route = NumberRoute {
        number,
        tenant_id: tenant_id.clone(),
        provider: ProviderKind::Simulator,
        channels: vec![Channel::Sms, Channel::Mms, Channel::Whatsapp, Channel::Rcs],
        updated_at: now,
        max_per_second: None,
    };
    services.tenants.put_number(&route).await.map_err(err)?;
    let api_key = services
        .issue_api_key(&tenant_id, Some("demo".into()), Role::Admin)
        .await
        .map_err(|e| e.to_string())?
        .key;
    let console_user = demo_user(services).await?;

    println!(
        "\n=== Omni demo ===\n\
         tenant: {DEMO_TENANT}   number: {DEMO_NUMBER} (simulator carrier)\n\
         demo API key (shown once): {api_key}\n\
         console: {public_url}/  {console_user}\n\n\
         Send a message:\n  curl -s -X POST {public_url}/v1/messages -H 'Authorization: Bearer {api_key}' \\\n    -H 'Content-Type: application/json' -d '{{\"channel\":\"sms\",\"to\":\"+15555550123\",\"body\":\"Units are on the way\"}}'\n\n\
         Receive one (signed as Twilio would sign it):\n  cargo run -q -p omni -- webhook send twilio --tenant {DEMO_TENANT} --from +15555550123 --to {DEMO_NUMBER} --body 'Smoke on 5th street' \\\n    --url {public_url} --db {db}\n\n\
         List conversations:\n  curl -s {public_url}/v1/conversations -H 'Authorization: Bearer {api_key}'\n\n\
         Watch live events:  websocat '{ws}/v1/ws?token={api_key}'\n\
         Admin API:  curl -s -X PUT {public_url}/v1/admin/tenants/north -H \"Authorization: Bearer {admin_token}\" -H 'Content-Type: application/json' -d '{{\"name\":\"North County PSAP\"}}'\n",
        ws = public_url.replacen("http", "ws", 1),
        db = db.display(),
    );
    Ok(())
}

/// The demo's admin user, with a random password shown once when it is created; how to sign
/// in to the console with it.
async fn demo_user(services: &Services) -> Result<String, String> {
    let tenant = TenantId::parse(DEMO_TENANT).map_err(|e| e.to_string())?;
    let err = |e: omni_core::service::ServiceError| e.to_string();
    if services
        .team
        .user_by_email(&tenant, DEMO_EMAIL)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(format!(
            "sign in as {DEMO_EMAIL} (its password was shown when it was created)"
        ));
    }
    let by = omni_core::team::Actor::platform();
    let (_, invite) = services
        .invite_user(&tenant, DEMO_EMAIL, "Demo admin", Role::Admin, &by)
        .await
        .map_err(err)?;
    let password = random_hex(16);
    services
        .accept_invite(&invite, &password)
        .await
        .map_err(err)?;
    Ok(format!(
        "tenant {DEMO_TENANT}, {DEMO_EMAIL}, password (shown once) {password}"
    ))
}
