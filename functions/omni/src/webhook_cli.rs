//! `omni webhook …`: sends a carrier webhook signed exactly as the carrier would, for demos
//! and carrier-less testing. Credentials come from the tenant's configuration in the local
//! database, or from flags when the server is elsewhere.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use omni_core::domain::{EmailAddress, ProviderKind, Region, TenantId, E164};
use omni_core::ports::SecretStore;
use omni_core::providers::{
    bandwidth, bird, inteliquent, messagebird, sinch, telnyx, twilio, vonage, Credentials,
};
use omni_local::{MasterKey, SqliteBackend};
use uuid::Uuid;

/// Carrier-side commands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// An inbound message from a contact to a tenant number.
    Send(SendArgs),
    /// A Twilio status callback for a message we sent.
    Status(StatusArgs),
}

/// Carriers `omni webhook send` can impersonate.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Carrier {
    /// Twilio (form POST, X-Twilio-Signature).
    Twilio,
    /// VoIP.ms (URL callback with the tenant's secret).
    Voipms,
    /// Telnyx (JSON POST, Ed25519-signed): needs `--secret`, the base64 32-byte seed of the
    /// private key whose public half the tenant configured (Telnyx never hands its own out).
    Telnyx,
    /// Bandwidth (JSON array POST with the application's HTTP Basic callback credentials).
    Bandwidth,
    /// Sinch SMS (JSON POST, HMAC-SHA256-signed with the tenant's app secret).
    Sinch,
    /// VoiceMeUp (JSON POST with the tenant's secret in the URL); `--split` posts an MMS as
    /// VoiceMeUp does, in two halves.
    Voicemeup,
    /// Vonage Messages (JSON POST with a JWT signed HS256 with the tenant's signature secret).
    Vonage,
    /// SendGrid Inbound Parse (an email as a multipart POST with the tenant's secret in the
    /// URL); `--from` and `--to` are email addresses.
    Sendgrid,
    /// Bird Channels API (`sms.inbound` notification, HMAC-SHA256-signed with the tenant's
    /// signing key over the timestamp, the URL and the body's SHA-256).
    Bird,
    /// Inteliquent Message Broker (JSON POST; `verificationToken` = hex HMAC-SHA256 of a random
    /// `messageID` under the tenant's webhook key); several `--media` make one MMS.
    Inteliquent,
    /// Amazon SES over SNS: not impersonated. SNS signs with AWS's private key, which no
    /// tenant holds, so the command answers an error saying how to test it instead.
    Ses,
    /// MessageBird legacy REST API (an inbound SMS forwarded as a GET with the fields in the
    /// query, `MessageBird-Signature-JWT` signed with the tenant's signing key); `--media`
    /// makes it an MMS.
    Messagebird,
}

/// Why `omni webhook send ses` posts nothing.
const SES_UNSUPPORTED: &str = "SES reaches Omni through Amazon SNS, signed with AWS's own key: \
    `omni webhook send` cannot sign as AWS. Send a real email to an address of an SES receipt \
    rule with an SNS action (see README, Amazon SES), or run the e2e tests, which serve a test \
    certificate through OMNI_SNS_CERT_URL_PREFIX";

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
    /// Sign with this Twilio auth token / VoIP.ms secret instead of the stored one; for
    /// Telnyx, the base64 Ed25519 private key seed to sign with (required); for Bandwidth,
    /// the callback credentials as `user:password`; for Sinch, the app secret; for Vonage, the
    /// signature secret; for Bird and MessageBird, the signing key; for Inteliquent, the
    /// webhook key.
    #[arg(long, env = "OMNI_WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// `omni webhook send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Which carrier to impersonate.
    pub carrier: Carrier,
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
    for request in requests {
        let response = request
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

async fn twilio_token(target: &Target) -> Result<String, String> {
    if let Some(secret) = &target.secret {
        return Ok(secret.clone());
    }
    match stored_credentials(target, ProviderKind::Twilio).await? {
        Credentials::Twilio(c) => Ok(c.auth_token.expose().to_string()),
        _ => Err("stored configuration is not Twilio's".into()),
    }
}

fn number(raw: &str) -> Result<E164, String> {
    E164::parse(raw, Region::default()).map_err(|e| e.to_string())
}

fn signed_twilio_post(
    url: String,
    params: Vec<(String, String)>,
    token: &str,
) -> Result<reqwest::RequestBuilder, String> {
    let signature = twilio::signature(&url, &params, token);
    let body = serde_urlencoded::to_string(&params).map_err(|e| e.to_string())?;
    Ok(reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body))
}

