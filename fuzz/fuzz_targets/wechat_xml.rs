//! A WeChat POST body: the XML parser (no entity expansion) and the reply writer. Any body
//! gives a message or an error, never a panic, and a reply built from what was parsed is
//! itself parseable.
#![no_main]

use candle_serving::doctor::wechat::{parse, text_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = parse(body) {
        let content = message.content.unwrap_or_default();
        let reply = text_reply(&message.from_user, &message.to_user, &content, 1_700_000_000);
        let parsed = parse(&reply).expect("our own reply parses");
        assert_eq!(parsed.content.unwrap_or_default(), content);
    }
});
