//! The WeChat official-account protocol: signature checks, the clock check on a signed
//! request's timestamp, incoming XML messages, and XML text replies. Pure functions: the
//! replay memory and everything HTTP live elsewhere. XML is read with quick-xml, which
//! expands no entities of its own; a document type declaration (where entities would be
//! declared) is refused outright.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// `sha1(sorted(token, timestamp, nonce) joined)` in lower-case hex, as WeChat signs.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// Whether `given` is the signature of the request, compared in constant time.
pub fn verify(token: &str, timestamp: &str, nonce: &str, given: &str) -> bool {
    let expected = signature(token, timestamp, nonce);
    let given = given.to_ascii_lowercase();
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// How far a signed request's timestamp may be from the server's clock. WeChat signs with
/// the current time; the window bounds how long a captured request stays usable and how
/// long the replay memory must remember it.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("refused: the timestamp is not a whole number of seconds")]
    NotANumber,
    #[error("refused: the timestamp is {0} s old, more than the {1} s allowed (stale or replayed request)")]
    TooOld(u64, u64),
    #[error(
        "refused: the timestamp is {0} s ahead of the server's clock, more than the {1} s allowed"
    )]
    InTheFuture(u64, u64),
}

/// Whether `timestamp` (Unix seconds, as WeChat sends it) is within `max_skew` of `now`.
/// Only plain digits count as a number: `+17...` or ` 17...` would sign differently yet
/// name the same second.
pub fn check_clock(timestamp: &str, now: u64, max_skew: Duration) -> Result<(), ClockError> {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClockError::NotANumber);
    }
    let at: u64 = timestamp.parse().map_err(|_| ClockError::NotANumber)?;
    let max = max_skew.as_secs();
    if at < now && now - at > max {
        return Err(ClockError::TooOld(now - at, max));
    }
    if at > now && at - now > max {
        return Err(ClockError::InTheFuture(at - now, max));
    }
    Ok(())
}

/// An incoming message, as far as the doctor cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub to_user: String,
    pub from_user: String,
    pub msg_type: String,
    pub content: Option<String>,
    pub event: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("a document type declaration is not allowed")]
    Doctype,
    #[error("the message has no {0}")]
    Missing(&'static str),
}

/// Reads a message body. Unknown elements are ignored; a field given twice keeps the last.
/// Only XML's predefined entities and character references are understood.
pub fn parse(body: &str) -> Result<Incoming, XmlError> {
    let mut reader = Reader::from_str(body);
    let mut fields: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut current: Option<(String, String)> = None;
    let mut depth = 0usize;
    let malformed = |e: &dyn std::fmt::Display| XmlError::Malformed(e.to_string());
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                if depth > 8 {
                    return Err(XmlError::Malformed("nested too deeply".into()));
                }
                current = Some((e.name().as_ref().to_string(), String::new()));
            }
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                if let Some((name, value)) = current.take() {
                    fields.insert(name, value.trim().to_string());
                }
            }
            Ok(Event::Text(t)) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&t.xml10_content());
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let Some((_, value)) = current.as_mut() else {
                    continue;
                };
                if let Some(c) = r.resolve_char_ref().map_err(|e| malformed(&e))? {
                    value.push(c);
                    continue;
                }
                let name = r.into_inner();
                value.push(match name.as_ref() {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "apos" => '\'',
                    "quot" => '"',
                    other => {
                        return Err(XmlError::Malformed(format!("undeclared entity &{other};")))
                    }
                });
            }
            Ok(Event::CData(t)) => {
                if let Some((_, value)) = current.as_mut() {
                    value.push_str(&t.into_inner());
                }
            }
            Ok(Event::DocType(_)) => return Err(XmlError::Doctype),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(malformed(&e)),
        }
    }
    let mut take = |k: &'static str| fields.remove(k);
    Ok(Incoming {
        to_user: take("ToUserName").ok_or(XmlError::Missing("ToUserName"))?,
        from_user: take("FromUserName").ok_or(XmlError::Missing("FromUserName"))?,
        msg_type: take("MsgType").ok_or(XmlError::Missing("MsgType"))?,
        content: take("Content"),
        event: take("Event"),
    })
}

fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

/// A text reply to `to` from the account `from`.
pub fn text_reply(to: &str, from: &str, content: &str, now: u64) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime><MsgType>{}</MsgType><Content>{}</Content></xml>",
        cdata(to),
        cdata(from),
        cdata("text"),
        cdata(content)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_sort_the_parts_and_compare_exactly() {
        let s = signature("token", "1409304348", "xxxxxx");
        assert_eq!(s.len(), 40);
        assert_eq!(s, signature("token", "1409304348", "xxxxxx"));
        assert!(verify("token", "1409304348", "xxxxxx", &s));
        assert!(verify("token", "1409304348", "xxxxxx", &s.to_uppercase()));
        assert!(!verify("token", "1409304349", "xxxxxx", &s));
        assert!(!verify("token", "1409304348", "xxxxxx", &s[..39]));
        // sha1("1409304348" + "token" + "xxxxxx"), the sorted concatenation.
        let sorted = hex::encode(Sha1::digest(b"1409304348tokenxxxxxx"));
        assert_eq!(s, sorted);
    }

    #[test]
    fn timestamps_must_be_numbers_near_the_clock() {
        let now = 1_700_000_000;
        let skew = Duration::from_secs(300);
        assert_eq!(check_clock("1700000000", now, skew), Ok(()));
        assert_eq!(
            check_clock("1699999700", now, skew),
            Ok(()),
            "exactly the window"
        );
        assert_eq!(check_clock("1700000300", now, skew), Ok(()));
        assert_eq!(
            check_clock("1699999699", now, skew),
            Err(ClockError::TooOld(301, 300))
        );
        assert_eq!(
            check_clock("1700000301", now, skew),
            Err(ClockError::InTheFuture(301, 300))
        );
        for bad in [
            "",
            "abc",
            "+1700000000",
            " 1700000000",
            "-5",
            "1.5",
            "99999999999999999999999",
        ] {
            assert_eq!(
                check_clock(bad, now, skew),
                Err(ClockError::NotANumber),
                "{bad:?}"
            );
        }
        assert!(ClockError::TooOld(301, 300)
            .to_string()
            .contains("301 s old"));
    }

    #[test]
    fn reads_text_messages_and_events() {
        let m = parse("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o_user]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[头痛 &amp; 发烧]]></Content><MsgId>9</MsgId></xml>").unwrap();
        assert_eq!(
            (m.from_user.as_str(), m.msg_type.as_str()),
            ("o_user", "text")
        );
        assert_eq!(
            m.content.as_deref(),
            Some("头痛 &amp; 发烧"),
            "CDATA is taken literally"
        );
        let escaped = parse("<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><MsgType>text</MsgType><Content>x &lt; y</Content></xml>").unwrap();
        assert_eq!(escaped.content.as_deref(), Some("x < y"));
        let e = parse("<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><MsgType>event</MsgType><Event>subscribe</Event></xml>").unwrap();
        assert_eq!(e.event.as_deref(), Some("subscribe"));
    }

    #[test]
    fn refuses_entities_doctypes_and_incomplete_messages() {
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><MsgType>text</MsgType><Content>&xxe;</Content></xml>";
        assert_eq!(parse(xxe), Err(XmlError::Doctype));
        let undeclared = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><MsgType>text</MsgType><Content>&xxe;</Content></xml>";
        assert!(matches!(parse(undeclared), Err(XmlError::Malformed(_))));
        assert_eq!(
            parse("<xml><ToUserName>a</ToUserName><MsgType>text</MsgType></xml>"),
            Err(XmlError::Missing("FromUserName"))
        );
        assert!(matches!(
            parse("<xml><ToUserName>a"),
            Err(XmlError::Malformed(_)) | Err(XmlError::Missing(_))
        ));
    }

    #[test]
    fn replies_are_cdata_safe() {
        let r = text_reply("o_user", "gh_1", "a]]>b", 7);
        assert!(r.contains("<Content><![CDATA[a]]]]><![CDATA[>b]]></Content>"));
        let back = parse(&r).unwrap();
        assert_eq!(back.content.as_deref(), Some("a]]>b"));
        assert_eq!(back.to_user, "o_user");
    }
}