/// The `secret=` a carrier that signs nothing sends back: --secret, or the stored one.
async fn url_secret(target: &Target, kind: ProviderKind) -> Result<String, String> {
    if let Some(secret) = &target.secret {
        return Ok(secret.clone());
    }
    match stored_credentials(target, kind).await? {
        Credentials::Voipms(c) => Ok(c.webhook_secret.expose().to_string()),
        Credentials::Voicemeup(c) => Ok(c.webhook_secret.expose().to_string()),
        Credentials::Sendgrid(c) => Ok(c.webhook_secret.expose().to_string()),
        _ => Err(format!("stored configuration has no {kind} webhook secret")),
    }
}

async fn build_send(args: &SendArgs) -> Result<Vec<reqwest::RequestBuilder>, String> {
    match args.carrier {
        Carrier::Sendgrid => return Ok(vec![sendgrid_post(args).await?]),
        Carrier::Ses => return Err(SES_UNSUPPORTED.into()),
        _ => {}
    }
    if !args.split {
        return Ok(vec![build_one(args).await?]);
    }
    if !matches!(args.carrier, Carrier::Voicemeup) {
        return Err("--split is VoiceMeUp's MMS form".into());
    }
    // As VoiceMeUp splits an MMS: the text with an HTML wrapper, then the media alone.
    let [media] = args.media.as_slice() else {
        return Err("--split needs exactly one --media".into());
    };
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    let sent_at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let wrapper = format!("https://clients.voicemeup.com/files/{id}.mms.html");
    let text = voicemeup_post(
        args,
        &id,
        &sent_at,
        &args.body,
        Some((&wrapper, "text/html")),
    )
    .await?;
    let media = voicemeup_post(
        args,
        &format!("{id}-media"),
        &sent_at,
        "",
        Some((media, guess_content_type(media))),
    )
    .await?;
    Ok(if args.media_first {
        vec![media, text]
    } else {
        vec![text, media]
    })
}

/// An Inbound Parse post as SendGrid makes it: the email's fields as multipart/form-data,
/// the tenant's secret in the URL.
async fn sendgrid_post(args: &SendArgs) -> Result<reqwest::RequestBuilder, String> {
    if !args.media.is_empty() {
        return Err("SendGrid posts attachments as files, which this command does not send".into());
    }
    let address = |raw: &str| EmailAddress::parse(raw).map_err(|e| e.to_string());
    let (from, to) = (address(&args.from)?, address(&args.to)?);
    let secret = url_secret(&args.target, ProviderKind::Sendgrid).await?;
    let query =
        serde_urlencoded::to_string([("secret", secret.as_str())]).map_err(|e| e.to_string())?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("<{}@omni-webhook-send>", Uuid::new_v4().simple()));
    let boundary = format!("omni{}", Uuid::new_v4().simple());
    let envelope = serde_json::json!({"to": [to.as_str()], "from": from.as_str()}).to_string();
    let fields = [
        (
            "headers",
            format!("Message-ID: {id}\nSubject: omni webhook send\n"),
        ),
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("subject", "omni webhook send".to_string()),
        ("text", args.body.clone()),
        ("envelope", envelope),
        ("attachments", "0".to_string()),
    ];
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    Ok(reqwest::Client::new()
        .post(format!(
            "{}/webhooks/sendgrid?{query}",
            base_url(&args.target)
        ))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body))
}

