//! A tenant's automatic replies: outside business hours, a greeting for a new conversation,
//! and keyword rules, at most one per conversation per cooldown. Pure rules here; the
//! updater applies them after an inbound message is stored.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// `PUT /v1/admin/tenants/{t}/auto-replies`: every field optional, `PUT` replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoReplies {
    /// When the centre is open; outside, `outside_hours_reply` answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    /// The reply outside business hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_hours_reply: Option<Reply>,
    /// The reply to a conversation's first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<Reply>,
    /// Replies to keywords (STOP, START and HELP keep their own meaning first).
    #[serde(default)]
    pub keyword_rules: Vec<KeywordRule>,
    /// At most one auto-reply per conversation within this many minutes.
    #[serde(default = "default_cooldown")]
    pub cooldown_minutes: u32,
}

fn default_cooldown() -> u32 {
    60
}

/// Opening hours in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// An IANA zone, e.g. `America/Toronto`.
    pub timezone: String,
    /// Open ranges per day (`mon` … `sun`), `["08:00", "17:00"]` each, end excluded; a day
    /// without hours is closed.
    #[serde(default)]
    pub hours: BTreeMap<Day, Vec<[String; 2]>>,
    /// Closed all day (local dates).
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
}

/// A day of the week as the settings name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A reply: a body, or an approved template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// The text.
    Body(String),
    /// `{"template": {"name", "language", "variables"}}`.
    Template {
        /// The template to render.
        template: TemplateReply,
    },
}

/// A template named by a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateReply {
    /// The template's name.
    pub name: String,
    /// The language wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Its variables.
    #[serde(default)]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// How a keyword rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeywordMatch {
    /// The whole trimmed body is the keyword.
    Exact,
    /// The body contains the keyword.
    Contains,
}

/// A keyword and its reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordRule {
    /// Exact or contains; both ignore case.
    #[serde(rename = "match")]
    pub matching: KeywordMatch,
    /// The keyword.
    pub keyword: String,
    /// What to answer.
    pub reply: Reply,
}

/// Why an auto-reply is sent, as the message's `sent_by` and the audit log say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A keyword rule matched.
    Keyword,
    /// The message came outside business hours.
    OutsideHours,
    /// The conversation's first message.
    Greeting,
}

impl Trigger {
    /// `keyword`, `outside_hours` or `greeting`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Keyword => "keyword",
            Trigger::OutsideHours => "outside_hours",
            Trigger::Greeting => "greeting",
        }
    }
}

/// Longest reply body: ten SMS segments.
const MAX_REPLY: usize = 1600;

impl AutoReplies {
    /// Checks the settings; the message names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(hours) = &self.business_hours {
            hours.zone()?;
            for (day, ranges) in &hours.hours {
                for range in ranges {
                    let (start, end) = parse_range(range)
                        .map_err(|e| format!("business_hours.hours.{}: {e}", day_name(*day)))?;
                    if start >= end {
                        return Err(format!(
                            "business_hours.hours.{}: {} is not before {}",
                            day_name(*day),
                            range[0],
                            range[1]
                        ));
                    }
                }
            }
        }
        let replies = [
            ("outside_hours_reply", self.outside_hours_reply.as_ref()),
            ("greeting", self.greeting.as_ref()),
        ];
        for (field, reply) in replies {
            if let Some(reply) = reply {
                reply.validate().map_err(|e| format!("{field}: {e}"))?;
            }
        }
        if self.outside_hours_reply.is_some() && self.business_hours.is_none() {
            return Err("outside_hours_reply needs business_hours".into());
        }
        for (i, rule) in self.keyword_rules.iter().enumerate() {
            if rule.keyword.trim().is_empty() {
                return Err(format!("keyword_rules[{i}].keyword is empty"));
            }
            rule.reply
                .validate()
                .map_err(|e| format!("keyword_rules[{i}].reply: {e}"))?;
        }
        if self.cooldown_minutes > 7 * 24 * 60 {
            return Err("cooldown_minutes is at most a week (10080)".into());
        }
        Ok(())
    }

    /// Every reply the settings hold.
    pub fn replies(&self) -> impl Iterator<Item = &Reply> {
        self.outside_hours_reply
            .iter()
            .chain(&self.greeting)
            .chain(self.keyword_rules.iter().map(|rule| &rule.reply))
    }

    /// Whether any reply is configured.
    pub fn is_empty(&self) -> bool {
        self.outside_hours_reply.is_none()
            && self.greeting.is_none()
            && self.keyword_rules.is_empty()
    }

    /// The reply an inbound `body` arriving `at` earns, if any: a keyword rule first (in
    /// order), then the outside-hours reply (what a contact most needs to know), then the
    /// greeting when `first` (the conversation's first message).
    pub fn decide(
        &self,
        body: Option<&str>,
        at: DateTime<Utc>,
        first: bool,
    ) -> Option<(Trigger, &Reply)> {
        let text = body.unwrap_or_default().trim().to_lowercase();
        let keyword = self.keyword_rules.iter().find(|rule| {
            let keyword = rule.keyword.trim().to_lowercase();
            match rule.matching {
                KeywordMatch::Exact => text == keyword,
                KeywordMatch::Contains => text.contains(&keyword),
            }
        });
        if let Some(rule) = keyword {
            return Some((Trigger::Keyword, &rule.reply));
        }
        if let (Some(hours), Some(reply)) = (&self.business_hours, &self.outside_hours_reply) {
            if !hours.is_open(at) {
                return Some((Trigger::OutsideHours, reply));
            }
        }
        match (&self.greeting, first) {
            (Some(reply), true) => Some((Trigger::Greeting, reply)),
            _ => None,
        }
    }
}

