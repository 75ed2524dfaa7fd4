//! Protobuf text format, read by `prost-reflect` over the descriptors of `proto/` (never a
//! hand-written parser), then converted into the prost message type.
//! It knows no message's meaning: callers validate what it returns.

use miette::Diagnostic;
use prost_reflect::DynamicMessage;

use crate::proto::DESCRIPTORS;

/// A text-format file that does not parse. Displays as `origin:line:column: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct SyntaxError {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses `text` as the message `full_name` (`tensorflow.serving.ModelServerConfig`).
/// `origin` names the text in errors (usually the file path).
pub fn parse<T: prost::Message + Default>(
    full_name: &str,
    text: &str,
    origin: &str,
) -> Result<T, SyntaxError> {
    let descriptor = DESCRIPTORS
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in proto/; this is a bug"));
    let dynamic = DynamicMessage::parse_text_format(descriptor, text).map_err(|e| {
        let offset = e
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(text.len(), |label| label.offset());
        let (line, column) = line_column(text, offset);
        SyntaxError {
            origin: origin.to_string(),
            line,
            column,
            message: e.to_string(),
        }
    })?;
    Ok(dynamic
        .transcode_to::<T>()
        .expect("a message parsed against the same descriptors transcodes; this is a bug"))
}

/// Formats a message as pretty text format (what a config file holds).
pub fn format<T: prost::Message>(full_name: &str, message: &T) -> String {
    let descriptor = DESCRIPTORS
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is in proto/; this is a bug"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message encoded by prost decodes against its own descriptor; this is a bug");
    dynamic
        .to_text_format_with_options(&prost_reflect::text_format::FormatOptions::new().pretty(true))
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