/// A VoiceMeUp webhook post: JSON, the tenant's secret in the URL.
async fn voicemeup_post(
    args: &SendArgs,
    hash: &str,
    sent_at: &str,
    text: &str,
    attachment: Option<(&str, &str)>,
) -> Result<reqwest::RequestBuilder, String> {
    let secret = url_secret(&args.target, ProviderKind::Voicemeup).await?;
    let query =
        serde_urlencoded::to_string([("secret", secret.as_str())]).map_err(|e| e.to_string())?;
    let digits = |raw: &str| number(raw).map(|n| n.as_str().trim_start_matches('+').to_owned());
    let mut body = serde_json::json!({
        "sms_hash": hash,
        "source_number": digits(&args.from)?,
        "destination_number": digits(&args.to)?,
        "datetime_transmission": sent_at,
        "direction": "inbound",
        "message": text,
    });
    if let Some((url, mime)) = attachment {
        body["attachment"] = url.into();
        body["attachment_mime_type"] = mime.into();
    }
    Ok(reqwest::Client::new()
        .post(format!(
            "{}/webhooks/voicemeup?{query}",
            base_url(&args.target)
        ))
        .header("content-type", "application/json")
        .body(body.to_string()))
}

async fn build_one(args: &SendArgs) -> Result<reqwest::RequestBuilder, String> {
    let from = number(&args.from)?;
    let to = number(&args.to)?;
    let base = base_url(&args.target);
    match args.carrier {
        Carrier::Twilio => {
            let sid = args
                .id
                .clone()
                .unwrap_or_else(|| format!("SM{}", Uuid::new_v4().simple()));
            let mut params = vec![
                ("MessageSid".to_string(), sid.clone()),
                ("SmsMessageSid".into(), sid.clone()),
                ("SmsSid".into(), sid),
                (
                    "AccountSid".into(),
                    "AC00000000000000000000000000000000".into(),
                ),
                ("From".into(), from.to_string()),
                ("To".into(), to.to_string()),
                ("Body".into(), args.body.clone()),
                ("NumMedia".into(), args.media.len().to_string()),
                ("NumSegments".into(), "1".into()),
                ("SmsStatus".into(), "received".into()),
                ("ApiVersion".into(), "2010-04-01".into()),
            ];
            for (i, url) in args.media.iter().enumerate() {
                params.push((format!("MediaUrl{i}"), url.clone()));
                params.push((
                    format!("MediaContentType{i}"),
                    guess_content_type(url).into(),
                ));
            }
            let token = twilio_token(&args.target).await?;
            signed_twilio_post(format!("{base}/webhooks/twilio"), params, &token)
        }
        Carrier::Voipms => {
            let secret = url_secret(&args.target, ProviderKind::Voipms).await?;
            let nanp = |n: &E164| {
                n.nanp_national()
                    .map(str::to_owned)
                    .ok_or("VoIP.ms numbers are NANP (+1) only".to_string())
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| (rand_id() % 1_000_000_000).to_string());
            let query = serde_urlencoded::to_string([
                ("secret", secret.as_str()),
                ("id", id.as_str()),
                (
                    "date",
                    &chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
                ),
                ("from", &nanp(&from)?),
                ("to", &nanp(&to)?),
                ("message", args.body.as_str()),
                ("media", &args.media.join(",")),
            ])
            .map_err(|e| e.to_string())?;
            Ok(reqwest::Client::new().get(format!("{base}/webhooks/voipms?{query}")))
        }
        Carrier::Telnyx => {
            let seed = args.target.secret.as_deref().ok_or(
                "Telnyx webhooks are signed with a private key: pass --secret <base64 Ed25519 seed>",
            )?;
            let key = telnyx::signing_key(seed)
                .ok_or("--secret must be a base64 32-byte Ed25519 seed")?;
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string());
            let body = telnyx_inbound(&id, &from, &to, &args.body, &args.media).to_string();
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let signature = telnyx::signature(&key, &timestamp, body.as_bytes());
            Ok(reqwest::Client::new()
                .post(format!("{base}/webhooks/telnyx"))
                .header("content-type", "application/json")
                .header(telnyx::TIMESTAMP_HEADER, timestamp)
                .header(telnyx::SIGNATURE_HEADER, signature)
                .body(body))
        }
        Carrier::Bandwidth => {
            let (user, password) = match &args.target.secret {
                Some(pair) => pair
                    .split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .ok_or("for Bandwidth, --secret is the callback user:password")?,
                None => match stored_credentials(&args.target, ProviderKind::Bandwidth).await? {
                    Credentials::Bandwidth(c) => (
                        c.webhook_username.clone(),
                        c.webhook_password.expose().to_string(),
                    ),
                    _ => return Err("stored configuration is not Bandwidth's".into()),
                },
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| format!("{}{}", rand_id(), Uuid::new_v4().simple()));
            let body = bandwidth_inbound(&id, &from, &to, &args.body, &args.media).to_string();
            Ok(reqwest::Client::new()
                .post(format!("{base}/webhooks/bandwidth"))
                .header("content-type", "application/json")
                .header("authorization", bandwidth::authorization(&user, &password))
                .body(body))
        }
        Carrier::Sinch => {
            let secret = match &args.target.secret {
                Some(s) => s.clone(),
                None => match stored_credentials(&args.target, ProviderKind::Sinch).await? {
                    Credentials::Sinch(c) => c.app_secret.expose().to_string(),
                    _ => return Err("stored configuration is not Sinch's".into()),
                },
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string().to_uppercase());
            let body = sinch_inbound(&id, &from, &to, &args.body, &args.media).to_string();
            let nonce = Uuid::new_v4().simple().to_string();
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let signature = sinch::signature(&secret, body.as_bytes(), &nonce, &timestamp);
            Ok(reqwest::Client::new()
                .post(format!("{base}/webhooks/sinch"))
                .header("content-type", "application/json")
                .header(sinch::SIGNATURE_HEADER, signature)
                .header(sinch::NONCE_HEADER, nonce)
                .header(sinch::TIMESTAMP_HEADER, timestamp)
                .body(body))
        }
        Carrier::Bird => {
            let key = match &args.target.secret {
                Some(s) => s.clone(),
                None => match stored_credentials(&args.target, ProviderKind::Bird).await? {
                    Credentials::Bird(c) => c.signing_key.expose().to_string(),
                    _ => return Err("stored configuration is not Bird's".into()),
                },
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string());
            let body = bird_inbound(&id, &from, &to, &args.body, &args.media)?.to_string();
            let url = format!("{base}/webhooks/bird");
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let signature = bird::signature(&key, &timestamp, &url, body.as_bytes());
            Ok(reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header(bird::SIGNATURE_HEADER, signature)
                .header(bird::TIMESTAMP_HEADER, timestamp)
                .body(body))
        }
        Carrier::Voicemeup => {
            if args.media.len() > 1 {
                return Err("VoiceMeUp carries one attachment per message".into());
            }
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            let sent_at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
            let media = args
                .media
                .first()
                .map(|m| (m.as_str(), guess_content_type(m)));
            voicemeup_post(args, &id, &sent_at, &args.body, media).await
        }
        Carrier::Vonage => {
            let secret = match &args.target.secret {
                Some(s) => s.clone(),
                None => match stored_credentials(&args.target, ProviderKind::Vonage).await? {
                    Credentials::Vonage(c) => c.signature_secret.expose().to_string(),
                    _ => return Err("stored configuration is not Vonage's".into()),
                },
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string());
            let body = vonage_inbound(&id, &from, &to, &args.body, &args.media)?.to_string();
            let authorization = vonage::callback_authorization(
                &secret,
                body.as_bytes(),
                chrono::Utc::now().timestamp(),
            )
            .ok_or("the Vonage signature secret must not be empty")?;
            Ok(reqwest::Client::new()
                .post(format!("{base}/webhooks/vonage"))
                .header("content-type", "application/json")
                .header("authorization", authorization)
                .body(body))
        }
        // Posted by sendgrid_post: its addresses are not numbers.
        Carrier::Sendgrid => Err("SendGrid takes email addresses".into()),
        Carrier::Ses => Err(SES_UNSUPPORTED.into()),
        Carrier::Inteliquent => {
            let key = match &args.target.secret {
                Some(s) => s.clone(),
                None => match stored_credentials(&args.target, ProviderKind::Inteliquent).await? {
                    Credentials::Inteliquent(c) => c.webhook_key.expose().to_string(),
                    _ => return Err("stored configuration is not Inteliquent's".into()),
                },
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            // As Inteliquent writes numbers: digits without `+`.
            let mut body = serde_json::json!({"referenceId": id, "from": from.digits(),
                "to": [to.digits()], "text": args.body, "deliveryReceipt": false});
            if !args.media.is_empty() {
                body["mediaUrls"] = args.media.clone().into();
            }
            let message_id = Uuid::new_v4().to_string();
            Ok(reqwest::Client::new()
                .post(format!("{base}/webhooks/inteliquent"))
                .header("content-type", "application/json")
                .header(
                    inteliquent::TOKEN_HEADER,
                    inteliquent::verification_token(&key, &message_id),
                )
                .header(inteliquent::MESSAGE_ID_HEADER, message_id)
                .body(body.to_string()))
        }
        Carrier::Messagebird => {
            let key = match &args.target.secret {
                Some(s) => s.clone(),
                None => match stored_credentials(&args.target, ProviderKind::MessageBird).await? {
                    Credentials::MessageBird(c) => c.signing_key.expose().to_string(),
                    _ => return Err("stored configuration is not MessageBird's".into()),
                },
            };
            let id = args
                .id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            // As MessageBird writes numbers: MSISDNs, digits without `+`.
            let mut fields = vec![
                ("id", id),
                ("recipient", to.digits().to_string()),
                ("originator", from.digits().to_string()),
                ("body", args.body.clone()),
                ("createdDatetime", chrono::Utc::now().to_rfc3339()),
            ];
            fields.extend(args.media.iter().map(|url| ("mediaUrls[]", url.clone())));
            let url =
                reqwest::Url::parse_with_params(&format!("{base}/webhooks/messagebird"), &fields)
                    .map_err(|e| format!("bad server URL: {e}"))?;
            let url = url.to_string();
            let token = messagebird::signature_jwt(&key, &url, b"", chrono::Utc::now().timestamp());
            Ok(reqwest::Client::new()
                .get(url)
                .header(messagebird::SIGNATURE_HEADER, token))
        }
    }
}

