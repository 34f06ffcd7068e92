//! Carrier-standard keywords a contact can text: opt out, opt back in, ask for help.

/// A keyword a contact sent as the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP and its synonyms: no more messages from this tenant.
    OptOut,
    /// START, YES, UNSTOP: messages may resume.
    OptIn,
    /// HELP: reply with the tenant's help text.
    Help,
}

impl Keyword {
    /// Recognises a keyword: the whole body, case-insensitive, surrounding blanks and
    /// punctuation ignored ("Stop." counts, "please stop calling" does not).
    pub fn detect(body: Option<&str>) -> Option<Keyword> {
        let word = body?
            .trim()
            .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace());
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE"
            | "OPTOUT" => Some(Keyword::OptOut),
            "START" | "YES" | "UNSTOP" => Some(Keyword::OptIn),
            "HELP" | "INFO" => Some(Keyword::Help),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_whole_message_keywords_only() {
        for w in [
            "STOP",
            "stop",
            " Stop. ",
            "STOPALL",
            "unsubscribe",
            "CANCEL",
            "end",
            "QUIT",
            "REVOKE",
            "OPTOUT",
        ] {
            assert_eq!(Keyword::detect(Some(w)), Some(Keyword::OptOut), "{w}");
        }
        for w in ["START", "yes", "UNSTOP"] {
            assert_eq!(Keyword::detect(Some(w)), Some(Keyword::OptIn), "{w}");
        }
        assert_eq!(Keyword::detect(Some("help")), Some(Keyword::Help));
        for w in ["please stop", "stopping", "", "yes please"] {
            assert_eq!(Keyword::detect(Some(w)), None, "{w}");
        }
        assert_eq!(Keyword::detect(None), None);
    }
}