impl Reply {
    fn validate(&self) -> Result<(), String> {
        match self {
            Reply::Body(body) if body.trim().is_empty() => Err("the reply is empty".into()),
            Reply::Body(body) if body.chars().count() > MAX_REPLY => {
                Err(format!("the reply is longer than {MAX_REPLY} characters"))
            }
            Reply::Body(_) => Ok(()),
            Reply::Template { template } if template.name.trim().is_empty() => {
                Err("template.name is empty".into())
            }
            Reply::Template { .. } => Ok(()),
        }
    }
}

impl BusinessHours {
    fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        jiff::tz::TimeZone::get(&self.timezone).map_err(|_| {
            format!(
                "business_hours.timezone: unknown time zone {:?}",
                self.timezone
            )
        })
    }

    /// Whether the centre is open at `at`: not a holiday there, and within one of that
    /// day's ranges. Settings that do not validate are never open.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let Ok(zone) = self.zone() else {
            return false;
        };
        let Ok(instant) = jiff::Timestamp::from_millisecond(at.timestamp_millis()) else {
            return false;
        };
        let local = instant.to_zoned(zone);
        let date = local.date();
        let Some(today) = NaiveDate::from_ymd_opt(
            i32::from(date.year()),
            u32::from(date.month().unsigned_abs()),
            u32::from(date.day().unsigned_abs()),
        ) else {
            return false;
        };
        if self.holidays.contains(&today) {
            return false;
        }
        let day = match local.weekday() {
            jiff::civil::Weekday::Monday => Day::Mon,
            jiff::civil::Weekday::Tuesday => Day::Tue,
            jiff::civil::Weekday::Wednesday => Day::Wed,
            jiff::civil::Weekday::Thursday => Day::Thu,
            jiff::civil::Weekday::Friday => Day::Fri,
            jiff::civil::Weekday::Saturday => Day::Sat,
            jiff::civil::Weekday::Sunday => Day::Sun,
        };
        let time = local.time();
        let Some(now) = NaiveTime::from_hms_opt(
            u32::from(time.hour().unsigned_abs()),
            u32::from(time.minute().unsigned_abs()),
            u32::from(time.second().unsigned_abs()),
        ) else {
            return false;
        };
        self.hours.get(&day).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|range| parse_range(range).is_ok_and(|(start, end)| start <= now && now < end))
        })
    }
}

fn day_name(day: Day) -> &'static str {
    match day {
        Day::Mon => "mon",
        Day::Tue => "tue",
        Day::Wed => "wed",
        Day::Thu => "thu",
        Day::Fri => "fri",
        Day::Sat => "sat",
        Day::Sun => "sun",
    }
}