/// A `message-received` callback as Bandwidth posts it: an array of one event.
fn bandwidth_inbound(
    id: &str,
    from: &E164,
    to: &E164,
    text: &str,
    media: &[String],
) -> serde_json::Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!([{
    "type": "message-received",
    "time": now,
    "description": "Incoming message received",
    "to": to.as_str(),
    "message": {
        "id": id,
        "owner": to.as_str(),
        "time": now,
        "segmentCount": 1,
        "direction": "in",
        "to": [to.as_str()],
        "from": from.as_str(),
        "text": text,
        "media": media,
    }}])
}

/// An `sms.inbound` notification as Bird posts it: a text body, or with media an image body
/// (up to ten) whose text is the message.
fn bird_inbound(
    id: &str,
    from: &E164,
    to: &E164,
    text: &str,
    media: &[String],
) -> Result<serde_json::Value, String> {
    let body = match media {
        [] => serde_json::json!({"type": "text", "text": {"text": text}}),
        _ if media.len() > bird::MAX_IMAGES => {
            return Err(format!("Bird carries at most {} images", bird::MAX_IMAGES))
        }
        _ => {
            let images: Vec<_> = media
                .iter()
                .map(|url| serde_json::json!({"mediaUrl": url, "contentType": guess_content_type(url)}))
                .collect();
            serde_json::json!({"type": "image", "image": {"text": text, "images": images}})
        }
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(
        serde_json::json!({"service": "channels", "event": "sms.inbound", "payload": {
        "id": id,
        "sender": {"contact": {"identifierKey": "phonenumber", "identifierValue": from.as_str()}},
        "receiver": {"connector": {"identifierValue": to.as_str()}},
        "body": body, "status": "delivered", "direction": "incoming",
        "createdAt": now, "updatedAt": now}}),
    )
}

/// An `mo_text` (or, with media, `mo_media`) callback as Sinch posts it: numbers without `+`.
fn sinch_inbound(
    id: &str,
    from: &E164,
    to: &E164,
    text: &str,
    media: &[String],
) -> serde_json::Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let bare = |n: &E164| n.as_str().trim_start_matches('+').to_string();
    let (kind, body) = if media.is_empty() {
        ("mo_text", serde_json::json!(text))
    } else {
        let items: Vec<_> = media
            .iter()
            .map(|url| {
                serde_json::json!({"url": url, "content_type": guess_content_type(url),
                "status": "Uploaded", "code": 0})
            })
            .collect();
        (
            "mo_media",
            serde_json::json!({"message": text, "media": items}),
        )
    };
    serde_json::json!({"id": id, "type": kind, "from": bare(from), "to": bare(to),
        "body": body, "received_at": now})
}

