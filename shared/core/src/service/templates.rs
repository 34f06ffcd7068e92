//! The tenant's message templates: writing versions, the approval workflow (every step
//! audited), and turning a send's `template` into the message's text, subject and, on
//! WhatsApp, Meta's template message.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AuthScope, Caller, ServiceError, Services};
use crate::domain::{Channel, ProviderKind, TenantId};
use crate::providers::{whatsapp, Credentials, WebhookRequest};
use crate::template::Template;
use crate::templates::{
    valid_name, MetaStatus, MetaTemplateStatus, SentTemplate, Step, StoredTemplate,
    TemplateDefinition,
};

/// Largest stored template (every version together): a DynamoDB item holds 400 KB, and the
/// workflow's steps add a little to it after this check.
const MAX_TEMPLATE_BYTES: usize = 300 * 1024;

/// A send's `template` naming one of the tenant's templates:
/// `{"name", "language", "variables"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSend {
    name: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, Value>,
}

/// What a send's `template` comes to.
#[derive(Debug, Clone)]
pub(super) struct PreparedTemplate {
    /// What the message records.
    pub sent: SentTemplate,
    /// The rendered text (a stored template); none for Meta's inline form.
    pub body: Option<String>,
    /// The rendered subject, on email when the language has one.
    pub subject: Option<String>,
}

/// Whether a send's `template` names one of the tenant's templates rather than giving Meta's
/// template object inline: it has `variables`, or it is not for WhatsApp (where only Meta's
/// form existed before) and has no `components`. A stored template without variables is
/// sent on WhatsApp with `"variables": {}`.
fn is_stored_form(template: &Value, channel: Channel) -> bool {
    template.get("variables").is_some()
        || (channel != Channel::Whatsapp && template.get("components").is_none())
}

/// A send's `template` read as `T`; a refusal names the field (`template.components[0]`).
fn read<T: serde::de::DeserializeOwned>(template: Value) -> Result<T, ServiceError> {
    serde_path_to_error::deserialize(template).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ServiceError::InvalidRequest(if path == "." {
            format!("template: {inner}")
        } else {
            format!("template.{path}: {inner}")
        })
    })
}

impl Services {
    /// Stores `definition` as the next version of template `name`, a draft by `caller`.
    pub async fn put_template(
        &self,
        caller: &Caller,
        name: &str,
        definition: TemplateDefinition,
    ) -> Result<StoredTemplate, ServiceError> {
        if !valid_name(name) {
            return Err(ServiceError::InvalidRequest(
                "name: 1 to 100 lowercase letters, digits, _ or - (and not sync)".into(),
            ));
        }
        definition.validate()?;
        let tenant = &caller.tenant;
        let (template, version) = match self.templates.get_template(tenant, name).await? {
            Some(mut existing) => {
                let version = existing.push_draft(definition, caller.actor.clone(), Utc::now());
                (existing, version)
            }
            None => (
                StoredTemplate::first(name, definition, caller.actor.clone()),
                1,
            ),
        };
        // Every version lives in one stored document, and a DynamoDB item stops at 400 KB.
        let size = serde_json::to_vec(&template).map_or(usize::MAX, |d| d.len());
        if size > MAX_TEMPLATE_BYTES {
            return Err(ServiceError::InvalidRequest(format!(
                "template {name}: its versions together would take {size} bytes, more than \
                 {MAX_TEMPLATE_BYTES}; give the new text another template name"
            )));
        }
        let stored = self.templates.put_template(tenant, &template).await?;
        self.audit(
            tenant,
            &caller.actor,
            "template.put",
            Some(format!("template:{name}")),
            json!({"version": version}),
        )
        .await;
        Ok(stored)
    }

    /// Submits, approves or rejects a version of template `name` (four eyes for a decision).
    pub async fn template_step(
        &self,
        caller: &Caller,
        name: &str,
        step: Step,
    ) -> Result<StoredTemplate, ServiceError> {
        let tenant = &caller.tenant;
        let mut template = self.template(tenant, name).await?;
        let version = template.apply(&step, &caller.actor, Utc::now())?;
        let stored = self.templates.put_template(tenant, &template).await?;
        let mut details = json!({"version": version});
        if let Step::Reject(reason) = &step {
            details["reason"] = reason.trim().into();
        }
        self.audit(
            tenant,
            &caller.actor,
            step.action(),
            Some(format!("template:{name}")),
            details,
        )
        .await;
        Ok(stored)
    }