/// `["08:00", "17:00"]`; `24:00` is the end of the day.
fn parse_range(range: &[String; 2]) -> Result<(NaiveTime, NaiveTime), String> {
    let time = |s: &str| {
        if s == "24:00" {
            return Ok(
                NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap_or(NaiveTime::MIN)
            );
        }
        NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("{s:?} is not HH:MM"))
    };
    Ok((time(&range[0])?, time(&range[1])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: serde_json::Value) -> AutoReplies {
        let s: AutoReplies = serde_json::from_value(value).unwrap();
        s.validate().unwrap();
        s
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn business_hours_are_read_in_the_centres_time_zone_with_holidays_closed() {
        let s = settings(json!({
            "business_hours": {"timezone": "America/Toronto",
                "hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "sat": [["10:00", "24:00"]]},
                "holidays": ["2026-12-28"]},
            "outside_hours_reply": "We are closed; for an emergency call 911."
        }));
        let hours = s.business_hours.as_ref().unwrap();
        // Monday 2026-12-07, Toronto is UTC-5 in winter.
        assert!(
            hours.is_open(utc("2026-12-07T13:00:00Z")),
            "08:00 local opens"
        );
        assert!(!hours.is_open(utc("2026-12-07T12:59:59Z")), "07:59 local");
        assert!(
            !hours.is_open(utc("2026-12-07T17:30:00Z")),
            "lunch, 12:30 local"
        );
        assert!(
            !hours.is_open(utc("2026-12-07T22:00:00Z")),
            "17:00 local closes"
        );
        assert!(
            !hours.is_open(utc("2026-12-08T15:00:00Z")),
            "Tuesday has no hours"
        );
        assert!(
            hours.is_open(utc("2026-12-13T04:59:00Z")),
            "Saturday 23:59 local, to 24:00"
        );
        // Summer time: UTC-4.
        assert!(
            hours.is_open(utc("2026-07-06T12:00:00Z")),
            "Monday 08:00 EDT"
        );
        // A Monday holiday (local date).
        assert!(!hours.is_open(utc("2026-12-28T15:00:00Z")));
        let closed = s.decide(Some("hello"), utc("2026-12-08T15:00:00Z"), false);
        assert_eq!(closed.map(|(t, _)| t), Some(Trigger::OutsideHours));
        assert_eq!(
            s.decide(Some("hello"), utc("2026-12-07T15:00:00Z"), true),
            None
        );
    }

    #[test]
    fn keywords_come_first_then_hours_then_the_greeting() {
        let s = settings(json!({
            "business_hours": {"timezone": "UTC", "hours": {"mon": [["00:00", "24:00"]]}},
            "outside_hours_reply": "closed",
            "greeting": {"template": {"name": "welcome", "language": "en", "variables": {}}},
            "keyword_rules": [
                {"match": "exact", "keyword": "ADDRESS", "reply": "12 Main St"},
                {"match": "contains", "keyword": "fire", "reply": "Call 911"}
            ]
        }));
        let monday = utc("2026-12-07T10:00:00Z");
        let sunday = utc("2026-12-06T10:00:00Z");
        let trigger =
            |body, at, first| s.decide(Some(body), at, first).map(|(t, r)| (t, r.clone()));
        assert_eq!(
            trigger("  address ", sunday, true),
            Some((Trigger::Keyword, Reply::Body("12 Main St".into())))
        );
        assert_eq!(
            trigger("my address?", monday, false),
            None,
            "exact means the whole body"
        );
        assert_eq!(
            trigger("There is a FIRE", monday, false),
            Some((Trigger::Keyword, Reply::Body("Call 911".into())))
        );
        assert_eq!(
            trigger("hi", sunday, true).map(|(t, _)| t),
            Some(Trigger::OutsideHours)
        );
        assert_eq!(
            trigger("hi", monday, true).map(|(t, _)| t),
            Some(Trigger::Greeting)
        );
        assert_eq!(trigger("hi", monday, false), None);
        assert_eq!(s.cooldown_minutes, 60, "the default cooldown");
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let refused =
            |value: serde_json::Value| match serde_json::from_value::<AutoReplies>(value.clone()) {
                Err(e) => e.to_string(),
                Ok(s) => s.validate().expect_err(&value.to_string()),
            };
        assert!(
            refused(json!({"business_hours": {"timezone": "Mars/Base", "hours": {}}}))
                .contains("timezone")
        );
        assert!(refused(
            json!({"business_hours": {"timezone": "UTC", "hours": {"mon": [["17:00", "08:00"]]}}})
        )
        .contains("hours.mon"));
        assert!(refused(
            json!({"business_hours": {"timezone": "UTC", "hours": {"mon": [["8am", "17:00"]]}}})
        )
        .contains("HH:MM"));
        assert!(
            refused(json!({"business_hours": {"timezone": "UTC", "hours": {"someday": []}}}))
                .contains("someday")
        );
        assert!(refused(json!({"outside_hours_reply": "closed"})).contains("business_hours"));
        assert!(refused(json!({"greeting": " "})).contains("greeting"));
        assert!(refused(
            json!({"keyword_rules": [{"match": "exact", "keyword": "", "reply": "x"}]})
        )
        .contains("keyword_rules[0]"));
        assert!(refused(
            json!({"keyword_rules": [{"match": "regex", "keyword": "a", "reply": "x"}]})
        )
        .contains("regex"));
        assert!(refused(json!({"cooldown_minutes": 20000})).contains("cooldown"));
        assert!(refused(json!({"colour": "red"})).contains("colour"));
        assert!(AutoReplies::default().is_empty());
    }
}