/// An inbound message as Vonage posts it: SMS text, or with media an MMS image (one per
/// message) captioned with the text; numbers without `+`.
fn vonage_inbound(
    id: &str,
    from: &E164,
    to: &E164,
    text: &str,
    media: &[String],
) -> Result<serde_json::Value, String> {
    let bare = |n: &E164| n.as_str().trim_start_matches('+').to_string();
    let mut message = serde_json::json!({"message_uuid": id, "from": bare(from), "to": bare(to),
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    match media {
        [] => {
            message["channel"] = "sms".into();
            message["message_type"] = "text".into();
            message["text"] = text.into();
        }
        [url] => {
            message["channel"] = "mms".into();
            message["message_type"] = "image".into();
            message["image"] = serde_json::json!({"url": url, "caption": text});
        }
        _ => return Err("Vonage carries one image per message".into()),
    }
    Ok(message)
}

/// A `message.received` event as Telnyx posts it.
fn telnyx_inbound(
    id: &str,
    from: &E164,
    to: &E164,
    text: &str,
    media: &[String],
) -> serde_json::Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({"data": {
        "event_type": "message.received",
        "id": Uuid::new_v4().to_string(),
        "occurred_at": now,
        "record_type": "event",
        "payload": {
            "direction": "inbound",
            "id": id,
            "record_type": "message",
            "type": if media.is_empty() { "SMS" } else { "MMS" },
            "from": {"phone_number": from.as_str()},
            "to": [{"phone_number": to.as_str(), "status": "webhook_delivered"}],
            "text": text,
            "media": media.iter().map(|url| serde_json::json!({
                "url": url, "content_type": guess_content_type(url)})).collect::<Vec<_>>(),
            "received_at": now,
        }},
        "meta": {"attempt": 1}})
}

async fn build_status(args: &StatusArgs) -> Result<reqwest::RequestBuilder, String> {
    let mut params = vec![
        ("MessageSid".to_string(), args.sid.clone()),
        ("SmsSid".into(), args.sid.clone()),
        ("MessageStatus".into(), args.status.clone()),
        ("SmsStatus".into(), args.status.clone()),
        (
            "AccountSid".into(),
            "AC00000000000000000000000000000000".into(),
        ),
        ("From".into(), number(&args.from)?.to_string()),
        ("To".into(), number(&args.to)?.to_string()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    if let Some(code) = &args.error_code {
        params.push(("ErrorCode".into(), code.clone()));
    }
    let token = twilio_token(&args.target).await?;
    signed_twilio_post(
        format!("{}/webhooks/twilio/status", base_url(&args.target)),
        params,
        &token,
    )
}

fn rand_id() -> u64 {
    u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

fn guess_content_type(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else if lower.ends_with(".mp4") {
        "video/mp4"
    } else {
        "image/jpeg"
    }
}