    /// A template as `GET /v1/templates/{name}` shows it ([`StoredTemplate::view`]), with
    /// Meta's status per language of the WhatsApp template it names (`whatsapp_status`).
    pub async fn template_view(
        &self,
        tenant: &TenantId,
        template: &StoredTemplate,
    ) -> Result<Value, ServiceError> {
        let mut view = template.view();
        let mapping = template
            .shown()
            .and_then(|v| v.definition.whatsapp.as_ref());
        if let Some(mapping) = mapping {
            let statuses = self.templates.meta_statuses(tenant, &mapping.name).await?;
            view["whatsapp_status"] = statuses
                .iter()
                .map(|s| (s.language.clone(), json!(s.status)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        Ok(view)
    }

    /// A template of the tenant's, or `template_not_found`.
    pub async fn template(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<StoredTemplate, ServiceError> {
        self.templates
            .get_template(tenant, name)
            .await?
            .ok_or_else(|| ServiceError::TemplateNotFound(format!("no template named {name:?}")))
    }

    /// Checks a send's `template` and renders it, before anything is stored: Meta's inline
    /// form is checked against Meta's rules; one of the tenant's templates must exist, have
    /// an approved version listing `channel`, a language for `language`, and the right
    /// variables, and on WhatsApp be approved by Meta in that language too.
    pub(super) async fn prepare_template(
        &self,
        tenant: &TenantId,
        channel: Channel,
        template: Value,
    ) -> Result<PreparedTemplate, ServiceError> {
        if !is_stored_form(&template, channel) {
            let inline: Template = read(template)?;
            if channel != Channel::Whatsapp {
                return Err(ServiceError::InvalidRequest(
                    "template: only the whatsapp channel sends templates".into(),
                ));
            }
            inline
                .validate()
                .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
            return Ok(PreparedTemplate {
                sent: SentTemplate::Inline(inline),
                body: None,
                subject: None,
            });
        }
        let send: TemplateSend = read(template)?;
        let stored = self.template(tenant, &send.name).await?;
        let version = stored.approved().ok_or_else(|| {
            ServiceError::TemplateNotApproved(format!(
                "template {:?} has no approved version",
                send.name
            ))
        })?;
        let definition = &version.definition;
        if !definition.channels.contains(&channel) {
            return Err(ServiceError::InvalidRequest(format!(
                "channel: template {:?} is not for {channel}",
                send.name
            )));
        }
        let language = definition.resolve_language(send.language.as_deref())?;
        let rendered = definition.render(language, &send.variables)?;
        let whatsapp = match channel {
            Channel::Whatsapp => {
                let meta = definition
                    .whatsapp_message(language, &rendered)
                    .ok_or_else(|| {
                        ServiceError::InvalidRequest(format!(
                            "template {:?} names no WhatsApp template",
                            send.name
                        ))
                    })?;
                // A value Meta would refuse (a line break, too long) is refused here, naming
                // the variable's place.
                meta.validate()
                    .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
                self.ensure_meta_approved(tenant, &meta).await?;
                Some(meta)
            }
            _ => None,
        };
        Ok(PreparedTemplate {
            sent: SentTemplate::Stored {
                name: send.name.clone(),
                version: version.version,
                language: language.to_owned(),
                whatsapp,
            },
            body: Some(rendered.body),
            subject: rendered.subject.filter(|_| channel == Channel::Email),
        })
    }

    /// A WhatsApp send of a stored template needs Meta's approval of that language too.
    async fn ensure_meta_approved(
        &self,
        tenant: &TenantId,
        meta: &Template,
    ) -> Result<(), ServiceError> {
        let statuses = self.templates.meta_statuses(tenant, &meta.name).await?;
        match statuses.iter().find(|s| s.language == meta.language) {
            Some(s) if s.status == MetaStatus::Approved => Ok(()),
            Some(s) => Err(ServiceError::TemplateNotApproved(format!(
                "Meta's status of WhatsApp template {:?} in {} is {}",
                meta.name,
                meta.language,
                s.status.as_str()
            ))),
            None => Err(ServiceError::TemplateNotApproved(format!(
                "Meta's approval of WhatsApp template {:?} in {} is not known yet: set the \
                 account's waba_id and POST /v1/templates/sync/whatsapp",
                meta.name, meta.language
            ))),
        }
    }
}

/// The webhook field Meta reports template status changes under.
const TEMPLATE_STATUS_FIELD: &[u8] = b"message_template_status_update";

impl Services {
    /// Reads Meta's status of every language of the tenant's WhatsApp templates through the
    /// Graph API (the account is the `waba_id` of the tenant's own WhatsApp settings) and
    /// records them; the statuses read.
    pub async fn sync_whatsapp_templates(
        &self,
        caller: &Caller,
    ) -> Result<Vec<MetaTemplateStatus>, ServiceError> {
        let tenant = &caller.tenant;
        // The tenant's own settings only: the platform's fallback account is not its.
        let creds = self
            .secrets
            .get_credentials(tenant, ProviderKind::Whatsapp)
            .await?
            .ok_or_else(|| {
                ServiceError::ChannelNotConfigured(
                    "no WhatsApp configuration for this tenant".into(),
                )
            })?;
        if !matches!(&creds, Credentials::Whatsapp(c) if c.waba_id.is_some()) {
            return Err(ServiceError::InvalidRequest(
                "waba_id: set the WhatsApp Business Account id in the tenant's WhatsApp \
                 settings first"
                    .into(),
            ));
        }
        let adapter = self
            .providers
            .get(ProviderKind::Whatsapp)
            .ok_or(ServiceError::NotFound("provider"))?;
        let statuses = adapter
            .template_statuses(&creds)
            .await
            .map_err(|e| ServiceError::Upstream(e.to_string()))?;
        for status in &statuses {
            self.templates.put_meta_status(tenant, status).await?;
        }
        self.audit(
            tenant,
            &caller.actor,
            "template.sync_whatsapp",
            None,
            json!({"statuses": statuses.len()}),
        )
        .await;
        Ok(statuses)
    }

    /// Records the template status changes a WhatsApp webhook carries, each for the tenant
    /// whose WhatsApp settings name the business account and whose app secret signed the
    /// webhook (`signed`: the bytes the signature covers, when not the body itself).
    ///
    /// These changes name no phone number, so the tenant is found among those with WhatsApp
    /// settings: they are rare (a template's review), unlike messages.
    pub(super) async fn apply_template_status_changes(
        &self,
        request: &WebhookRequest,
        signed: Option<&[u8]>,
        client: Option<std::net::IpAddr>,
    ) -> Result<(), ServiceError> {
        if !request
            .body
            .windows(TEMPLATE_STATUS_FIELD.len())
            .any(|w| w == TEMPLATE_STATUS_FIELD)
        {
            return Ok(());
        }
        let changes = whatsapp::template_status_changes(&request.body);
        let mut accounts: Vec<&str> = changes.iter().map(|c| c.waba_id.as_str()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        if accounts.is_empty() {
            return Ok(());
        }
        let tenants = self
            .secrets
            .tenants_with_provider(ProviderKind::Whatsapp)
            .await?;
        for account in accounts {
            let mut owner = None;
            for tenant in &tenants {
                let creds = self
                    .secrets
                    .get_credentials(tenant, ProviderKind::Whatsapp)
                    .await?;
                if matches!(&creds, Some(Credentials::Whatsapp(c)) if c.waba_id.as_deref() == Some(account))
                {
                    owner = creds.map(|c| (tenant.clone(), c));
                    break;
                }
            }
            let Some((tenant, creds)) = owner else {
                tracing::warn!("template status update for an account no tenant names");
                continue;
            };
            let scope = AuthScope::Webhook(ProviderKind::Whatsapp, tenant.clone());
            self.auth_allowed(client, &scope)?;
            let body = signed.unwrap_or(&request.body);
            if whatsapp::verify_signed(body, request, &creds).is_err() {
                tracing::warn!(tenant_id = %tenant, "template status webhook signature rejected");
                self.auth_failed(client, &scope).await;
                return Err(ServiceError::InvalidSignature);
            }
            for change in changes.iter().filter(|c| c.waba_id == account) {
                self.templates
                    .put_meta_status(&tenant, &change.status)
                    .await?;
            }
            tracing::info!(tenant_id = %tenant, "template statuses updated by webhook");
        }
        Ok(())
    }
}
