//! `omni webhook …`: sends a carrier webhook signed exactly as the carrier would, for demos
//! and carrier-less testing. Credentials come from the tenant's configuration in the local
//! database, or from flags when the server is elsewhere.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Subcommand};
use omni_core::domain::{ProviderKind, Region, TenantId, E164};
use omni_core::ports::SecretStore;
use omni_core::providers::{
    twilio, Credentials, SigningKey, TestInbound, TestWebhook, WebhookRequest, CARRIERS,
};
use omni_local::{MasterKey, SqliteBackend};

/// Carrier-side commands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// An inbound message from a contact to a tenant number.
    Send(SendArgs),
    /// A Twilio status callback for a message we sent.
    Status(StatusArgs),
}

/// Every carrier as a value of `omni webhook send <carrier>`, with what its `--secret` is.
fn carrier_names() -> PossibleValuesParser {
    PossibleValuesParser::new(CARRIERS.iter().map(|c| {
        PossibleValue::new(c.name()).help(match c.test_webhook {
            TestWebhook::Signer { help, .. } => help,
            TestWebhook::Unsupported(_) => "not impersonated (the command says why)",
        })
    }))
}

/// Where the server is and how to find the tenant's secrets.
#[derive(Debug, Args)]
pub struct Target {
    /// The tenant whose configuration signs the webhook.
    #[arg(long)]
    pub tenant: String,
    /// Server base URL as carriers see it.
    #[arg(long, env = "OMNI_PUBLIC_URL")]
    pub url: Option<String>,
    /// Server address, when --url is not given.
    #[arg(long, env = "OMNI_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// SQLite database holding the tenant's configuration.
    #[arg(long, env = "OMNI_DB", default_value = "omni.db")]
    pub db: PathBuf,
    /// Sign with this instead of the stored configuration, in the carrier's form (`omni
    /// webhook send --help` lists each carrier's).
    #[arg(long, env = "OMNI_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// `omni webhook send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Which carrier to impersonate.
    #[arg(value_parser = carrier_names())]
    pub carrier: String,
    #[command(flatten)]
    pub target: Target,
    /// The contact's number.
    #[arg(long)]
    pub from: String,
    /// The tenant's number.
    #[arg(long)]
    pub to: String,
    /// Message text.
    #[arg(long, default_value = "")]
    pub body: String,
    /// Media URL (repeatable).
    #[arg(long)]
    pub media: Vec<String>,
    /// Carrier message id (random when absent; reuse one to simulate a redelivery).
    #[arg(long)]
    pub id: Option<String>,
    /// VoiceMeUp only: post the MMS (one --media) as two webhooks, the text with an
    /// `.mms.html` wrapper then the media, as VoiceMeUp splits it; the media half's id is
    /// the text half's with `-media` appended.
    #[arg(long)]
    pub split: bool,
    /// With --split: post the media half first.
    #[arg(long, requires = "split")]
    pub media_first: bool,
}

/// `omni webhook status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    /// The Twilio MessageSid of our message.
    #[arg(long)]
    pub sid: String,
    /// Twilio status word: sent, delivered, undelivered, failed, read.
    #[arg(long)]
    pub status: String,
    /// The tenant number the message was sent from.
    #[arg(long)]
    pub from: String,
    /// The contact.
    #[arg(long)]
    pub to: String,
    /// Twilio ErrorCode, for failed/undelivered.
    #[arg(long)]
    pub error_code: Option<String>,
}

/// Runs a webhook command and prints the server's answer to each request it makes.
pub async fn run(command: WebhookCommand) -> Result<(), String> {
    let requests = match &command {
        WebhookCommand::Send(args) => build_send(args).await?,
        WebhookCommand::Status(args) => vec![build_status(args).await?],
    };
    let http = reqwest::Client::new();
    for request in requests {
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
        let response = request
            .headers
            .iter()
            .fold(http.request(method, &request.url), |r, (name, value)| {
                r.header(name, value)
            })
            .body(request.body)
            .send()
            .await
            .map_err(|e| format!("cannot reach the server: {e}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        println!("{} {}", status.as_u16(), body);
        if !status.is_success() {
            return Err(format!("the server answered {status}"));
        }
    }
    Ok(())
}

fn base_url(target: &Target) -> String {
    target
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", target.addr))
        .trim_end_matches('/')
        .to_string()
}

async fn stored_credentials(target: &Target, kind: ProviderKind) -> Result<Credentials, String> {
    let tenant = TenantId::parse(&target.tenant).map_err(|e| e.to_string())?;
    let key = MasterKey::from_env_or_file(&target.db).map_err(|e| format!("master key: {e}"))?;
    let db = SqliteBackend::open(&target.db, key)
        .map_err(|e| format!("database {}: {e}", target.db.display()))?;
    db.get_credentials(&tenant, kind)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "tenant {tenant} has no {kind} configuration in {} (or pass --secret)",
                target.db.display()
            )
        })
}

/// The requests the carrier would make for the message, signed by its module's signer with
/// `--secret` or the tenant's stored configuration.
async fn build_send(args: &SendArgs) -> Result<Vec<WebhookRequest>, String> {
    let carrier = CARRIERS
        .iter()
        .find(|c| c.name() == args.carrier)
        .ok_or_else(|| format!("unknown carrier {}", args.carrier))?;
    let sign = match carrier.test_webhook {
        TestWebhook::Signer { sign, .. } => sign,
        TestWebhook::Unsupported(why) => return Err(why.into()),
    };
    let message = TestInbound {
        base_url: base_url(&args.target),
        from: args.from.clone(),
        to: args.to.clone(),
        body: args.body.clone(),
        media: args.media.clone(),
        id: args.id.clone(),
        split: args.split.then_some(args.media_first),
    };
    match &args.target.secret {
        Some(secret) => sign(&message, SigningKey::Given(secret)),
        None => {
            let stored = stored_credentials(&args.target, carrier.kind).await?;
            sign(&message, SigningKey::Stored(&stored))
        }
    }
}

/// A Twilio status callback, signed with `--secret` or the stored auth token.
async fn build_status(args: &StatusArgs) -> Result<WebhookRequest, String> {
    let number = |raw: &str| E164::parse(raw, Region::default()).map_err(|e| e.to_string());
    let token = match &args.target.secret {
        Some(secret) => secret.clone(),
        None => match stored_credentials(&args.target, ProviderKind::Twilio).await? {
            Credentials::Twilio(c) => c.auth_token.expose().to_string(),
            _ => return Err("stored configuration is not Twilio's".into()),
        },
    };
    twilio::test_status_callback(
        &base_url(&args.target),
        &args.sid,
        &args.status,
        (&number(&args.from)?, &number(&args.to)?),
        args.error_code.as_deref(),
        &token,
    )
}
